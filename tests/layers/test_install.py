"""Installing wheels straight into a tar stream, and compressing that stream into a layer blob.

Real wheels from PyPI (``six``: one module; ``wheel``: a console script) and small wheels made here, each with
exactly one interesting property (``.data`` directories, entry points, an escaping path, a wrong RECORD hash).
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import posixpath
import random
import tarfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard
from wheels_fixture import download_wheel, make_wheel, record_hash

from pyimage.cache import Cache
from pyimage.errors import BuildError
from pyimage.layers.build import LayerContext, build_layer
from pyimage.layers.compress import CHUNK_SIZE, GZIP_HEADER, BlobWriter, decompress_stream, media_type_for
from pyimage.layers.install import InstallPaths, install_wheel, wheel_file_map
from pyimage.layers.plan import LayerSpec
from pyimage.layers.tar import END_OF_ARCHIVE, Owner, TarWriter
from pyimage.wheels import read_wheel

SITE = "opt/venv/lib/python3.11/site-packages"
BIN = "opt/venv/bin"
PATHS = InstallPaths()


@dataclass
class Installed:
    """What one ``install_wheel`` wrote: the tar bytes, its members by name, and the writer's file map."""

    data: bytes
    members: dict[str, tarfile.TarInfo]
    contents: dict[str, bytes]
    files: dict[str, str]

    def record(self, dist_info: str) -> dict[str, tuple[str, str]]:
        text = self.contents[f"{SITE}/{dist_info}/RECORD"].decode()
        return {row[0]: (row[1], row[2]) for row in csv.reader(io.StringIO(text))}


def install(wheel: Path, paths: InstallPaths = PATHS, **writer_options: object) -> Installed:
    sink = io.BytesIO()
    tw = TarWriter(sink, **writer_options)  # type: ignore[arg-type]
    install_wheel(wheel, tw, paths)
    tw.finish()
    data = sink.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        contents = {m.name: tar.extractfile(m).read() for m in members.values() if m.isfile()}  # type: ignore[union-attr]
    return Installed(data, members, contents, dict(tw.files))


def sha256_b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


# -- a wheel with every kind of file -----------------------------------------------------------------------
DEMO_SCRIPT = b"#!python\nimport sys\nprint('tool', sys.argv)\n"
DEMO_SHELL = b"#!/bin/sh\necho plain\n"
DEMO_ENTRY_POINTS = """\
[console_scripts]
demo = demo.cli:main
demo-admin = demo.admin:run

[gui_scripts]
demo-gui = demo.gui:start
"""


@pytest.fixture(scope="module")
def demo_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_wheel(
        tmp_path_factory.mktemp("demo"),
        "demo",
        "1.0",
        {
            "demo/__init__.py": b"VERSION = '1.0'\n",
            "demo/cli.py": b"def main():\n    return 0\n",
            "demo-1.0.data/scripts/demo-tool": DEMO_SCRIPT,
            "demo-1.0.data/scripts/demo-shell": DEMO_SHELL,
            "demo-1.0.data/data/share/demo/schema.json": b"{}\n",
            "demo-1.0.data/headers/demo.h": b"#define DEMO 1\n",
            "demo-1.0.data/purelib/demo_extra.py": b"extra = True\n",
        },
        entry_points=DEMO_ENTRY_POINTS,
        executable=("demo-1.0.data/scripts/demo-shell",),
    )


# -- the same files as pypa/installer --------------------------------------------------------------------
def installed_by_installer(wheel: Path, root: Path) -> dict[str, tuple[bytes, bool]]:
    """pypa/installer's own ``install()`` of ``wheel`` onto disk under ``root``, with the venv's scheme paths:
    in-image path -> (bytes, executable)."""
    import os

    from installer import install as installer_install
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    with WheelFile.open(wheel) as source:
        schemes = {s: str(root / PATHS.scheme_dir(s, source.distribution).lstrip("/")) for s in ("purelib", "platlib", "scripts", "data", "headers")}
        destination = SchemeDictionaryDestination(schemes, interpreter=PATHS.interpreter, script_kind="posix")
        installer_install(source, destination, {"INSTALLER": b"pyimage\n"})
    out = {}
    for path in root.rglob("*"):
        if path.is_file():
            out[str(path.relative_to(root))] = (path.read_bytes(), bool(os.stat(path).st_mode & 0o111))
    return out


@pytest.mark.filterwarnings("ignore:Skip installing:RuntimeWarning")  # installer's, for numpy's one __pycache__ file
def test_a_wheel_installs_the_files_pypa_installer_installs(demo_wheel: Path, real_wheels: dict[str, Path], test_cache_dir: Path, tmp_path: Path) -> None:
    """pyimage walks a wheel itself (``_install``) with installer's rules: every file, its bytes, its mode and the
    RECORD rows must be what installer's own ``install()`` writes, for data schemes, scripts with and without a
    shebang to rewrite, console and GUI entry points, a root-is-purelib and a platlib wheel."""
    numpy = download_wheel("numpy==2.0.2", test_cache_dir / "wheels")
    for wheel in (demo_wheel, real_wheels["six"], real_wheels["wheel"], numpy):
        ours = install(wheel)
        theirs = installed_by_installer(wheel, tmp_path / wheel.name)
        assert set(ours.contents) == set(theirs), wheel.name
        for path, (data, executable) in theirs.items():
            if path.endswith(".dist-info/RECORD"):
                rows = lambda text: sorted(csv.reader(io.StringIO(text.decode())))  # noqa: E731
                assert rows(ours.contents[path]) == rows(data), path
                continue
            assert ours.contents[path] == data, path
            # a wheel's scripts are 0755 here whatever their zip mode says (``write_file``); elsewhere the zip's mode
            assert bool(ours.members[path].mode & 0o111) == (executable or path.startswith(BIN + "/")), path


# -- real wheels -------------------------------------------------------------------------------------------
def test_six_installs_into_the_venv_site_packages_with_its_exact_bytes(real_wheels: dict[str, Path]) -> None:
    installed = install(real_wheels["six"])

    with zipfile.ZipFile(real_wheels["six"]) as zf:
        assert installed.contents[f"{SITE}/six.py"] == zf.read("six.py")
    assert installed.members[f"{SITE}/six.py"].mode == 0o644
    assert f"{SITE}/six-1.17.0.dist-info/METADATA" in installed.contents
    assert {n.split("/")[0] for n in installed.members} == {"opt"}
    assert all(n.startswith(SITE) for n in installed.contents)


def test_console_script_goes_to_venv_bin_with_the_venv_shebang_and_mode_0755(real_wheels: dict[str, Path]) -> None:
    installed = install(real_wheels["wheel"])

    script = installed.contents[f"{BIN}/wheel"]
    assert script.startswith(b"#!/opt/venv/bin/python\n")
    assert b"from wheel._commands import main" in script
    assert installed.members[f"{BIN}/wheel"].mode == 0o755
    assert installed.members[BIN].isdir()


def test_installer_file_names_pyimage(real_wheels: dict[str, Path]) -> None:
    installed = install(real_wheels["six"])

    assert installed.contents[f"{SITE}/six-1.17.0.dist-info/INSTALLER"] == b"pyimage\n"


@pytest.mark.parametrize("which", ["six", "wheel", "demo"])
def test_record_is_rewritten_with_the_true_hash_and_size_of_every_installed_file(
    which: str, real_wheels: dict[str, Path], demo_wheel: Path
) -> None:
    wheel = demo_wheel if which == "demo" else real_wheels[which]
    dist_info = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/RECORD")).split("/")[0]
    installed = install(wheel)

    record = installed.record(dist_info)

    listed = set()
    for path, (digest, size) in record.items():
        in_image = posixpath.normpath(posixpath.join(SITE, path))
        listed.add(in_image)
        if path == f"{dist_info}/RECORD":
            assert (digest, size) == ("", "")
            continue
        data = installed.contents[in_image]
        assert digest == f"sha256={sha256_b64(data)}", path
        assert int(size) == len(data), path
    assert listed == set(installed.contents), "RECORD lists exactly the files installed"


def test_install_paths_follow_the_venv_and_python_version(real_wheels: dict[str, Path]) -> None:
    installed = install(real_wheels["wheel"], InstallPaths("/srv/env/", "3.12"))

    assert "srv/env/lib/python3.12/site-packages/wheel/__init__.py" in installed.contents
    assert installed.contents["srv/env/bin/wheel"].startswith(b"#!/srv/env/bin/python\n")


def test_install_reads_large_deflated_members_exactly(tmp_path: Path) -> None:
    blob = random.Random(0).randbytes(3 << 20) + bytes(1 << 20)  # > 1 MiB reads, some of it compressible
    wheel = make_wheel(tmp_path, "big", "1.0", {"big/__init__.py": b"", "big/blob.bin": blob})

    installed = install(wheel)

    assert installed.contents[f"{SITE}/big/blob.bin"] == blob


def test_install_reads_stored_members(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "flat", "1.0", {"flat.py": b"stored = True\n"})
    rewritten = tmp_path / "out" / wheel.name
    rewritten.parent.mkdir()
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(rewritten, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), zipfile.ZIP_STORED)

    assert install(rewritten).contents[f"{SITE}/flat.py"] == b"stored = True\n"


# -- .data and entry points --------------------------------------------------------------------------------
def test_data_scripts_python_shebang_is_rewritten_to_the_venv_interpreter(demo_wheel: Path) -> None:
    installed = install(demo_wheel)

    assert installed.contents[f"{BIN}/demo-tool"] == b"#!/opt/venv/bin/python\nimport sys\nprint('tool', sys.argv)\n"
    assert installed.members[f"{BIN}/demo-tool"].mode == 0o755


def test_data_scripts_with_another_shebang_are_copied_unchanged_and_executable(demo_wheel: Path) -> None:
    installed = install(demo_wheel)

    assert installed.contents[f"{BIN}/demo-shell"] == DEMO_SHELL
    assert installed.members[f"{BIN}/demo-shell"].mode == 0o755


def test_data_data_lands_in_the_venv_root(demo_wheel: Path) -> None:
    assert install(demo_wheel).contents["opt/venv/share/demo/schema.json"] == b"{}\n"


def test_data_headers_land_under_include_site_python_dist(demo_wheel: Path) -> None:
    assert install(demo_wheel).contents["opt/venv/include/site/python3.11/demo/demo.h"] == b"#define DEMO 1\n"


def test_data_purelib_lands_in_site_packages(demo_wheel: Path) -> None:
    assert install(demo_wheel).contents[f"{SITE}/demo_extra.py"] == b"extra = True\n"


def test_every_console_and_gui_entry_point_gets_a_venv_script(demo_wheel: Path) -> None:
    installed = install(demo_wheel)

    for name, module, attr in (("demo", "demo.cli", "main"), ("demo-admin", "demo.admin", "run"), ("demo-gui", "demo.gui", "start")):
        script = installed.contents[f"{BIN}/{name}"]
        assert script.startswith(b"#!/opt/venv/bin/python\n"), name
        assert f"from {module} import {attr}".encode() in script, name
        assert installed.members[f"{BIN}/{name}"].mode == 0o755


def test_record_points_at_scripts_data_and_headers_relative_to_site_packages(demo_wheel: Path) -> None:
    record = install(demo_wheel).record("demo-1.0.dist-info")

    assert "../../../bin/demo-tool" in record
    assert "../../../bin/demo" in record
    assert "../../../share/demo/schema.json" in record
    assert "../../../include/site/python3.11/demo/demo.h" in record
    assert record["../../../bin/demo-tool"][0] != record_hash(DEMO_SCRIPT)  # the rewritten bytes' hash


def test_owner_owns_the_venv_but_not_opt(real_wheels: dict[str, Path]) -> None:
    installed = install(real_wheels["wheel"], owner=Owner(1000, 1000), owned_root="opt/venv", mtime=42)

    assert (installed.members["opt"].uid, installed.members["opt"].gid) == (0, 0)
    assert {(m.uid, m.gid, m.mtime) for n, m in installed.members.items() if n != "opt"} == {(1000, 1000, 42)}


# -- malformed and malicious wheels ------------------------------------------------------------------------
ESCAPES = {
    "parent": "../../etc/passwd",
    "absolute": "/abs/path",
    "backslash-absolute": "\\etc\\passwd",
    "inner-parent": "demo/../../evil.py",
    "data-parent": "demo-1.0.data/data/../../../evil",
    "data-scheme-parent": "demo-1.0.data/data/../x",
}


@pytest.mark.parametrize("evil", list(ESCAPES.values()), ids=list(ESCAPES))
def test_a_path_that_escapes_the_install_root_is_a_build_error(evil: str, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, files={"demo/__init__.py": b"", evil: b"root::0:0::/root:/bin/sh\n"})
    tw = TarWriter(io.BytesIO())

    with pytest.raises(BuildError) as err:
        install_wheel(wheel, tw, PATHS)

    assert wheel.name in err.value.message
    assert err.value.hint
    assert all(path.startswith("opt/venv/") for path in tw.files), tw.files


@pytest.mark.parametrize("evil", ["../../etc/passwd", "/abs/path"])
def test_a_malicious_wheel_commits_no_layer_blob(evil: str, tmp_path: Path) -> None:
    wheel_path = make_wheel(
        tmp_path / "wheels", files={"demo/__init__.py": b"", evil: b"x"}, entry_points="[console_scripts]\ndemo = demo:main\n"
    )
    cache = Cache(tmp_path / "cache")
    spec = LayerSpec("heavy:demo", "heavy", (read_wheel(wheel_path),))

    with pytest.raises(BuildError):
        build_layer(spec, LayerContext(cache, PATHS))

    assert list((cache.root / "blobs" / "sha256").iterdir()) == []
    assert list((cache.root / "layers").iterdir()) == []
    assert list((cache.root / "tmp").iterdir()) == []


def test_a_wheel_with_unnormalized_member_names_installs_like_its_normalized_names(tmp_path: Path) -> None:
    files = {
        "./demo/__init__.py": b"ok = 1\n",
        "./demo-1.0.data/data/etc/demo.cfg": b"[x]\n",
        "./demo-1.0.data/scripts/demo-tool": DEMO_SCRIPT,
    }
    wheel = make_wheel(tmp_path, files=files)
    done: list[Installed] = []
    worker = threading.Thread(target=lambda: done.append(install(wheel)), daemon=True)

    worker.start()
    worker.join(timeout=20)

    assert done, "install_wheel hung on a './'-prefixed .data member (installer's scheme lookup never ends)"
    installed = done[0]

    assert installed.contents[f"{SITE}/demo/__init__.py"] == b"ok = 1\n"
    assert installed.contents["opt/venv/etc/demo.cfg"] == b"[x]\n"
    assert installed.contents[f"{BIN}/demo-tool"].startswith(b"#!/opt/venv/bin/python\n")
    predicted = {p for p in wheel_file_map(wheel, PATHS) if not p.endswith("/RECORD")}
    assert predicted == {p for p in installed.contents if not p.endswith(("/RECORD", "/INSTALLER"))}


@pytest.mark.parametrize(
    "tampered",
    ["demo/__init__.py", "demo-1.0.data/scripts/demo-tool", "demo-1.0.data/data/share/demo.txt", "demo-1.0.dist-info/METADATA"],
)
def test_a_file_that_does_not_match_its_record_hash_is_a_build_error_naming_record(tampered: str, tmp_path: Path) -> None:
    files = {
        "demo/__init__.py": b"good = True\n",
        "demo-1.0.data/scripts/demo-tool": DEMO_SCRIPT,
        "demo-1.0.data/data/share/demo.txt": b"data\n",
    }
    wheel = make_wheel(tmp_path, files=files, tamper={tampered: b"evil = True\n"})

    with pytest.raises(BuildError, match="RECORD") as err:
        install_wheel(wheel, TarWriter(io.BytesIO()), PATHS)

    assert posixpath.basename(tampered) in err.value.message
    assert wheel.name in err.value.message


def test_a_zip_that_is_not_a_wheel_is_a_build_error(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("demo/__init__.py", b"")

    with pytest.raises(BuildError, match=path.name):
        install_wheel(path, TarWriter(io.BytesIO()), PATHS)


# -- wheel_file_map ----------------------------------------------------------------------------------------
def _b64_to_hex(record_digest: str) -> str:
    algo, _, b64 = record_digest.partition("=")
    assert algo == "sha256"
    return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()


@pytest.mark.parametrize("which", ["six", "wheel", "demo"])
def test_wheel_file_map_matches_what_install_writes(which: str, real_wheels: dict[str, Path], demo_wheel: Path) -> None:
    wheel = demo_wheel if which == "demo" else real_wheels[which]
    installed = install(wheel)

    predicted = wheel_file_map(wheel, PATHS)

    def interesting(paths: set[str]) -> set[str]:
        return {p for p in paths if not p.endswith(("/RECORD", "/INSTALLER", ".pyc"))}

    assert interesting(set(predicted)) == interesting(set(installed.contents))
    for path, digest in predicted.items():
        if not digest or path.endswith("/RECORD"):
            continue
        if path.startswith(BIN + "/") and installed.contents[path].startswith(b"#!/opt/venv/bin/python"):
            continue  # a rewritten #!python shebang: the map keeps RECORD's hash of the original
        assert _b64_to_hex(digest) == installed.files[path], path


def test_wheel_file_map_reveals_two_wheels_that_write_the_same_file(tmp_path: Path) -> None:
    one = make_wheel(tmp_path / "a", "alpha", "1.0", {"shared/config.py": b"owner = 'alpha'\n", "alpha.py": b""})
    two = make_wheel(tmp_path / "b", "beta", "2.0", {"shared/config.py": b"owner = 'beta'\n", "beta.py": b""})

    first, second = wheel_file_map(one, PATHS), wheel_file_map(two, PATHS)

    clash = f"{SITE}/shared/config.py"
    assert set(first) & set(second) == {clash}
    assert first[clash] == record_hash(b"owner = 'alpha'\n")
    assert second[clash] == record_hash(b"owner = 'beta'\n")


def test_wheel_file_map_rejects_an_escaping_path_before_any_layer_work(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, files={"../../etc/passwd": b""})

    with pytest.raises(BuildError, match="escapes"):
        wheel_file_map(wheel, PATHS)


# -- compression -------------------------------------------------------------------------------------------
class Tee:
    """A sink that writes to a BlobWriter and keeps a copy of the raw tar bytes."""

    def __init__(self, blob: BlobWriter) -> None:
        self.blob, self.raw = blob, io.BytesIO()

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        return self.blob.write(data)


def layer_blob(wheels: list[Path], path: Path, kind: str) -> tuple[bytes, bytes, object]:
    """Installs ``wheels`` into one tar streamed into a ``kind`` blob at ``path``: (tar bytes, blob bytes, result)."""
    blob = BlobWriter(path, kind)
    tee = Tee(blob)
    tw = TarWriter(tee)
    for wheel in wheels:
        install_wheel(wheel, tw, PATHS)
    tw.finish()
    result = blob.close()
    return tee.raw.getvalue(), path.read_bytes(), result


def zstd_decompress(data: bytes) -> bytes:
    """Every frame of ``data`` (a blob is one frame per chunk)."""
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_blob_decompresses_to_exactly_the_tar_bytes_and_names_both_digests(
    kind: str, real_wheels: dict[str, Path], tmp_path: Path
) -> None:
    tar_bytes, blob, result = layer_blob([real_wheels["six"], real_wheels["wheel"]], tmp_path / "blob", kind)

    assert (gzip.decompress(blob) if kind == "gzip" else zstd_decompress(blob)) == tar_bytes
    assert result.diff_id == "sha256:" + hashlib.sha256(tar_bytes).hexdigest()  # type: ignore[attr-defined]
    assert result.digest == "sha256:" + hashlib.sha256(blob).hexdigest()  # type: ignore[attr-defined]
    assert (result.size, result.uncompressed_size) == (len(blob), len(tar_bytes))  # type: ignore[attr-defined]
    assert b"".join(decompress_stream(tmp_path / "blob", media_type_for(kind))) == tar_bytes


def test_gzip_header_has_mtime_zero_and_no_file_name(real_wheels: dict[str, Path], tmp_path: Path) -> None:
    _, blob, _ = layer_blob([real_wheels["six"]], tmp_path / "layer.tar.gz", "gzip")

    assert blob[:10] == GZIP_HEADER
    assert blob[:3] == b"\x1f\x8b\x08"
    assert blob[3] & 0x08 == 0, "FNAME flag set"
    assert blob[3] == 0, "no optional gzip fields at all"
    assert blob[4:8] == b"\0\0\0\0", "MTIME is not zero"
    with gzip.GzipFile(fileobj=io.BytesIO(blob)) as gz:
        gz.read()
        assert gz.mtime == 0


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_same_wheel_twice_gives_the_same_digest(kind: str, real_wheels: dict[str, Path], tmp_path: Path) -> None:
    first = layer_blob([real_wheels["wheel"]], tmp_path / "one", kind)
    second = layer_blob([real_wheels["wheel"]], tmp_path / "two", kind)

    assert first[1] == second[1]
    assert first[2] == second[2]


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_large_tar_streams_through_the_blob_writer_intact(kind: str, tmp_path: Path) -> None:
    payload = random.Random(1).randbytes(2 * CHUNK_SIZE + 12345)  # three chunks, the last one partial
    blob = BlobWriter(tmp_path / "blob", kind)
    tar = io.BytesIO()
    tw = TarWriter(tar)
    tw.add_bytes("opt/venv/big.bin", payload)
    tw.finish()
    tar_bytes = tar.getvalue()
    for i in range(0, len(tar_bytes), 300_000):  # uneven writes
        blob.write(tar_bytes[i : i + 300_000])
    result = blob.close()

    data = (tmp_path / "blob").read_bytes()
    assert (gzip.decompress(data) if kind == "gzip" else zstd_decompress(data)) == tar_bytes
    assert result.diff_id == "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_blobs_of_fragments_concatenate_into_one_stream(kind: str, real_wheels: dict[str, Path], tmp_path: Path) -> None:
    parts = []
    for i, name in enumerate(["six", "wheel"]):
        blob = BlobWriter(tmp_path / f"part{i}", kind)
        tee = Tee(blob)
        install_wheel(real_wheels[name], TarWriter(tee), PATHS)  # a fragment: no end-of-archive
        blob.close()
        parts.append(((tmp_path / f"part{i}").read_bytes(), tee.raw.getvalue()))
    joined = tmp_path / "joined"
    joined.write_bytes(b"".join(p[0] for p in parts))

    tar_bytes = b"".join(decompress_stream(joined, media_type_for(kind)))

    assert tar_bytes == b"".join(p[1] for p in parts)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes + END_OF_ARCHIVE)) as tar:
        names = tar.getnames()
    assert f"{SITE}/six.py" in names and f"{BIN}/wheel" in names


def test_an_empty_blob_is_a_valid_empty_stream(tmp_path: Path) -> None:
    result = BlobWriter(tmp_path / "empty.gz", "gzip").close()

    assert gzip.decompress((tmp_path / "empty.gz").read_bytes()) == b""
    assert result.diff_id == "sha256:" + hashlib.sha256(b"").hexdigest()


def test_dist_info_filenames_are_installers_own(tmp_path: Path) -> None:
    """``_Wheel.dist_info_filenames`` is worked out once, by prefix: it must list what installer's property does,
    odd member names included."""
    import zipfile

    from installer.sources import WheelFile

    from pyimage.layers.install import _Wheel

    wheel = make_wheel(tmp_path / "w", "odd", "1.0", {"odd/__init__.py": b"", "odd-1.0.dist-info/extra.txt": b"x", "odd-1.0.dist-info/sub/deep.txt": b"y"})
    with zipfile.ZipFile(wheel, "a") as zf:
        for name in ("./odd-1.0.dist-info/dotted.txt", "odd-1.0.dist-info//double.txt", "odd-1.0.dist-info", "odd-1.0.dist-infox/near.txt", "odd-1.0.dist-info/dir/"):
            zf.writestr(name, b"z")
    for path in [wheel, *sorted(Path("/opt/wheels").glob("*.whl"))[:3]]:
        with zipfile.ZipFile(path) as zf:
            assert _Wheel(zf).dist_info_filenames == WheelFile(zf).dist_info_filenames, path.name
