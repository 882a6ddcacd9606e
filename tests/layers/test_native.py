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


def _mixed_wheel(tmp_path: Path, zlib_extension: bytes) -> Path:
    """Every kind of member the facts come from, as one wheel: a real extension, a bundled library with its soname,
    a big-endian 32-bit one, one built for another machine, a damaged one, a text file named like a library, an ELF
    program among the scripts (read with seeks, so not from the stream), and a big library laid out as real ones
    are: .dynstr at 2 MB and .dynamic at 4 MB, beyond what a tap keeps at the start when that is made small."""
    big = make_elf(is64=True, big=False, needed=("libbig-dep.so.3", "libc.so.6"), soname="libbig.so.1", lead=2 << 20, gap=2 << 20)
    files = {
        "mix/_speed.cpython-311-x86_64-linux-gnu.so": zlib_extension,
        "mix.libs/libz-0a1b2c3d.so.1.3": make_elf(is64=True, big=False, needed=("libc.so.6",), soname="libz.so.1"),
        "mix/be32.so": make_elf(is64=False, big=True, needed=("libbe.so.2",), machine=20),
        "mix/arm/_native.so": make_elf(is64=True, big=False, needed=("libonly-on-arm.so.1",), machine=183),
        "mix/broken.so": zlib_extension[:300],
        "mix/notes.so.txt.so": b"not an ELF file at all, only named like a library" * 4,
        "mix-1.0.data/scripts/tool": make_elf(is64=True, big=False, needed=("libtool-dep.so.9",)),
        "mix/libbig.so.1": big,
        "mix/__init__.py": b"",
    }
    return make_wheel(tmp_path / "w", "mix", "1.0", files, executable=("mix-1.0.data/scripts/tool",))


@pytest.mark.parametrize("prefix", [16 << 20, 1 << 20, 0], ids=["default", "strtab-read-again", "nothing-kept"])
def test_the_layer_pass_gathers_the_facts_reading_the_wheel_gives(tmp_path: Path, zlib_extension: bytes, monkeypatch: pytest.MonkeyPatch, prefix: int) -> None:
    """A cold build defers the check and takes each wheel's ELF facts from the bytes the layer build inflates: they
    must be what reading the wheel on its own gives, whatever the tap kept and had to read again."""
    import io

    from pyimage.layers import native
    from pyimage.layers.install import install_wheel
    from pyimage.layers.paths import InstallPaths
    from pyimage.layers.tar import TarWriter

    wheel = _mixed_wheel(tmp_path, zlib_extension)
    reread: dict[str, int] = {}  # member -> how far it was inflated again

    class Counting(native._Member):
        def seek(self, offset: int, whence: int = 0) -> int:
            at = super().seek(offset, whence)
            reread[self._info.filename] = max(reread.get(self._info.filename, 0), at)
            return at

    monkeypatch.setattr(native, "_Member", Counting)
    monkeypatch.setattr(native, "_TAP_PREFIX", prefix)
    got: list[native.WheelNatives] = []
    install_wheel(wheel, TarWriter(io.BytesIO()), InstallPaths(), got.append)
    from_stream = dict(reread)
    assert got == [native._read_natives(str(wheel))]
    by_path = {f.path: f.needed for f in got[0].files}
    assert by_path["mix/libbig.so.1"] == ("libbig-dep.so.3", "libc.so.6") and by_path["mix-1.0.data/scripts/tool"] == ("libtool-dep.so.9",)
    assert {"libz.so.1", "libbig.so.1", "libz-0a1b2c3d.so.1.3"} <= set(got[0].provides) and "mix/broken.so" not in by_path
    if prefix == 16 << 20:  # only the script (installed with seeks to fix its shebang) is read a second time
        assert list(from_stream) == ["mix-1.0.data/scripts/tool"]
    elif prefix == 1 << 20:  # the big library's string table, passed before its dynamic section said where it is:
        assert sorted(from_stream) == ["mix-1.0.data/scripts/tool", "mix/libbig.so.1"]
        assert (2 << 20) < from_stream["mix/libbig.so.1"] < (2 << 20) + 4096  # inflated again only that far


def test_a_wheel_the_layer_pass_could_not_finish_records_no_facts(tmp_path: Path, zlib_extension: bytes) -> None:
    import io

    from pyimage.layers.install import install_wheel
    from pyimage.layers.paths import InstallPaths
    from pyimage.layers.tar import TarWriter

    files = {"bad/_speed.so": zlib_extension, "bad/__init__.py": b""}
    wheel = make_wheel(tmp_path / "w", "bad", "1.0", files, tamper={"bad/__init__.py": b"import os\n"})
    got: list[object] = []
    with pytest.raises(BuildError, match="RECORD"):
        install_wheel(wheel, TarWriter(io.BytesIO()), InstallPaths(), got.append)
    assert got == []
