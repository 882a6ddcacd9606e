"""A zip member's bytes, inflated with isal (about 3x zipfile's zlib path on large wheels): the one reader of wheel
members, shared by the installer destination (``layers/install.py``) and the ELF scan (``layers/native.py``), and
light to import (no pypa/installer)."""

from __future__ import annotations

import io
import os
import struct
import zipfile
from typing import BinaryIO

try:
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the same format, slower
    import zlib as _inflate  # type: ignore[no-redef]

__all__ = ["open_member"]


class _InflatingReader(io.RawIOBase):
    """Reads a deflated zip member with isal's inflate (about 3x zipfile's zlib path on large wheels).

    Reads with ``os.pread`` on its own descriptor, so it shares no file position with the ZipFile.
    """

    def __init__(self, fd: int, offset: int, compressed_size: int) -> None:
        self._fd, self._pos, self._left = fd, offset, compressed_size
        self._obj = _inflate.decompressobj(-15)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        want = (1 << 62) if n is None or n < 0 else n
        out = [self._pending] if self._pending else []
        have = len(self._pending)
        self._pending = b""
        while have < want and not self._obj.eof:
            if self._obj.unconsumed_tail:
                chunk = self._obj.unconsumed_tail
            elif self._left:
                chunk = os.pread(self._fd, min(_READ, self._left), self._pos)
                if not chunk:
                    raise EOFError("zip member truncated")
                self._pos += len(chunk)
                self._left -= len(chunk)
            else:
                chunk = b""  # input all read, but isal may still hold inflated output: drain it
            data = self._obj.decompress(chunk, max(want - have, _READ))
            if not data and not chunk:
                break
            out.append(data)
            have += len(data)
        blob = b"".join(out)
        if len(blob) > want:
            blob, self._pending = blob[:want], blob[want:]
        return blob


_READ = 1 << 20


def open_member(zf: zipfile.ZipFile, item: zipfile.ZipInfo) -> BinaryIO:
    """A stream of ``item``'s bytes: isal inflate for deflated members, zipfile's reader for anything else."""
    fp = zf.fp
    if item.compress_type != zipfile.ZIP_DEFLATED or item.flag_bits & 0x1 or fp is None or not hasattr(fp, "fileno"):
        return zf.open(item)  # type: ignore[return-value]
    fd = fp.fileno()
    header = os.pread(fd, 30, item.header_offset)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header for {item.filename}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return _InflatingReader(fd, item.header_offset + 30 + name_len + extra_len, item.compress_size)  # type: ignore[return-value]
