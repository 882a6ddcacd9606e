"""Native libraries: every shared library the wheels' compiled code needs is in the image, or the build says so.

A wheel built here from an sdist links this machine's libraries (``psycopg2`` against ``libpq.so.5``), and a
manylinux wheel may expect one its policy does not bundle (``libGL.so.1``): the image then builds and fails at
import. So before layer work each ELF file a wheel ships (extension modules, shared objects, binaries in its
scripts) is read for ``DT_NEEDED`` (``layers/elf.py``), and each soname must be shipped by a wheel of the set
(auditwheel's ``<pkg>.libs/``), be in the base's library directories (``BaseFacts.libraries``), or be part of the
libc itself. The per-wheel facts are cached by the wheel's sha256 and the verdict by the whole set, so a rebuild
with no change reads one record.
"""

from __future__ import annotations

import fnmatch
import io
import posixpath
import re
import zipfile
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Sequence

from pyimage.cache import Cache, Meta, flag, strings
from pyimage.errors import BuildError
from pyimage.layers.elf import ELF_MACHINES, MAGIC, DynamicInfo, dynamic_range, read_dynamic
from pyimage.layers.zipmember import open_member
from pyimage.wheels import Wheel

__all__ = ["NativeFile", "NativesTaps", "WheelNatives", "check_libraries", "debian_package", "natives_checked", "record_natives", "unscanned", "wheel_natives"]

_FORMAT = 1  # bump when what is read from a wheel changes, so old per-wheel records are not reused
_MAX_MEMBER = 4 << 30  # inflating to a dynamic section costs time: the biggest real library (libtorch_cuda) is ~1 GB
_SHARED_OBJECT = re.compile(r"\.so(?:\.[0-9A-Za-z_]+)*$")  # _ext.cpython-311-x86_64-linux-gnu.so, libpq-1a2b3c.so.5.16

# What the C library itself provides, found by the loader whatever the base's directories hold.
_GLIBC = frozenset({
    "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1", "libresolv.so.2", "libnsl.so.1",
    "libanl.so.1", "libmvec.so.1", "libBrokenLocale.so.1", "libthread_db.so.1", "linux-vdso.so.1", "linux-gate.so.1",
    "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "ld-linux.so.2", "ld-linux-armhf.so.3", "ld64.so.2", "ld64.so.1", "ld-linux-riscv64-lp64d.so.1",
})
# musl's loader answers these names with itself (ldso/dynlink.c's reserved names).
_MUSL = frozenset({"libc.so", "libm.so", "libpthread.so", "libdl.so", "librt.so", "libutil.so", "libxnet.so", "libcrypt.so", "libresolv.so"})
# Published wheels that bundle what the sdist of the same project links from the system.
_BUNDLING = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]"}
# Put into containers by the runtime, never by the image: the NVIDIA container toolkit mounts the host's driver.
_INJECTED = frozenset({"libcuda.so.1", "libnvidia-ml.so.1"})


@dataclass(frozen=True)
class NativeFile:
    """An ELF file of a wheel (its path in the zip) and the sonames it needs."""

    path: str
    machine: int
    needed: tuple[str, ...]


@dataclass(frozen=True)
class WheelNatives:
    """The ELF files of one wheel and the library names it ships (file names and ``DT_SONAME``s)."""

    files: tuple[NativeFile, ...]
    provides: tuple[str, ...]


def _candidate(name: str) -> bool:
    base = posixpath.basename(name)
    return bool(base) and (_SHARED_OBJECT.search(base) is not None or ".data/scripts/" in name)


class _Member(io.RawIOBase):
    """A zip member as a seekable stream over isal's inflate (``layers/install.py``; ~3x zipfile's zlib, which
    counts here: reaching libtorch_cpu.so's dynamic segment inflates most of its 400 MB). A forward seek inflates
    and drops; a backward one (the ELF reader's string table, early in the file) starts the member again."""

    def __init__(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        self._zf, self._info = zf, info
        self._raw: BinaryIO = open_member(zf, info)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset < 0:
            raise ValueError("absolute, non-negative offsets only")
        if offset < self._pos:
            self._raw.close()
            self._raw, self._pos = open_member(self._zf, self._info), 0
        while self._pos < offset:
            skipped = len(self._raw.read(min(offset - self._pos, 1 << 20)))
            if not skipped:
                break
            self._pos += skipped
        return self._pos

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        data = self._raw.read(n)
        self._pos += len(data)
        return data

    def close(self) -> None:
        self._raw.close()
        super().close()


def _scanned(info: zipfile.ZipInfo) -> bool:
    """Whether ``info`` is a member read for its ELF facts (by name and size: nothing is inflated to decide)."""
    return not info.is_dir() and _candidate(info.filename) and 64 <= info.file_size <= _MAX_MEMBER


def _read_member(f: BinaryIO, size: int) -> DynamicInfo | None:
    if f.read(4) != MAGIC:
        return None
    return read_dynamic(f, size)


def _natives_of(zf: zipfile.ZipFile, found: dict[str, DynamicInfo | None]) -> WheelNatives:
    """The wheel's facts from each scanned member's dynamic info (``found``, by member name), in the zip's order."""
    files: list[NativeFile] = []
    provides: set[str] = set()
    for info in zf.infolist():
        one = found.get(info.filename)
        if one is None:
            continue
        if _SHARED_OBJECT.search(posixpath.basename(info.filename)):
            provides.add(posixpath.basename(info.filename))
        if one.soname:
            provides.add(one.soname)
        if one.needed:
            files.append(NativeFile(info.filename, one.machine, one.needed))
    return WheelNatives(tuple(files), tuple(sorted(provides)))


def _read_natives(path: str) -> WheelNatives:
    found: dict[str, DynamicInfo | None] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if _scanned(info):
                    with _Member(zf, info) as member:
                        found[info.filename] = _read_member(member, info.file_size)  # type: ignore[arg-type]
            return _natives_of(zf, found)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BuildError(f"{posixpath.basename(path)}: not a readable wheel ({exc})", "re-download or rebuild the wheel") from None


# What a member tap keeps of the bytes streaming by: everything up to here (the ELF and program headers and, in
# real libraries, .dynstr: libtorch_cpu.so's ends at 7 MB of 434), then only the dynamic section.
_TAP_PREFIX = 16 << 20


class _Captured(io.RawIOBase):
    """A seekable view of the byte ranges a tap kept; a read of bytes it did not keep goes to ``reopen()``, the
    member inflated again from its start (``_Member``), or raises EOFError when there is none (still streaming)."""

    def __init__(self, chunks: list[tuple[int, bytes]], reopen: Callable[[], BinaryIO] | None) -> None:
        self._chunks, self._reopen, self._pos = chunks, reopen, 0
        self._again: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = offset
        return offset

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if n < 0:
            raise ValueError("sized reads only")
        start, stop = self._pos, self._pos + n
        out = bytearray()
        for offset, chunk in self._chunks:  # in stream order, so a gap ends the run
            here = start + len(out)
            if offset + len(chunk) <= here:
                continue
            if offset > here:
                break
            out += chunk[here - offset : stop - offset]
            if start + len(out) >= stop:
                break
        if len(out) < n:
            if self._reopen is None:
                raise EOFError("not streamed yet")
            if self._again is None:
                self._again = self._reopen()
            self._again.seek(start)
            out = bytearray(self._again.read(n))
        self._pos = start + len(out)
        return bytes(out)

    def close(self) -> None:
        if self._again is not None:
            self._again.close()
        super().close()


class _Tap:
    """Watches one member's bytes as the layer writer streams them, keeping what ``read_dynamic`` will ask for."""

    def __init__(self, size: int) -> None:
        self.size, self.pos = size, 0
        self.chunks: list[tuple[int, bytes]] = []
        self.dynamic: tuple[int, int] | None = None
        self.located = False  # the program headers were read (``dynamic`` is then known, or there is none)

    def feed(self, chunk: bytes) -> None:
        start = self.pos
        self.pos += len(chunk)
        if start < _TAP_PREFIX or (self.dynamic is not None and start < sum(self.dynamic) and self.pos > self.dynamic[0]):
            self.chunks.append((start, chunk))
        if not self.located and start < _TAP_PREFIX:
            try:
                self.dynamic = dynamic_range(_Captured(self.chunks, None), self.size)  # type: ignore[arg-type]
                self.located = True
            except EOFError:
                pass  # the program headers have not streamed by yet

    def result(self, reopen: Callable[[], BinaryIO]) -> DynamicInfo | None:
        with _Captured(self.chunks, reopen) as view:
            return _read_member(view, self.size)  # type: ignore[arg-type]


class NativesTaps:
    """The ELF facts of one wheel, gathered while its files are written into a layer (``layers/install.py``): the
    layer build inflates every member anyway, so a cold build reads none of them a second time for the check.
    ``tap(info)`` gives the feed for a member's bytes (None when it is not one to scan) and ``end(zf, info)``
    reads its facts when the member is done (from what the tap kept, else inflating it again from the start only
    as far as needed); ``done(zf)`` returns the wheel's facts, reading any member that was not streamed whole."""

    def __init__(self) -> None:
        self._taps: dict[str, _Tap] = {}
        self._found: dict[str, DynamicInfo | None] = {}

    def tap(self, info: zipfile.ZipInfo) -> Callable[[bytes], None] | None:
        if not _scanned(info):
            return None
        one = self._taps[info.filename] = _Tap(info.file_size)
        return one.feed

    def end(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        one = self._taps.pop(info.filename, None)
        if one is not None and one.pos == info.file_size:  # else (a script read with seeks) ``done`` reads it
            self._found[info.filename] = one.result(lambda: _Member(zf, info))  # type: ignore[arg-type,return-value]

    def done(self, zf: zipfile.ZipFile) -> WheelNatives:
        self._taps.clear()
        for info in zf.infolist():
            if _scanned(info) and info.filename not in self._found:
                with _Member(zf, info) as member:
                    self._found[info.filename] = _read_member(member, info.file_size)  # type: ignore[arg-type]
        return _natives_of(zf, self._found)


def record_natives(cache: Cache, sha256: str, facts: WheelNatives) -> None:
    """Keeps a wheel's facts gathered by ``NativesTaps`` (the layer build's pass over its files)."""
    if cache.get_meta(NATIVES, sha256) is None:
        cache.put_meta(NATIVES, facts, sha256)


def _load_natives(value: Any) -> WheelNatives:
    if not isinstance(value["files"], list):
        raise TypeError("not a list of ELF files")
    files = []
    for path, machine, needed in value["files"]:
        if not isinstance(path, str) or type(machine) is not int:
            raise TypeError("not an ELF file record")
        files.append(NativeFile(path, machine, strings(needed)))
    return WheelNatives(tuple(files), strings(value["provides"]))


def _dump_natives(facts: WheelNatives) -> dict[str, Any]:
    return {"files": [[f.path, f.machine, list(f.needed)] for f in facts.files], "provides": list(facts.provides)}


NATIVES: Meta[WheelNatives] = Meta("natives", _load_natives, _dump_natives, version=_FORMAT)
CHECKED: Meta[bool] = Meta("natives-set", flag, version=_FORMAT)


def unscanned(wheels: Sequence[Wheel], cache: Cache) -> tuple[Wheel, ...]:
    """The wheels whose ELF facts the cache does not hold: ``check_libraries`` reads these, so the pipeline
    fetches them first (every other wheel needs no file here)."""
    return tuple(w for w in wheels if cache.get_meta(NATIVES, w.sha256) is None)


def wheel_natives(wheels: Sequence[Wheel], cache: Cache) -> list[WheelNatives]:
    """Each wheel's ELF facts, read once per wheel content (sha256) and then taken from the cache; a wheel whose
    facts are not cached must have its file here (``unscanned`` names them before the check)."""
    from concurrent.futures import ThreadPoolExecutor

    def facts_of(w: Wheel) -> WheelNatives:
        facts = cache.get_meta(NATIVES, w.sha256)
        if facts is None:
            if w.path is None or not w.path.is_file():
                raise BuildError(f"internal error: {w.filename} must be read for its native libraries, but it was not fetched", "this is a bug in pyimage; run again with --debug and report it")
            facts = _read_natives(str(w.path))
            cache.put_meta(NATIVES, facts, w.sha256)
        return facts

    if len(unscanned(wheels, cache)) < 2:
        return [facts_of(w) for w in wheels]
    # Reading a wheel's ELF files is mostly inflating them (isal releases the GIL): two wheels at a time.
    with ThreadPoolExecutor(2, thread_name_prefix="pyimage-natives") as pool:
        return list(pool.map(facts_of, wheels))


def debian_package(soname: str) -> str:
    """The Debian package that usually ships ``soname`` by the shared-library policy's naming rule
    (``libpq.so.5`` -> ``libpq5``, ``libfoo2.so.3`` -> ``libfoo2-3``), or "" when the name has no version."""
    m = re.fullmatch(r"(lib[A-Za-z0-9_.+-]*?)\.so\.(\d+)(?:\.\d+)*", soname)
    if not m:
        return ""
    stem, version = m.group(1).lower().replace("_", "-"), m.group(2)
    return f"{stem}-{version}" if stem[-1].isdigit() else f"{stem}{version}"


def check_libraries(
    wheels: Sequence[Wheel],
    cache: Cache,
    *,
    base_libraries: Sequence[str],
    libc: str,
    machine: str,
    allow: Sequence[str],
    base: str,
) -> None:
    """Every soname an ELF file of ``wheels`` needs is found in the image, or one BuildError naming the package,
    the file, the library and the fixes. ``allow`` holds names or globs taken as present (a library the image gets
    another way). A base with no libc found (``scratch``, a static base) is not checked: nothing can be said."""
    if natives_checked(wheels, cache, base_libraries, libc, machine, allow):
        return
    facts = wheel_natives(wheels, cache)
    present = set(base_libraries) | (_MUSL if libc == "musl" else _GLIBC) | _INJECTED
    for f in facts:
        present.update(f.provides)
    want = ELF_MACHINES.get(machine)
    missing: list[tuple[Wheel, str, str]] = []
    for wheel, f in zip(wheels, facts):
        for native in f.files:
            if want is not None and native.machine != want:
                continue  # prebuilt for another machine, never loaded here
            for soname in native.needed:
                if "/" in soname or soname in present or any(fnmatch.fnmatchcase(soname, p) for p in allow):
                    continue
                missing.append((wheel, native.path, soname))
    if missing:
        raise _missing_error(missing, base, libc)
    cache.put_meta(CHECKED, True, *_verdict_key(wheels, base_libraries, libc, machine, allow))


def _verdict_key(wheels: Sequence[Wheel], base_libraries: Sequence[str], libc: str, machine: str, allow: Sequence[str]) -> tuple[str, ...]:
    return (libc, machine, *sorted(w.sha256 for w in wheels), "allow", *sorted(allow), "base", *sorted(base_libraries))


def natives_checked(wheels: Sequence[Wheel], cache: Cache, base_libraries: Sequence[str], libc: str, machine: str, allow: Sequence[str]) -> bool:
    """Whether ``check_libraries`` has nothing to do: a base with no libc (nothing can be said), or this very set
    passed before (one cache record)."""
    if not libc:
        return True
    verdict = cache.get_meta(CHECKED, *_verdict_key(wheels, base_libraries, libc, machine, allow))
    return verdict is True


def _missing_error(missing: list[tuple[Wheel, str, str]], base: str, libc: str) -> BuildError:
    wheel, path, soname = missing[0]
    built_here = "-linux_" in wheel.filename  # no manylinux tag: built on this machine from the sdist
    origin = " (built here from its sdist, against this machine's libraries)" if built_here else ""
    others = sorted({s for _w, _p, s in missing[1:] if s != soname})
    more = f"; also missing: {', '.join(others[:4])}{' …' if len(others) > 4 else ''}" if others else ""
    package = debian_package(soname) if libc == "glibc" else ""
    install = f"a base that has it (Debian: `apt-get install {package}`)" if package else "a base that has it (install the package providing it)"
    bundled = f", a wheel that bundles it ({_BUNDLING.get(wheel.name) or 'a manylinux wheel of ' + wheel.name})" if built_here else ""
    allowed = ", ".join(f'"{s}"' for s in [soname, *others[:4]])
    return BuildError(
        f"{wheel.name} {wheel.version}{origin}: {path} needs {soname}, which neither the base {base} nor any wheel of the image has{more}",
        f"use {install}{bundled}; if the image gets it another way, set [tool.pyimage] allow-missing-libraries = [{allowed}]",
    )
