"""The layer encoder run in another process (another CPU model under qemu, another machine's Python): what it prints
is compared with this process's, line by line, to prove a blob's bytes depend on its input alone."""

from __future__ import annotations

import zipfile
from pathlib import Path

# argv: the input file, the compression ("gzip" / "zstd"). Prints the encoder's id, then each member's sha256.
ENCODE = """
import hashlib, sys
from pyimage.layers.compress import CHUNK_SIZE, compress_chunk, compression_id
data = open(sys.argv[1], "rb").read()
print(compression_id(sys.argv[2]))
for i in range(0, len(data), CHUNK_SIZE):
    print(hashlib.sha256(compress_chunk(sys.argv[2], data[i:i + CHUNK_SIZE])).hexdigest())
"""


def wheel_content(wheel: Path, size: int) -> bytes:
    """``size`` bytes of a real wheel's files (biggest first: a package's shared libraries and modules)."""
    with zipfile.ZipFile(wheel) as zf:
        out = bytearray()
        for info in sorted(zf.infolist(), key=lambda i: (-i.file_size, i.filename)):
            out += zf.read(info)
            if len(out) >= size:
                break
    if len(out) < size:
        raise ValueError(f"{wheel.name} holds less than {size} bytes")
    return bytes(out[:size])
