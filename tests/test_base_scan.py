"""What the base scan finds in a root filesystem: the shared libraries in the loader's directories (for the
native-library check) and the glibc version read through libc.so.6's symlink (bullseye: -> libc-2.31.so)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from pyimage.base import BaseFacts, load_base, scan_base
from pyimage.cache import Cache
from pyimage.oci.model import Platform

HOST_LIBC = Path("/usr/lib/x86_64-linux-gnu/libc.so.6")


def _rootfs(path: Path, entries: list[tuple[str, str | bytes]]) -> Path:
    """A tar of ``entries``: (name, bytes) is a file, (name, "-> target") a symlink, (name, "=> target") a hard link."""
    with tarfile.open(path, "w") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if isinstance(content, str) and content.startswith("-> "):
                info.type, info.linkname = tarfile.SYMTYPE, content[3:]
                tar.addfile(info)
            elif isinstance(content, str) and content.startswith("=> "):
                info.type, info.linkname = tarfile.LNKTYPE, content[3:]
                tar.addfile(info)
            else:
                data = content if isinstance(content, bytes) else content.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _scan(rootfs: Path, cache: Cache) -> BaseFacts:
    image, _ = load_base(f"rootfs:{rootfs}", Platform("linux", "amd64"), cache)
    return scan_base(image, cache)


@pytest.fixture()
def host_libc() -> tuple[bytes, str]:
    """This machine's real libc and its version ("2.36")."""
    version = os.confstr("CS_GNU_LIBC_VERSION") or ""
    if not HOST_LIBC.is_file() or not version.startswith("glibc "):
        pytest.fail("needs a glibc host")
    return HOST_LIBC.resolve().read_bytes(), version.split()[1]


def test_libc_behind_a_symlink_is_read_through_it(tmp_path: Path, host_libc: tuple[bytes, str]) -> None:
    data, version = host_libc
    rootfs = _rootfs(tmp_path / "bullseye-like.tar", [
        ("./usr/lib/x86_64-linux-gnu/libc-2.31.so", data),
        ("./lib", "-> usr/lib"),
        ("./lib/x86_64-linux-gnu/libc.so.6", "-> libc-2.31.so"),  # through the merged-/usr directory link, too
        ("./usr/bin/python3.9", b"#!"),
    ])
    facts = _scan(rootfs, Cache(tmp_path / "cache"))
    assert (facts.libc, facts.libc_version, facts.machine) == ("glibc", version, "x86_64")
    assert facts.pythons == {"/usr/bin/python3.9": "3.9"}


def test_libc_by_hard_link_and_absolute_symlink(tmp_path: Path, host_libc: tuple[bytes, str]) -> None:
    data, version = host_libc
    hard = _rootfs(tmp_path / "hard.tar", [("lib/x86_64-linux-gnu/libc-2.31.so", data), ("lib/x86_64-linux-gnu/libc.so.6", "=> lib/x86_64-linux-gnu/libc-2.31.so")])
    assert _scan(hard, Cache(tmp_path / "c1")).libc_version == version
    absolute = _rootfs(tmp_path / "abs.tar", [("usr/lib/x86_64-linux-gnu/libc-2.31.so", data), ("usr/lib/x86_64-linux-gnu/libc.so.6", "-> /usr/lib/x86_64-linux-gnu/libc-2.31.so")])
    assert _scan(absolute, Cache(tmp_path / "c2")).libc_version == version


def test_a_libc_link_leaving_the_root_or_looping_finds_no_version(tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path / "hostile.tar", [
        ("lib/x86_64-linux-gnu/libc.so.6", "-> ../../../../../../usr/lib/x86_64-linux-gnu/libc.so.6"),  # `..` stops at the image's root
        ("a", "-> b"),
        ("b", "-> a"),
        ("usr/lib/libc.so.6", "-> /a/libc.so.6"),
    ])
    facts = _scan(rootfs, Cache(tmp_path / "cache"))
    assert facts.libc_version == ""  # the build then assumes the oldest glibc it supports


def test_libraries_are_the_names_in_the_loaders_directories(tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path / "libs.tar", [
        ("./usr/lib/x86_64-linux-gnu/libpq.so.5.15", b"elf"),
        ("./usr/lib/x86_64-linux-gnu/libpq.so.5", "-> libpq.so.5.15"),
        ("./usr/local/lib/libfoo.so.1", b"elf"),
        ("./lib64/ld-linux-x86-64.so.2", "-> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        ("./usr/lib/python3/dist-packages/_ext.cpython-311-x86_64-linux-gnu.so", b"elf"),  # not a loader directory
        ("./usr/share/doc/libbar.so.1", b"doc"),
        ("./usr/lib/x86_64-linux-gnu/libpq.so.5.15.txt/", b""),
    ])
    facts = _scan(rootfs, Cache(tmp_path / "cache"))
    assert facts.libraries == ("ld-linux-x86-64.so.2", "libfoo.so.1", "libpq.so.5", "libpq.so.5.15")
    again = _scan(rootfs, Cache(tmp_path / "cache"))  # from the scan record
    assert again == facts


def test_a_glibc_release_adding_no_symbol_version_reads_as_its_release(tmp_path: Path) -> None:
    """glibc 2.31 (bullseye) defines no GLIBC_2.31 symbol version: the newest is GLIBC_2.30; its banner is right."""
    libc = b"\x7fELF" + b"\0GLIBC_2.2.5\0GLIBC_2.30\0" + b"GNU C Library (Debian GLIBC 2.31-13+deb11u11) stable release version 2.31.\n\0"
    rootfs = _rootfs(tmp_path / "bullseye.tar", [("./lib/x86_64-linux-gnu/libc-2.31.so", libc), ("./lib/x86_64-linux-gnu/libc.so.6", "-> libc-2.31.so")])
    assert _scan(rootfs, Cache(tmp_path / "cache")).libc_version == "2.31"
    no_banner = _rootfs(tmp_path / "stripped.tar", [("./lib/x86_64-linux-gnu/libc.so.6", b"\x7fELF\0GLIBC_2.28\0GLIBC_2.17\0")])
    assert _scan(no_banner, Cache(tmp_path / "cache2")).libc_version == "2.28"  # else the newest symbol version


def test_libraries_in_directories_ld_so_conf_names_count_too(tmp_path: Path) -> None:
    """As CUDA base images add theirs: /etc/ld.so.conf includes ld.so.conf.d/*.conf, which names the directory."""
    rootfs = _rootfs(tmp_path / "cuda.tar", [
        ("./etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n"),
        ("./etc/ld.so.conf.d/000_cuda.conf", "# the CUDA runtime\n/usr/local/cuda/targets/x86_64-linux/lib\n"),
        ("./etc/ld.so.conf.d/x86_64-linux-gnu.conf", "/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n"),
        ("./usr/local/cuda", "-> cuda-12.4"),
        ("./usr/local/cuda-12.4/targets/x86_64-linux/lib/libcudart.so.12", b"elf"),
        ("./opt/vendor/lib/libvendor.so.3", b"elf"),  # named by no configuration: the loader does not look there
    ])
    facts = _scan(rootfs, Cache(tmp_path / "cache"))
    assert facts.libraries == ("libcudart.so.12",)


@pytest.mark.parametrize(
    ("first", "compress"),
    [
        ([("blobs/sha256/" + "a" * 64, b"layer"), ("index.json", "{}"), ("manifest.json", "[]")], False),  # docker save since Docker 25
        ([("b" * 64 + "/VERSION", "1.0"), ("b" * 64 + "/layer.tar", b""), ("manifest.json", "[]")], False),  # before
        ([("oci-layout", "{}"), ("index.json", "{}")], True),  # an OCI layout in a .tar.gz
    ],
)
def test_an_image_archive_given_as_rootfs_is_named_for_what_it_is(tmp_path: Path, first: list[tuple[str, str | bytes]], compress: bool) -> None:
    """New-user trial: `rootfs:` of a `docker save` tar said only "no Python interpreter found"."""
    from pyimage.errors import ConfigError

    archive = _rootfs(tmp_path / "image.tar", first)
    if compress:
        import gzip

        archive = tmp_path / "image.tar.gz"
        archive.write_bytes(gzip.compress((tmp_path / "image.tar").read_bytes()))
    cache = Cache(tmp_path / "cache")
    with pytest.raises(ConfigError, match=r"this is an image archive \(it holds (blobs/sha256|b{64}|oci-layout)[^)]*\), not a root filesystem tar") as err:
        load_base(f"rootfs:{archive}", Platform("linux", "amd64"), cache)
    assert err.value.hint.startswith(f'use base = "docker-archive:{archive}"')
    assert not [p for p in (cache.root / "blobs").rglob("*") if p.is_file()]  # refused before compressing


def test_a_rootfs_with_image_like_names_deeper_down_is_still_a_rootfs(tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path / "rootfs.tar", [("etc/os-release", "ID=debian\n"), ("srv/manifest.json", "[]"), ("usr/bin/python3.11", b"")])
    assert _scan(rootfs, Cache(tmp_path / "cache")).pythons == {"/usr/bin/python3.11": "3.11"}


def test_the_scan_made_while_a_rootfs_is_compressed_is_the_scan_of_its_blob(tmp_path: Path, host_libc: tuple[bytes, str]) -> None:
    """A rootfs tar is scanned from the file while it is compressed (``_ingest_rootfs``); the facts must be those
    a scan of the compressed blob finds."""
    from pyimage.base import SCAN

    data, _version = host_libc
    rootfs = _rootfs(tmp_path / "rootfs.tar", [
        ("usr/lib/x86_64-linux-gnu/libc.so.6", data), ("usr/lib/x86_64-linux-gnu/libz.so.1", b"z"), ("usr/bin/python3.11", b"py"),
        ("etc/passwd", "root:x:0:0::/root:/bin/sh\n"), ("bin", "-> usr/bin"), ("etc/ld.so.conf", "/opt/lib\n"), ("opt/lib/libx.so.2", b"x"),
    ])  # fmt: skip
    cache = Cache(tmp_path / "cache")
    image, _ = load_base(f"rootfs:{rootfs}", Platform("linux", "amd64"), cache)
    recorded = cache.get_meta(SCAN, image.layers[0].diff_id)
    assert recorded is not None  # recorded by the ingest, so scan_base reads nothing
    (meta,) = [p for p in (cache.root / "meta").iterdir() if p.name.startswith("scan")]
    meta.unlink()
    assert scan_base(image, cache) == recorded  # the compressed blob, inflated and read again
    assert recorded.libc == "glibc" and "libx.so.2" in recorded.libraries and recorded.pythons == {"/usr/bin/python3.11": "3.11"}


def test_a_base_layer_compressed_by_another_encoder_is_not_taken_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached rootfs blob is keyed by the exact encoder (``encoder_tag``), not by "gzip" alone: a cache written by
    another encoder or level (an older pyimage) must not hand its blob, with its other digest, to this build."""
    from pyimage.layers import compress

    rootfs = _rootfs(tmp_path / "rootfs.tar", [("usr/bin/python3.11", b"an interpreter " * 20_000), ("etc/passwd", "root:x:0:0::/root:/bin/sh\n")])
    platform = Platform("linux", "amd64")
    cache = Cache(tmp_path / "cache")
    before = load_base(f"rootfs:{rootfs}", platform, cache)[0].layers[0]
    assert load_base(f"rootfs:{rootfs}", platform, cache)[0].layers[0].cached

    monkeypatch.setattr(compress, "_GZIP_LEVEL", 6)  # another encoder setting: other bytes, another compression_id
    after = load_base(f"rootfs:{rootfs}", platform, cache)[0].layers[0]
    fresh = load_base(f"rootfs:{rootfs}", platform, Cache(tmp_path / "fresh"))[0].layers[0]
    assert not after.cached
    assert after.diff_id == before.diff_id and after.digest != before.digest
    assert after.digest == fresh.digest  # what a machine with an empty cache makes


def test_a_new_plain_rootfs_is_read_once_its_sha256_being_its_diff_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rootfs tar met for the first time is hashed while it is compressed (its sha256 is the layer's diff_id),
    not hashed first and compressed after; met again it is a cache hit, and a copy elsewhere gives the same layer."""
    import shutil

    from pyimage import base
    from pyimage.hashing import file_digest

    rootfs = _rootfs(tmp_path / "rootfs.tar", [("usr/bin/python3.11", b"an interpreter " * 20_000), ("etc/passwd", "root:x:0:0::/root:/bin/sh\n")])
    hashed: list[Path] = []
    monkeypatch.setattr(base, "file_digest", lambda path, *a: hashed.append(Path(path)) or file_digest(path, *a))
    platform = Platform("linux", "amd64")
    cache = Cache(tmp_path / "cache")
    first = load_base(f"rootfs:{rootfs}", platform, cache)[0].layers[0]
    assert hashed == [] and not first.cached
    assert first.diff_id == file_digest(rootfs)
    again = load_base(f"rootfs:{rootfs}", platform, cache)[0].layers[0]
    assert again.cached and (again.digest, again.diff_id) == (first.digest, first.diff_id)

    copy = tmp_path / "elsewhere" / "rootfs.tar"
    copy.parent.mkdir()
    shutil.copyfile(rootfs, copy)
    other = load_base(f"rootfs:{copy}", platform, cache)[0].layers[0]
    assert (other.digest, other.diff_id) == (first.digest, first.diff_id)
    assert hashed == []
