"""The dynamic section of an ELF file: which shared libraries it needs (``DT_NEEDED``), its own ``DT_SONAME``, and
where it tells the loader to look (``DT_RUNPATH``, ``DT_RPATH``).

Enough of ELF to answer "will the loader find this extension's libraries in the image?", the question ``ldd``
answers on a live system. The input is untrusted (a wheel's members): 32/64-bit, little/big endian, every
offset and count checked against the data and bounded; anything malformed reads as "not ELF" (None), never an
exception. The reader goes through the program headers, as the loader does, so a stripped file with no section
headers reads the same; it works on a seekable stream so a 1 GB ``libtorch_cuda.so`` inside a zip is never held
in memory (a zip member seeks forward by inflating, so reads go in file order where they can).
"""

from __future__ import annotations

import lzma
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["DynamicInfo", "ELF_MACHINES", "dynamic_range", "read_dynamic"]

MAGIC = b"\x7fELF"
_PT_LOAD, _PT_DYNAMIC = 1, 2
_DT_NULL, _DT_NEEDED, _DT_STRTAB, _DT_SONAME, _DT_STRSZ, _DT_RPATH, _DT_RUNPATH = 0, 1, 5, 14, 10, 15, 29
_ET_EXEC, _ET_DYN = 2, 3
_MAX_PHNUM = 4096  # real files have < 20; PN_XNUM (0xffff) files keep the count elsewhere and are not read
_MAX_PHENTSIZE = 256  # 56 (64-bit) or 32 (32-bit) in every real file; bounds the table read to 1 MB
_MAX_DYNAMIC = 1 << 20  # bytes of dynamic segment: 65536 entries on 64-bit, where real files have < 100
_MAX_STRTAB = 16 << 20
_MAX_NAME = 4096  # a soname longer than this is not one

# e_machine of the machines a platform names (``Target.machine``), so a wheel shipping binaries for several
# machines (an ``-any`` wheel with prebuilt .so files per platform) is checked only for the target's.
ELF_MACHINES = {"x86_64": 62, "i686": 3, "i386": 3, "aarch64": 183, "armv7l": 40, "ppc64le": 21, "ppc64": 21, "s390x": 22, "riscv64": 243}


@dataclass(frozen=True)
class DynamicInfo:
    """``needed`` in file order (duplicates kept out); ``soname`` is "" when the file declares none (an
    executable, most extension modules). ``machine`` is ELF's e_machine number. ``runpath`` and ``rpath`` are
    the directories of ``DT_RUNPATH`` / ``DT_RPATH`` as written (``$ORIGIN`` unexpanded), split at ``:``."""

    machine: int
    needed: tuple[str, ...]
    soname: str
    runpath: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()

    @property
    def search_path(self) -> tuple[str, tuple[str, ...]]:
        """("RUNPATH", dirs) or ("RPATH", dirs): what the loader reads (it ignores RPATH when RUNPATH is set), or
        ("", ()) when the file sets neither."""
        if self.runpath:
            return "RUNPATH", self.runpath
        return ("RPATH", self.rpath) if self.rpath else ("", ())


def read_dynamic(f: BinaryIO, size: int) -> DynamicInfo | None:
    """The dynamic facts of the ELF file ``f`` (``size`` bytes, positioned anywhere), or None when it is not an
    ELF executable or shared object, or is malformed; a static executable gives empty ``needed``."""
    try:
        return _read(f, size)
    except (struct.error, ValueError, OSError, EOFError, OverflowError, MemoryError):
        return None
    except (zlib.error, lzma.LZMAError, zipfile.BadZipFile):
        return None  # a corrupt (or oddly compressed) zip member read in place: still "not a readable ELF"


def _at(f: BinaryIO, size: int, offset: int, length: int) -> bytes:
    if offset < 0 or length < 0 or offset + length > size:
        raise ValueError("outside the file")
    f.seek(offset)
    data = f.read(length)
    if len(data) != length:
        raise EOFError("short read")
    return data


def dynamic_range(f: BinaryIO, size: int) -> tuple[int, int] | None:
    """Where the dynamic section is (file offset, bytes ``read_dynamic`` reads there), from the ELF and program
    headers alone; None when there is none to read (not ELF, malformed, statically linked). Lets a reader that
    streams the file keep those bytes as they pass (``layers/native.py``). Raises EOFError while ``f`` does not
    yet hold the program headers."""
    try:
        headers = _headers(f, size)
    except (struct.error, ValueError, OverflowError):
        return None
    if headers is None or headers[4] is None:
        return None
    is64, _end, _machine, _loads, (offset, filesz) = headers[0], headers[1], headers[2], headers[3], headers[4]
    dyn_size = min(filesz, _MAX_DYNAMIC)
    return offset, dyn_size - dyn_size % (16 if is64 else 8)


def _headers(f: BinaryIO, size: int) -> tuple[bool, str, int, list[tuple[int, int, int]], tuple[int, int] | None] | None:
    """(64-bit, byte order, e_machine, PT_LOAD (vaddr, filesz, offset)s, PT_DYNAMIC (offset, filesz)) of an ELF
    executable or shared object; None for anything else."""
    ident = _at(f, size, 0, 16)
    if ident[:4] != MAGIC or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        return None
    is64, end = ident[4] == 2, "<" if ident[5] == 1 else ">"
    header = _at(f, size, 16, 48 if is64 else 36)
    if is64:
        e_type, e_machine, _v, _entry, e_phoff, _shoff, _flags, _ehsize, e_phentsize, e_phnum = struct.unpack(end + "HHIQQQIHHH", header[:42])
    else:
        e_type, e_machine, _v, _entry, e_phoff, _shoff, _flags, _ehsize, e_phentsize, e_phnum = struct.unpack(end + "HHIIIIIHHH", header[:30])
    if e_type not in (_ET_EXEC, _ET_DYN) or not 0 < e_phnum <= _MAX_PHNUM or not (56 if is64 else 32) <= e_phentsize <= _MAX_PHENTSIZE:
        return None
    table = _at(f, size, e_phoff, e_phentsize * e_phnum)
    loads: list[tuple[int, int, int]] = []  # (vaddr, filesz, offset)
    dynamic: tuple[int, int] | None = None
    for i in range(e_phnum):
        entry = table[i * e_phentsize : (i + 1) * e_phentsize]
        if is64:
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack(end + "IIQQQQ", entry[:40])
        else:
            p_type, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack(end + "IIIII", entry[:20])
        if p_type == _PT_LOAD:
            loads.append((p_vaddr, p_filesz, p_offset))
        elif p_type == _PT_DYNAMIC and dynamic is None:
            dynamic = (p_offset, p_filesz)
    return is64, end, e_machine, loads, dynamic


def _read(f: BinaryIO, size: int) -> DynamicInfo | None:
    headers = _headers(f, size)
    if headers is None:
        return None
    is64, end, e_machine, loads, dynamic = headers
    if dynamic is None:
        return DynamicInfo(e_machine, (), "")  # statically linked
    dyn_size = min(dynamic[1], _MAX_DYNAMIC)
    entry_size = 16 if is64 else 8
    raw = _at(f, size, dynamic[0], dyn_size - dyn_size % entry_size)
    needed_offsets: list[int] = []
    soname_offset = runpath_offset = rpath_offset = -1
    strtab = strsz = -1
    for (tag, value) in struct.iter_unpack(end + ("qQ" if is64 else "iI"), raw):
        if tag == _DT_NULL:
            break
        if tag == _DT_NEEDED:
            needed_offsets.append(value)
        elif tag == _DT_SONAME:
            soname_offset = value
        elif tag == _DT_RUNPATH:
            runpath_offset = value
        elif tag == _DT_RPATH:
            rpath_offset = value
        elif tag == _DT_STRTAB:
            strtab = value
        elif tag == _DT_STRSZ:
            strsz = value
    if not needed_offsets and max(soname_offset, runpath_offset, rpath_offset) < 0:
        return DynamicInfo(e_machine, (), "")
    start = next((off + strtab - vaddr for vaddr, filesz, off in loads if vaddr <= strtab < vaddr + filesz), -1)
    if start < 0 or not 0 < strsz <= _MAX_STRTAB:
        return None
    strings = _at(f, size, start, min(strsz, size - start))

    def name(offset: int) -> str:
        if not 0 <= offset < len(strings):
            raise ValueError("string outside .dynstr")
        stop = strings.find(b"\0", offset, offset + _MAX_NAME)
        if stop < 0:
            raise ValueError("unterminated name")
        return strings[offset:stop].decode("utf-8", "replace")

    def dirs(offset: int) -> tuple[str, ...]:
        return tuple(d for d in name(offset).split(":") if d) if offset >= 0 else ()

    needed = tuple(dict.fromkeys(name(o) for o in needed_offsets))
    return DynamicInfo(e_machine, needed, name(soname_offset) if soname_offset >= 0 else "", dirs(runpath_offset), dirs(rpath_offset))
