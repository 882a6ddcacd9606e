"""The ELF dynamic-section reader against binutils' readelf on this machine's own libraries, on files of each ELF
class and byte order, and on damaged input (which reads as "not ELF", never an exception)."""

from __future__ import annotations

import io
import random
import re
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from pyimage.layers.elf import DynamicInfo, read_dynamic
from support.elffiles import make_elf

LIBDIR = Path("/usr/lib/x86_64-linux-gnu")


def _readelf(path: Path) -> tuple[tuple[str, ...], str]:
    out = subprocess.run(["readelf", "-d", "-W", str(path)], capture_output=True, text=True, check=True).stdout
    needed = tuple(dict.fromkeys(re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", out)))
    soname = (re.findall(r"\(SONAME\)\s+Library soname: \[(.*)\]", out) or [""])[0]
    return needed, soname


def _read(path: Path) -> DynamicInfo | None:
    with open(path, "rb") as f:
        return read_dynamic(f, path.stat().st_size)


def _host_libraries(limit: int = 60) -> list[Path]:
    found = sorted(p for p in LIBDIR.glob("lib*.so.*") if p.is_file() and not p.is_symlink())
    return found[:limit]


@pytest.fixture(scope="module", autouse=True)
def _readelf_here() -> None:
    if shutil.which("readelf") is None:
        pytest.fail("needs binutils' readelf (apt-get install binutils)")


def test_reads_what_readelf_reads_on_this_machines_libraries() -> None:
    libraries = _host_libraries()
    assert len(libraries) >= 20
    for path in libraries:
        info = _read(path)
        assert info is not None, path
        assert (info.needed, info.soname) == _readelf(path), path
        assert info.machine == 62


@pytest.mark.parametrize("is64", [True, False], ids=["64-bit", "32-bit"])
@pytest.mark.parametrize("big", [False, True], ids=["little-endian", "big-endian"])
def test_reads_each_elf_class_and_byte_order_as_readelf_does(is64: bool, big: bool, tmp_path: Path) -> None:
    path = tmp_path / "libdemo.so.1"
    path.write_bytes(make_elf(is64=is64, big=big, needed=("libpq.so.5", "libc.so.6"), soname="libdemo.so.1", machine=22 if big else 62))
    assert _readelf(path) == (("libpq.so.5", "libc.so.6"), "libdemo.so.1")  # the oracle agrees the file is well formed
    info = _read(path)
    assert info == DynamicInfo(22 if big else 62, ("libpq.so.5", "libc.so.6"), "libdemo.so.1")


def test_reads_runpath_and_rpath_as_readelf_does(tmp_path: Path) -> None:
    if shutil.which("patchelf") is None:
        pytest.fail("needs patchelf (apt-get install patchelf)")
    source = next(p for p in _host_libraries() if _read(p) and _read(p).needed)  # type: ignore[union-attr]
    runpath, rpath = tmp_path / "runpath.so", tmp_path / "rpath.so"
    shutil.copy(source, runpath)
    shutil.copy(source, rpath)
    subprocess.run(["patchelf", "--set-rpath", "$ORIGIN/../lib:/opt/x/lib", str(runpath)], check=True)
    subprocess.run(["patchelf", "--force-rpath", "--set-rpath", "/usr/local/lib", str(rpath)], check=True)
    assert "(RUNPATH)" in subprocess.run(["readelf", "-d", str(runpath)], capture_output=True, text=True, check=True).stdout
    by_runpath, by_rpath = _read(runpath), _read(rpath)
    assert by_runpath is not None and by_rpath is not None
    assert (by_runpath.runpath, by_runpath.rpath, by_runpath.search_path) == (("$ORIGIN/../lib", "/opt/x/lib"), (), ("RUNPATH", ("$ORIGIN/../lib", "/opt/x/lib")))
    assert (by_rpath.runpath, by_rpath.rpath, by_rpath.search_path) == ((), ("/usr/local/lib",), ("RPATH", ("/usr/local/lib",)))
    assert (by_runpath.needed, by_runpath.soname) == _readelf(runpath)
    assert _read(source).search_path == ("", ())  # type: ignore[union-attr]


def test_a_static_executable_needs_nothing_and_a_text_file_is_not_elf(tmp_path: Path) -> None:
    busybox = Path("/bin/busybox")
    static = next((p for p in (busybox, Path("/usr/bin/ldconfig"), Path("/sbin/ldconfig")) if p.is_file() and "statically linked" in subprocess.run(["file", "-L", str(p)], capture_output=True, text=True).stdout), None)
    if static is not None:
        info = _read(static)
        assert info is not None and info.needed == ()
    text = tmp_path / "not-elf.so"
    text.write_bytes(b"INPUT(-lfoo)\n" * 10)  # a linker script named like a library, as libc.so is
    assert _read(text) is None


def test_a_zip_member_reads_as_the_file_does_without_being_extracted(tmp_path: Path) -> None:
    source = _host_libraries(5)[0]
    wheel = tmp_path / "demo.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(source, "demo/_ext.so")
    with zipfile.ZipFile(wheel) as zf, zf.open("demo/_ext.so") as member:
        assert read_dynamic(member, zf.getinfo("demo/_ext.so").file_size) == _read(source)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA, zipfile.ZIP_STORED])
def test_a_corrupt_zip_member_reads_as_not_elf(tmp_path: Path, method: int) -> None:
    data = (LIBDIR / "libz.so.1").resolve().read_bytes()
    wheel = tmp_path / "demo.whl"
    with zipfile.ZipFile(wheel, "w", method) as zf:
        zf.writestr("demo/_ext.so", data)
    raw = bytearray(wheel.read_bytes())
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo("demo/_ext.so")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for at in range(start + 40, start + info.compress_size - 8, max(1, info.compress_size // 64)):
        raw[at] ^= 0x5A  # the compressed stream damaged throughout: the decompressor's own errors, or a bad CRC
    wheel.write_bytes(bytes(raw))
    with zipfile.ZipFile(wheel) as zf, zf.open("demo/_ext.so") as member:
        assert read_dynamic(member, info.file_size) is None  # type: ignore[arg-type]


def test_damaged_files_read_as_not_elf_and_never_raise() -> None:
    data = (LIBDIR / "libz.so.1").resolve().read_bytes()
    assert read_dynamic(io.BytesIO(data), len(data)) is not None
    rng = random.Random(7)
    results = set()
    for cut in [0, 3, 4, 16, 40, 63, 64, 200, len(data) // 3, len(data) // 2, len(data) - 1]:
        results.add(read_dynamic(io.BytesIO(data[:cut]), cut) is None)
    for _ in range(400):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(0, 4096) if rng.random() < 0.7 else rng.randrange(len(damaged))
            damaged[at] = rng.randrange(256)
        read_dynamic(io.BytesIO(bytes(damaged)), len(damaged))  # a result or None: never an exception
    assert True in results  # truncation reads as "not ELF"
    hostile = make_elf(is64=True, big=False, needed=("libx.so.1",))
    huge_phnum = hostile[:56] + struct.pack("<H", 0xFFFF) + hostile[58:]
    assert read_dynamic(io.BytesIO(huge_phnum), len(huge_phnum)) is None
    wrong_size = read_dynamic(io.BytesIO(hostile), len(hostile) + 10_000)  # a size the stream does not have
    assert wrong_size is None or wrong_size.needed == ("libx.so.1",)
