"""Layer blobs: tar bytes in, compressed blob file out, digest and diff_id computed in the same pass.

Compression is the hot path of a cold build, so it runs on its own thread (isal, zstandard, zlib and hashlib
all release the GIL on large buffers) while the caller inflates wheels and writes tar entries. gzip output is
a raw-deflate body between a fixed 10-byte header (no name, mtime 0, OS unknown) and the CRC/size trailer,
so the bytes depend only on the input and the backend, never on the clock or the file name.
"""

from __future__ import annotations

import hashlib
import queue
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol

from pyimage.oci.model import MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_LAYER_ZSTD

__all__ = [
    "COMPRESSIONS",
    "BlobResult",
    "BlobWriter",
    "compression_id",
    "media_type_for",
    "decompress_stream",
    "file_sha256",
]

COMPRESSIONS = ("gzip", "zstd")
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_QUEUE_DEPTH = 8  # x 1 MiB chunks: enough to keep both cores busy without buffering a whole wheel
_BUFFER = 1 << 20

try:  # python-isal: igzip is ~5x zlib at level 1 with a similar ratio (bench/compression.py)
    from isal import isal_zlib as _deflate_lib

    _GZIP_BACKEND = "isal-" + __import__("isal").__version__
    _GZIP_LEVEL = 1  # isal levels are 0..3; 1 is its default speed/ratio balance
except ImportError:  # pragma: no cover - isal is a declared dependency; keep a working fallback
    _deflate_lib = zlib
    _GZIP_BACKEND = "zlib-" + zlib.ZLIB_RUNTIME_VERSION
    _GZIP_LEVEL = 1

_ZSTD_LEVEL = 3


def compression_id(kind: str) -> str:
    """Names the exact encoder, so cache keys change when a different encoder would change the bytes."""
    if kind == "gzip":
        return f"gzip/{_GZIP_BACKEND}/l{_GZIP_LEVEL}"
    if kind == "zstd":
        import zstandard

        return f"zstd/{zstandard.__version__}/l{_ZSTD_LEVEL}"
    raise ValueError(kind)


def media_type_for(kind: str) -> str:
    return {"gzip": MEDIA_OCI_LAYER_GZIP, "zstd": MEDIA_OCI_LAYER_ZSTD}[kind]


class _Encoder(Protocol):
    def compress(self, data: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class _GzipEncoder:
    def __init__(self) -> None:
        self._obj = _deflate_lib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, -15)
        self._crc = 0
        self._size = 0
        self._started = False

    def compress(self, data: bytes) -> bytes:
        self._crc = _deflate_lib.crc32(data, self._crc)
        self._size += len(data)
        out = self._obj.compress(data)
        if not self._started:
            self._started = True
            return GZIP_HEADER + out
        return out

    def finish(self) -> bytes:
        head = b"" if self._started else GZIP_HEADER
        return head + self._obj.flush() + struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF)


class _ZstdEncoder:
    def __init__(self) -> None:
        import zstandard

        self._obj = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_content_size=False).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def finish(self) -> bytes:
        return self._obj.flush()


def _encoder(kind: str) -> _Encoder:
    return _GzipEncoder() if kind == "gzip" else _ZstdEncoder()


@dataclass(frozen=True)
class BlobResult:
    digest: str  # sha256 of the compressed bytes
    diff_id: str  # sha256 of the uncompressed bytes
    size: int  # compressed size
    uncompressed_size: int


class BlobWriter:
    """A file-like sink: ``write()`` uncompressed tar bytes, ``close()`` returns the blob's identity.

    The blob goes to ``path`` (the caller's temp file; it renames it into place). One compressed member or
    frame per writer, so blobs from several writers concatenate into one valid stream.
    """

    def __init__(self, path: Path, kind: str = "gzip") -> None:
        self._file = open(path, "wb")
        self._encoder = _encoder(kind)
        self._raw = hashlib.sha256()
        self._packed = hashlib.sha256()
        self._raw_size = 0
        self._size = 0
        self._buf: list[bytes] = []
        self._buf_len = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pyimage-compress", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> int:
        self._buf.append(data)
        self._buf_len += len(data)
        if self._buf_len >= _BUFFER:
            self._push()
        return len(data)

    def _push(self) -> None:
        if self._error is not None:
            raise self._error
        chunk = b"".join(self._buf)
        self._buf.clear()
        self._buf_len = 0
        self._queue.put(chunk)

    def _emit(self, data: bytes) -> None:
        if data:
            self._packed.update(data)
            self._size += len(data)
            self._file.write(data)

    def _run(self) -> None:
        try:
            while True:
                chunk = self._queue.get()
                if chunk is None:
                    break
                self._raw.update(chunk)
                self._raw_size += len(chunk)
                self._emit(self._encoder.compress(chunk))
            self._emit(self._encoder.finish())
        except BaseException as exc:  # surfaced to the producer on its next write or at close
            self._error = exc
            while self._queue.get() is not None:  # drain so the producer never blocks
                pass

    def close(self) -> BlobResult:
        if self._buf:
            self._push()
        self._queue.put(None)
        self._thread.join()
        self._file.close()
        if self._error is not None:
            raise self._error
        return BlobResult(
            "sha256:" + self._packed.hexdigest(), "sha256:" + self._raw.hexdigest(), self._size, self._raw_size
        )

    def abort(self) -> None:
        """Stops the worker and closes the file; the caller deletes its temp path."""
        self._buf.clear()
        self._queue.put(None)
        self._thread.join()
        self._file.close()

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None and not self._file.closed:
            self.abort()


def decompress_stream(path: Path, media_type: str, chunk: int = _BUFFER) -> Iterator[bytes]:
    """Yields the uncompressed bytes of a layer blob (gzip members / zstd frames concatenated are fine)."""
    with open(path, "rb") as f:
        if media_type.endswith("+zstd") or media_type.endswith(".zstd"):
            import zstandard

            reader = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
            while data := reader.read(chunk):
                yield data
            return
        if not (media_type.endswith("gzip") or media_type.endswith("+gzip")):
            while data := f.read(chunk):
                yield data
            return
        yield from _gunzip_members(f, chunk)


def _gunzip_members(f: BinaryIO, chunk: int) -> Iterator[bytes]:
    """Inflates a stream of concatenated gzip members (how ``site-packages`` layers are assembled)."""
    obj = _deflate_lib.decompressobj(16 + zlib.MAX_WBITS)
    while data := f.read(chunk):
        while data:
            out = obj.decompress(data)
            if out:
                yield out
            if not obj.eof:
                break
            data = obj.unused_data  # the next member starts here
            obj = _deflate_lib.decompressobj(16 + zlib.MAX_WBITS)
    tail = obj.flush()
    if tail:
        yield tail


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(_BUFFER):
            h.update(data)
    return "sha256:" + h.hexdigest()

