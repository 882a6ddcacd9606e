"""The native-library check on wheels holding real compiled code: a soname found nowhere is one error naming the
package, the file and the library; one the base, a wheel of the set, the libc or ``allow`` has passes; the
facts are read once per wheel and the verdict once per set."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from pyimage.cache import Cache
from pyimage.errors import BuildError
from pyimage.layers.native import check_libraries, debian_package, unscanned, wheel_natives
from pyimage.wheels import Wheel, read_wheel
from support.elffiles import make_elf
from wheels_fixture import make_wheel

BASE = ("libc.so.6", "libgcc_s.so.1", "libstdc++.so.6")  # a base without zlib


@pytest.fixture(scope="module")
def zlib_extension(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real extension module compiled here that links zlib (``DT_NEEDED libz.so.1``)."""
    if shutil.which("gcc") is None:
        pytest.fail("needs gcc")
    work = tmp_path_factory.mktemp("ext")
    (work / "ext.c").write_text("#include <zlib.h>\nconst char *version(void) { return zlibVersion(); }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(work / "ext.so"), str(work / "ext.c"), "-lz"], check=True)
    return (work / "ext.so").read_bytes()


def _wheel(tmp_path: Path, name: str, files: dict[str, bytes]) -> Wheel:
    return read_wheel(make_wheel(tmp_path / name, name, "1.0", files))


def _check(wheels: list[Wheel], cache: Cache, base: tuple[str, ...] = BASE, allow: tuple[str, ...] = (), machine: str = "x86_64") -> None:
    check_libraries(wheels, cache, base_libraries=base, libc="glibc", machine=machine, allow=allow, base="rootfs:base.tar")


def test_a_library_found_nowhere_is_one_error_naming_package_file_and_soname(tmp_path: Path, zlib_extension: bytes) -> None:
    wheel = _wheel(tmp_path, "zdemo", {"zdemo/_speed.cpython-311-x86_64-linux-gnu.so": zlib_extension})
    with pytest.raises(BuildError) as err:
        _check([wheel], Cache(tmp_path / "cache"))
    assert err.value.message == "zdemo 1.0: zdemo/_speed.cpython-311-x86_64-linux-gnu.so needs libz.so.1, which neither the base rootfs:base.tar nor any wheel of the image has"
    assert "apt-get install libz1" in err.value.hint and 'allow-missing-libraries = ["libz.so.1"]' in err.value.hint


def test_the_base_a_bundling_wheel_or_allow_supplies_it(tmp_path: Path, zlib_extension: bytes) -> None:
    wheel = _wheel(tmp_path, "zdemo", {"zdemo/_speed.so": zlib_extension})
    _check([wheel], Cache(tmp_path / "c1"), base=(*BASE, "libz.so.1"))
    bundled = _wheel(tmp_path, "zlibs", {"zlibs.libs/libz-0a1b2c3d.so.1.3": make_elf(is64=True, big=False, needed=("libc.so.6",), soname="libz.so.1")})
    _check([wheel, bundled], Cache(tmp_path / "c2"))
    _check([wheel], Cache(tmp_path / "c3"), allow=("libz.so.*",))


def test_an_elf_built_for_another_machine_is_not_checked(tmp_path: Path) -> None:
    arm = make_elf(is64=True, big=False, needed=("libonly-on-arm.so.1",), machine=183)
    wheel = _wheel(tmp_path, "multi", {"multi/prebuilt/linux-aarch64/_native.so": arm})
    _check([wheel], Cache(tmp_path / "c1"))
    with pytest.raises(BuildError, match="libonly-on-arm.so.1"):
        _check([wheel], Cache(tmp_path / "c2"), machine="aarch64")


def test_wheel_facts_and_the_verdict_come_from_the_cache_once_read(tmp_path: Path, zlib_extension: bytes) -> None:
    cache = Cache(tmp_path / "cache")
    wheel = _wheel(tmp_path, "zdemo", {"zdemo/_speed.so": zlib_extension, "zdemo/__init__.py": b""})
    _check([wheel], cache, base=(*BASE, "libz.so.1"))
    assert wheel.path is not None
    wheel.path.unlink()  # a no-change rebuild does not read the wheel again
    _check([wheel], cache, base=(*BASE, "libz.so.1"))
    assert unscanned([wheel], cache) == ()  # nothing to fetch for it
    facts = wheel_natives([wheel], cache)
    assert [f.path for f in facts[0].files] == ["zdemo/_speed.so"] and "libz.so.1" in facts[0].files[0].needed
    with pytest.raises(BuildError, match="needs libz.so.1"):  # another base: a new verdict from the cached facts
        _check([wheel], cache)


def test_a_wheel_whose_facts_are_not_cached_is_named_to_fetch_and_never_fetched_here(tmp_path: Path, zlib_extension: bytes) -> None:
    wheel = _wheel(tmp_path, "zdemo", {"zdemo/_speed.so": zlib_extension})
    unfetched = Wheel(wheel.name, wheel.version, wheel.filename, wheel.sha256, None, wheel.installed_size)
    cache = Cache(tmp_path / "cache")
    assert unscanned([unfetched], cache) == (unfetched,)
    with pytest.raises(BuildError, match=r"zdemo-.*\.whl must be read for its native libraries, but it was not fetched"):
        check_libraries([unfetched], cache, base_libraries=(*BASE, "libz.so.1"), libc="glibc", machine="x86_64", allow=(), base="b")
    check_libraries([wheel], cache, base_libraries=(*BASE, "libz.so.1"), libc="glibc", machine="x86_64", allow=(), base="b")
    assert unscanned([unfetched], cache) == ()


def test_a_base_without_a_libc_is_not_checked(tmp_path: Path, zlib_extension: bytes) -> None:
    wheel = _wheel(tmp_path, "zdemo", {"zdemo/_speed.so": zlib_extension})
    check_libraries([wheel], Cache(tmp_path / "cache"), base_libraries=(), libc="", machine="x86_64", allow=(), base="scratch")


def test_a_damaged_shared_object_in_a_wheel_is_skipped_not_fatal(tmp_path: Path, zlib_extension: bytes) -> None:
    wheel = _wheel(tmp_path, "broken", {"broken/_x.so": zlib_extension[:300], "broken/lib.so.1": b"\x7fELF" + b"\xff" * 200})
    _check([wheel], Cache(tmp_path / "cache"))


@pytest.mark.parametrize(
    ("soname", "package"),
    [("libpq.so.5", "libpq5"), ("libyaml-0.so.2", "libyaml-0-2"), ("libGL.so.1", "libgl1"), ("libssl.so.3", "libssl3"), ("libfoo.so", "")],
)
def test_debian_package_follows_the_shared_library_naming_rule(soname: str, package: str) -> None:
    assert debian_package(soname) == package


def test_a_real_manylinux_wheel_needs_nothing_a_bookworm_base_lacks(tmp_path: Path) -> None:
    """torch's CPU wheel bundles what its policy does not allow (libgomp) and needs libstdc++ from the base."""
    torch = next(iter(sorted(Path("/opt/wheels").glob("torch-*manylinux*x86_64.whl"))), None)
    if torch is None:
        pytest.skip("no torch wheel in /opt/wheels")
    wheel = read_wheel(torch)
    _check([wheel], Cache(tmp_path / "cache"))
    with pytest.raises(BuildError, match=r"needs libstdc\+\+\.so\.6"):
        _check([wheel], Cache(tmp_path / "cache2"), base=("libc.so.6", "libgcc_s.so.1"))
    with zipfile.ZipFile(torch) as zf:
        assert any(".libs/" in n or "/lib/libgomp" in n for n in zf.namelist())
