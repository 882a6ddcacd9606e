"""Deterministic tar streams: same entries, same bytes; normalized headers; parents first; safe paths."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from pyimage.errors import BuildError
from pyimage.layers.tar import END_OF_ARCHIVE, Owner, TarWriter, safe_member_path

USTAR_UNAME = slice(265, 297)
USTAR_GNAME = slice(297, 329)


def write(fill, **kwargs) -> bytes:  # type: ignore[no-untyped-def]
    sink = io.BytesIO()
    tw = TarWriter(sink, **kwargs)
    fill(tw)
    tw.finish()
    return sink.getvalue()


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def headers(data: bytes) -> list[bytes]:
    """The raw 512-byte header blocks of a tar without PAX records (every entry here is short)."""
    out, pos = [], 0
    while data[pos : pos + 512] != b"\0" * 512:
        block = data[pos : pos + 512]
        out.append(block)
        size = int(block[124:136].rstrip(b"\0 ") or b"0", 8)
        pos += 512 + -(-size // 512) * 512
    return out


def sample(tw: TarWriter) -> None:
    tw.add_dir("opt/venv/bin")
    tw.add_bytes("opt/venv/lib/python3.11/site-packages/six.py", b"print('six')\n")
    tw.add_bytes("opt/venv/bin/tool", b"#!/opt/venv/bin/python\n", executable=True)
    tw.add_symlink("opt/venv/bin/python", "/usr/bin/python3")


# -- determinism and headers -------------------------------------------------------------------------------
def test_same_entries_twice_give_identical_bytes() -> None:
    first = write(sample, mtime=1700000000, owner=Owner(1000, 1000), owned_root="opt/venv")
    second = write(sample, mtime=1700000000, owner=Owner(1000, 1000), owned_root="opt/venv")

    assert first == second
    assert len(first) % 512 == 0


def test_output_depends_on_mtime_and_owner() -> None:
    base = write(sample, mtime=0)

    assert write(sample, mtime=1) != base
    assert write(sample, owner=Owner(1, 1)) != base


def test_every_header_has_the_given_mtime_and_owner_and_no_user_or_group_name() -> None:
    data = write(sample, mtime=1234567890, owner=Owner(1000, 2000))

    for info in members(data):
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (1234567890, 1000, 2000, "", ""), info.name
    for block in headers(data):
        assert block[USTAR_UNAME] == b"\0" * 32
        assert block[USTAR_GNAME] == b"\0" * 32


def test_files_are_0644_executables_and_directories_0755_symlinks_0777() -> None:
    modes = {(m.name, m.type): m.mode for m in members(write(sample))}

    assert modes[("opt/venv/lib/python3.11/site-packages/six.py", tarfile.REGTYPE)] == 0o644
    assert modes[("opt/venv/bin/tool", tarfile.REGTYPE)] == 0o755
    assert modes[("opt/venv/bin", tarfile.DIRTYPE)] == 0o755
    assert modes[("opt/venv/bin/python", tarfile.SYMTYPE)] == 0o777


def test_symlink_keeps_its_target() -> None:
    (link,) = [m for m in members(write(sample)) if m.issym()]

    assert (link.name, link.linkname, link.size) == ("opt/venv/bin/python", "/usr/bin/python3", 0)


def test_gnu_tar_lists_numeric_owner_and_fixed_time() -> None:
    data = write(sample, mtime=0, owner=Owner(1000, 1000))

    listing = subprocess.run(
        ["tar", "--numeric-owner", "--utc", "-tvf", "-"], input=data, capture_output=True, check=True
    ).stdout.decode()

    assert "1000/1000" in listing
    assert "1970-01-01 00:00" in listing
    assert "opt/venv/bin/python -> /usr/bin/python3" in listing


# -- parents -----------------------------------------------------------------------------------------------
def test_parents_are_written_before_their_children_exactly_once() -> None:
    def fill(tw: TarWriter) -> None:
        tw.add_bytes("opt/venv/lib/a/x.py", b"x")
        tw.add_bytes("opt/venv/lib/a/y.py", b"y")
        tw.add_dir("opt/venv/lib/a")  # already there: no second entry
        tw.add_bytes("opt/venv/lib/b/z.py", b"z")
        tw.add_dir("opt/venv/share/")

    names = [m.name for m in members(write(fill))]

    assert names == [
        "opt",
        "opt/venv",
        "opt/venv/lib",
        "opt/venv/lib/a",
        "opt/venv/lib/a/x.py",
        "opt/venv/lib/a/y.py",
        "opt/venv/lib/b",
        "opt/venv/lib/b/z.py",
        "opt/venv/share",
    ]
    assert len(names) == len(set(names))


def test_leading_slashes_are_dropped_from_member_names() -> None:
    names = [m.name for m in members(write(lambda tw: tw.add_bytes("/srv/app.py", b"")))]

    assert names == ["srv", "srv/app.py"]


def test_directories_above_owned_root_belong_to_root() -> None:
    data = write(sample, owner=Owner(1000, 1000), owned_root="/opt/venv/")

    owners = {m.name: (m.uid, m.gid) for m in members(data)}

    assert owners["opt"] == (0, 0)
    assert owners["opt/venv"] == (1000, 1000)
    assert owners["opt/venv/bin"] == (1000, 1000)
    assert owners["opt/venv/bin/tool"] == (1000, 1000)
    assert owners["opt/venv/lib/python3.11/site-packages/six.py"] == (1000, 1000)


def test_paths_outside_owned_root_and_its_lookalikes_belong_to_root() -> None:
    def fill(tw: TarWriter) -> None:
        tw.add_bytes("opt/venv2/x", b"")
        tw.add_bytes("etc/passwd", b"")
        tw.add_bytes("opt/venv/y", b"")

    owners = {m.name: m.uid for m in members(write(fill, owner=Owner(1000), owned_root="opt/venv"))}

    assert owners == {"opt": 0, "opt/venv2": 0, "opt/venv2/x": 0, "etc": 0, "etc/passwd": 0, "opt/venv": 1000, "opt/venv/y": 1000}


def test_without_owned_root_the_owner_owns_everything() -> None:
    assert {m.uid for m in members(write(sample, owner=Owner(7, 8)))} == {7}


def test_owner_parses_uid_and_optional_gid() -> None:
    assert Owner.parse("1000") == Owner(1000, 1000)
    assert Owner.parse("1000:100") == Owner(1000, 100)
    assert str(Owner(1000, 100)) == "1000:100"


# -- contents ----------------------------------------------------------------------------------------------
def test_add_file_copies_exactly_size_bytes_and_returns_their_sha256() -> None:
    payload = bytes(range(256)) * 5000 + b"tail"  # 1.28 MB: more than one COPY_CHUNK, not a multiple of 512
    sink = io.BytesIO()
    tw = TarWriter(sink)

    digest = tw.add_file("data/blob.bin", io.BytesIO(payload), len(payload))
    tw.finish()

    assert digest == hashlib.sha256(payload).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(sink.getvalue())) as tar:
        assert tar.extractfile("data/blob.bin").read() == payload  # type: ignore[union-attr]
    assert "data/blob.bin" in tw.files


def test_a_stream_shorter_than_its_size_is_a_build_error() -> None:
    tw = TarWriter(io.BytesIO())

    with pytest.raises(BuildError, match="ended 3 bytes early"):
        tw.add_file("a.txt", io.BytesIO(b"12345"), 8)


def test_a_stream_longer_than_its_size_is_a_build_error() -> None:
    tw = TarWriter(io.BytesIO())

    with pytest.raises(BuildError, match="more data than its recorded size"):
        tw.add_file("a.txt", io.BytesIO(b"12345"), 4)


def test_finish_ends_the_archive_with_two_zero_blocks() -> None:
    data = write(lambda tw: tw.add_bytes("a", b"a"))

    assert data.endswith(END_OF_ARCHIVE)
    assert END_OF_ARCHIVE == b"\0" * 1024
    assert len(data) == 512 * 2 + 1024  # header, one padded data block, end of archive


def test_captured_sources_are_the_py_files_written() -> None:
    sink = io.BytesIO()
    tw = TarWriter(sink, capture_sources=True)
    tw.add_bytes("pkg/mod.py", b"x = 1\n")
    tw.add_bytes("pkg/data.txt", b"no")

    assert tw.sources == [("pkg/mod.py", b"x = 1\n")]


# -- safe paths --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    ["../x", "a/../../x", "..", "/etc/passwd", "//etc/passwd", "C:\\x", "c:/x", "\\etc\\passwd", "a\\..\\..\\x", "", "a\0b"],
)
def test_safe_member_path_rejects_climbing_absolute_and_malformed_paths(path: str) -> None:
    with pytest.raises(BuildError) as err:
        safe_member_path(path, where="evil-1.0-py3-none-any.whl")

    assert err.value.message.startswith("evil-1.0-py3-none-any.whl: ")
    assert err.value.hint


@pytest.mark.parametrize(
    "path, expected",
    [("a/b.py", "a/b.py"), ("a/./b", "a/b"), ("a//b", "a/b"), ("a/x/../b", "a/b"), ("a\\b", "a/b"), ("..a/b", "..a/b")],
)
def test_safe_member_path_normalizes_paths_that_stay_inside(path: str, expected: str) -> None:
    assert safe_member_path(path, where="w") == expected


# -- long paths and fragments ------------------------------------------------------------------------------
def test_long_paths_round_trip_through_tarfile() -> None:
    long_dir = "opt/venv/lib/python3.11/site-packages/" + "/".join(["a_rather_long_directory_name"] * 6)
    long_file = long_dir + "/" + "m" * 120 + ".py"
    long_target = "../" * 40 + "target"
    assert len(long_file) > 255

    def fill(tw: TarWriter) -> None:
        tw.add_bytes(long_file, b"long = True\n")
        tw.add_symlink(long_dir + "/link", long_target)

    data = write(fill, mtime=5, owner=Owner(1000, 1000))
    assert data == write(fill, mtime=5, owner=Owner(1000, 1000))

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        by_name = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile(long_file).read() == b"long = True\n"  # type: ignore[union-attr]
        assert by_name[long_dir + "/link"].linkname == long_target
        assert by_name[long_file].mtime == 5 and by_name[long_file].uid == 1000
        assert by_name[long_dir].isdir()


def test_non_ascii_names_round_trip() -> None:
    data = write(lambda tw: tw.add_bytes("données/été.txt", b"ok"))

    assert [m.name for m in members(data)] == ["données", "données/été.txt"]


def test_fragments_without_finish_concatenate_into_one_archive() -> None:
    fragments = []
    for name, body in (("alpha", b"a" * 700), ("beta", b"b" * 10), ("gamma", b"")):
        sink = io.BytesIO()
        tw = TarWriter(sink, mtime=0, owner=Owner(1000, 1000), owned_root="opt/venv")
        tw.add_bytes(f"opt/venv/lib/{name}/__init__.py", body)
        fragments.append(sink.getvalue())  # no finish(): no end-of-archive blocks
        assert not sink.getvalue().endswith(END_OF_ARCHIVE)

    data = b"".join(fragments) + END_OF_ARCHIVE

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert files == {
        "opt/venv/lib/alpha/__init__.py": b"a" * 700,
        "opt/venv/lib/beta/__init__.py": b"b" * 10,
        "opt/venv/lib/gamma/__init__.py": b"",
    }
    listing = subprocess.run(["tar", "-tf", "-"], input=data, capture_output=True, check=True).stdout.decode()
    assert listing.splitlines()[-1] == "opt/venv/lib/gamma/__init__.py"


def test_tar_extracts_to_the_expected_tree(tmp_path: Path) -> None:
    data = write(sample)
    (tmp_path / "layer.tar").write_bytes(data)

    subprocess.run(["tar", "-xf", "layer.tar", "--no-same-owner"], cwd=tmp_path, check=True)

    assert (tmp_path / "opt/venv/lib/python3.11/site-packages/six.py").read_bytes() == b"print('six')\n"
    assert (tmp_path / "opt/venv/bin/tool").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize(
    "name,kind,size,mode,mtime,uid,gid,link",
    [
        ("opt/venv/lib/python3.11/site-packages/x.py", tarfile.REGTYPE, 1234, 0o644, 0, 0, 0, ""),
        ("opt/venv/bin/", tarfile.DIRTYPE, 0, 0o755, 1700000000, 1000, 1000, ""),
        ("opt/venv/bin/python", tarfile.SYMTYPE, 0, 0o777, 0, 0, 0, "/usr/bin/python3.11"),
        ("a" * 100, tarfile.REGTYPE, 8**11 - 1, 0o755, 0, 65534, 65534, ""),
    ],
)
def test_fast_ustar_header_is_byte_identical_to_tarfiles(name: str, kind: bytes, size: int, mode: int, mtime: int, uid: int, gid: int, link: str) -> None:
    from pyimage.layers.tar import _ustar_header

    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime, info.uid, info.gid = kind, size, mode, mtime, uid, gid
    info.uname = info.gname = ""
    info.linkname = link
    assert _ustar_header(name, kind, size, mode, mtime, uid, gid, link) == info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def test_fast_header_leaves_long_and_non_ascii_names_to_the_pax_path() -> None:
    from pyimage.layers.tar import _ustar_header

    assert _ustar_header("a" * 101, tarfile.REGTYPE, 1, 0o644, 0, 0, 0, "") is None
    assert _ustar_header("caf\u00e9.py", tarfile.REGTYPE, 1, 0o644, 0, 0, 0, "") is None
    assert _ustar_header("big", tarfile.REGTYPE, 8**11, 0o644, 0, 0, 0, "") is None


@pytest.mark.parametrize("path", [".", "demo/..", "./", "a/b/../.."])
def test_paths_that_name_the_install_root_itself_are_refused(path: str) -> None:
    with pytest.raises(BuildError):
        safe_member_path(path, where="demo.whl")
