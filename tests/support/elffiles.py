"""ELF files made to the spec for tests: every class and byte order, for machines this host cannot compile for."""

from __future__ import annotations

import struct

__all__ = ["make_elf"]


def make_elf(*, is64: bool, big: bool, needed: tuple[str, ...], soname: str = "", machine: int = 62, lead: int = 0, gap: int = 0) -> bytes:
    """A minimal shared object as the ELF spec lays it out: header, PT_LOAD over the whole file, PT_DYNAMIC, the
    dynamic string table and entries (NEEDED…, SONAME, STRTAB, STRSZ, NULL); no section headers, as ``sstrip``
    leaves a file. ``lead`` zero bytes go before the string table and ``gap`` between it and the dynamic section
    (a big library's layout: libtorch_cpu.so's .dynstr is at 1.8 MB, its .dynamic at 344 MB)."""
    end = ">" if big else "<"
    ehsize, phentsize = (64, 56) if is64 else (52, 32)
    strtab = b"\0" + b"".join(n.encode() + b"\0" for n in (*needed, soname) if n)
    offsets, pos = {}, 1
    for n in (*needed, soname):
        if n:
            offsets[n] = pos
            pos += len(n) + 1
    str_off = ehsize + 2 * phentsize + lead
    dyn_off = str_off + len(strtab) + gap
    dyn_off += -dyn_off % 8
    vaddr = 0x10000
    entries = [(1, offsets[n]) for n in needed] + ([(14, offsets[soname])] if soname else []) + [(5, vaddr + str_off), (10, len(strtab)), (0, 0)]
    dyn = b"".join(struct.pack(end + ("qQ" if is64 else "iI"), tag, value) for tag, value in entries)
    total = dyn_off + len(dyn)
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 2 if big else 1, 1, 0]) + bytes(8)
    if is64:
        header = struct.pack(end + "HHIQQQIHHHHHH", 3, machine, 1, 0, ehsize, 0, 0, ehsize, phentsize, 2, 0, 0, 0)
        load = struct.pack(end + "IIQQQQQQ", 1, 5, 0, vaddr, vaddr, total, total, 0x1000)
        dynamic = struct.pack(end + "IIQQQQQQ", 2, 6, dyn_off, vaddr + dyn_off, vaddr + dyn_off, len(dyn), len(dyn), 8)
    else:
        header = struct.pack(end + "HHIIIIIHHHHHH", 3, machine, 1, 0, ehsize, 0, 0, ehsize, phentsize, 2, 0, 0, 0)
        load = struct.pack(end + "IIIIIIII", 1, 0, vaddr, vaddr, total, total, 5, 0x1000)
        dynamic = struct.pack(end + "IIIIIIII", 2, dyn_off, vaddr + dyn_off, vaddr + dyn_off, len(dyn), len(dyn), 6, 4)
    body = ident + header + load + dynamic + bytes(lead) + strtab
    return body + bytes(dyn_off - len(body)) + dyn
