"""Layer blobs: tar bytes in, compressed blob file out, digest and diff_id computed in the same pass.

Compression is the hot path of a cold build, so it runs off the caller's thread and on every core: the tar
stream is cut into fixed ``CHUNK_SIZE`` chunks, each compressed on its own into a complete gzip member (or zstd
frame) by a shared pool of workers (libdeflate, zstandard and hashlib release the GIL), and one ordered writer thread
hashes the tar bytes (diff_id), hashes and writes the compressed members in stream order (digest). Concatenated
members are one valid gzip stream (zstd: one stream of frames) that every engine reads, and the cut points depend
only on the byte count, so the blob is the same whatever the number of workers or the size of the writes.

Each gzip member is a raw-deflate body between a fixed 10-byte header (no name, mtime 0, OS unknown) and its
CRC/size trailer, so the bytes depend only on the input and the backend, never on the clock or the file name.
"""

from __future__ import annotations

import hashlib
import os
import queue
import struct
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from pyimage.oci.model import MEDIA_OCI_LAYER, MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_LAYER_ZSTD

__all__ = [
    "COMPRESSIONS",
    "CHUNK_SIZE",
    "BlobResult",
    "BlobWriter",
    "compress_workers",
    "compression_id",
    "encoder_tag",
    "media_type_for",
    "decompress_stream",
]

COMPRESSIONS = ("gzip", "zstd", "none")  # none: plain tar (what docker build stores; its digest is its diff_id)
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
# Fixed, never derived from the core count: the blob's bytes depend on where the stream is cut. Part of
# compression_id, so layer keys change with it. Small enough that a 10 MB wheel already spreads over the cores
# and the tail left after the last write is short; large enough that a member's 18 bytes of framing and fresh
# deflate window cost nothing measurable (bench/layer_cost.py).
CHUNK_SIZE = 4 << 20
_BUFFER = 1 << 20

# The gzip encoder is libdeflate (the ``deflate`` binding, which bundles it): portable C whose output is a function
# of the input, the level and its version alone. isal's igzip, used before (2.4x as fast), writes other bytes on
# aarch64 and on an x86-64 CPU without SSE4.2 than here, and twice in tests wrote another equally long encoding of
# the same chunk: the same diff_id under another digest (tests: test_layer_blobs_are_the_same_bytes_on_a_cpu_*,
# test_layer_blobs_built_on_arm64_*). Inflating stays with isal: any correct inflater gives the same bytes.
try:
    import deflate as _libdeflate

    _GZIP_BACKEND = "libdeflate-" + _libdeflate.__version__  # each binding release pins the libdeflate it bundles
    _GZIP_LEVEL = 1  # bench/compression.py: level 1 is the fastest, and still smaller than igzip level 1

    def _deflate_raw(data: bytes | memoryview) -> bytes | bytearray:
        return _libdeflate.deflate_compress(data, _GZIP_LEVEL)

    _crc32: Callable[[bytes | memoryview], int] = _libdeflate.crc32
except ImportError:  # pragma: no cover - deflate is a declared dependency; zlib is deterministic too, slower
    _GZIP_BACKEND = "zlib-" + zlib.ZLIB_RUNTIME_VERSION
    _GZIP_LEVEL = 1

    def _deflate_raw(data: bytes | memoryview) -> bytes | bytearray:
        obj = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, -15)
        return obj.compress(data) + obj.flush()

    _crc32 = zlib.crc32

try:  # isal inflates about 2x zlib (bench/compression.py); only for reading blobs back
    from isal import isal_zlib as _inflate_lib
except ImportError:  # pragma: no cover - isal is a declared dependency
    _inflate_lib = zlib  # type: ignore[misc]

_ZSTD_LEVEL = 3


def compression_id(kind: str) -> str:
    """Names the exact encoder and chunking, so cache keys change when either would change the bytes."""
    chunk = f"c{CHUNK_SIZE >> 20}m"
    if kind == "gzip":
        return f"gzip/{_GZIP_BACKEND}/l{_GZIP_LEVEL}/{chunk}"
    if kind == "zstd":
        import zstandard

        return f"zstd/{zstandard.__version__}/l{_ZSTD_LEVEL}/{chunk}"
    if kind == "none":
        return "none"
    raise ValueError(kind)


def encoder_tag(kind: str) -> str:
    """``kind`` and a short hash of its ``compression_id``: for cache keys spelled by hand (a base's compressed
    layers), so a blob of another encoder or chunking is never taken for this one's."""
    if kind == "none":
        return kind
    return f"{kind}-{hashlib.sha256(compression_id(kind).encode()).hexdigest()[:16]}"


def media_type_for(kind: str) -> str:
    return {"gzip": MEDIA_OCI_LAYER_GZIP, "zstd": MEDIA_OCI_LAYER_ZSTD, "none": MEDIA_OCI_LAYER}[kind]


def _done(chunk: Any) -> "Future[Any]":
    """A chunk that needs no work (a plain tar's): handed to the writer thread as it is."""
    done: Future[Any] = Future()
    done.set_result(chunk)
    return done


def compress_chunk(kind: str, data: bytes | memoryview) -> bytes:
    """``data`` as one complete gzip member or zstd frame: a pure function of the bytes, run on any thread."""
    if kind == "none":
        return bytes(data)
    if kind == "gzip":
        body = _deflate_raw(data)
        trailer = struct.pack("<II", _crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
        return GZIP_HEADER + body + trailer
    import zstandard

    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_content_size=False).compress(data)


# One layer's tar is produced by one thread (inflate + tar, ~500 MB/s) and deflate runs at about that speed per
# core, so a few workers keep every layer being built fed; more would only hold more chunks in memory (a runner
# with a CPU quota still shows all the host's cores).
_MAX_WORKERS = 4


def compress_workers() -> int:
    """How many threads compress chunks: the cores this process may run on, at most ``_MAX_WORKERS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, _MAX_WORKERS))


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """One pool per size for the whole process: layers built in parallel share the cores instead of each
    starting a pool of its own."""
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pyimage-compress")
        return pool


@dataclass(frozen=True)
class BlobResult:
    digest: str  # sha256 of the compressed bytes
    diff_id: str  # sha256 of the uncompressed bytes ("" for a part of a layer: BlobWriter(diff_id=False))
    size: int  # compressed size
    uncompressed_size: int


_Item = tuple["memoryview | bytes", "Future[bytes]"]


class BlobWriter:
    """A file-like sink: ``write()`` uncompressed tar bytes, ``close()`` returns the blob's identity.

    The blob goes to ``path`` (the caller's temp file; it renames it into place). It is a sequence of complete
    members or frames, so blobs from several writers concatenate into one valid stream. ``workers`` sizes the
    compression pool (default: ``compress_workers()``); it changes the speed, never the bytes.

    A blob of less than one chunk (most layers but the heavy ones) is compressed on the caller's thread at
    ``close()``: no thread is started for it.
    """

    def __init__(self, path: Path, kind: str = "gzip", *, workers: int | None = None, tee: Callable[[Any], object] | None = None, diff_id: bool = True) -> None:
        if kind not in COMPRESSIONS:
            raise ValueError(kind)
        # A part of a layer (layers/build.py) has no diff_id of its own: the layer's is hashed over all its parts
        # (``tee``), so hashing each part too is one sha256 pass over every byte for nothing. A plain tar's digest
        # is its diff_id: always hashed.
        self._hash_diff_id = diff_id or kind == "none"
        self._file = open(path, "wb")
        self._kind = kind
        self._workers = workers if workers is not None else compress_workers()
        self._raw = hashlib.sha256()
        self._packed = hashlib.sha256()
        self._raw_size = 0
        self._size = 0
        self._pending: list[bytes] = []  # written since the last cut, less than one chunk in all
        self._pending_len = 0
        self._queue: queue.Queue[_Item | None] | None = None  # made with the first full chunk
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._tee = tee  # also given every uncompressed byte, in stream order (a hash running over several blobs)

    def write(self, data: bytes) -> int:
        n = len(data)
        if n:
            self._pending.append(data)
            self._pending_len += n
            if self._pending_len >= CHUNK_SIZE:
                self._cut()
        return n

    def _cut(self) -> None:
        """Hands every whole chunk over (views of one joined buffer: each byte is copied once) and keeps the rest."""
        joined = b"".join(self._pending)
        whole = len(joined) - len(joined) % CHUNK_SIZE
        view = memoryview(joined)
        for offset in range(0, whole, CHUNK_SIZE):
            self._submit(view[offset : offset + CHUNK_SIZE])
        rest = joined[whole:]
        self._pending = [rest] if rest else []
        self._pending_len = len(rest)

    def _submit(self, chunk: memoryview | bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._queue is None:
            # Chunks waiting for the writer: bounds memory (about (workers + 3) x CHUNK_SIZE) while keeping
            # every worker fed.
            self._queue = queue.Queue(self._workers + 1)
            self._thread = threading.Thread(target=self._run, name="pyimage-blob-writer", daemon=True)
            self._thread.start()
        self._queue.put((chunk, _pool(self._workers).submit(compress_chunk, self._kind, chunk) if self._kind != "none" else _done(chunk)))

    def _hash_raw(self, chunk: bytes | memoryview) -> None:
        if self._hash_diff_id:
            self._raw.update(chunk)
        if self._tee is not None:
            self._tee(chunk)
        self._raw_size += len(chunk)

    def _emit(self, packed: bytes) -> None:
        if self._kind != "none":  # a plain tar's digest is its diff_id: hashed once, in _hash_raw
            self._packed.update(packed)
        self._size += len(packed)
        self._file.write(packed)

    def _run(self) -> None:
        """The ordered stage: diff_id over the chunks and digest over their members, in stream order."""
        assert self._queue is not None
        try:
            while (item := self._queue.get()) is not None:
                chunk, future = item
                self._hash_raw(chunk)  # overlaps the chunk's compression on a worker
                self._emit(future.result())
        except BaseException as exc:  # surfaced to the producer on its next chunk or at close
            self._error = exc
            while (item := self._queue.get()) is not None:  # drain so the producer never blocks
                item[1].cancel()

    def close(self) -> BlobResult:
        last = b"".join(self._pending)
        self._pending = []
        if self._queue is None:  # at most one chunk: no thread, compressed right here
            self._hash_raw(last)
            self._emit(compress_chunk(self._kind, last))
        else:
            if last and self._error is None:
                self._queue.put((last, _pool(self._workers).submit(compress_chunk, self._kind, last) if self._kind != "none" else _done(last)))
            self._stop()
        self._file.close()
        if self._error is not None:
            raise self._error
        diff_id = "sha256:" + self._raw.hexdigest() if self._hash_diff_id else ""
        digest = diff_id if self._kind == "none" else "sha256:" + self._packed.hexdigest()
        return BlobResult(digest, diff_id, self._size, self._raw_size)

    def _stop(self) -> None:
        if self._queue is not None and self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def abort(self) -> None:
        """Stops the writer thread and closes the file; the caller deletes its temp path."""
        self._pending = []
        self._stop()
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
    obj = _inflate_lib.decompressobj(16 + zlib.MAX_WBITS)
    while data := f.read(chunk):
        while data:
            out = obj.decompress(data)
            if out:
                yield out
            if not obj.eof:
                break
            data = obj.unused_data  # the next member starts here
            obj = _inflate_lib.decompressobj(16 + zlib.MAX_WBITS)
    tail = obj.flush()
    if tail:
        yield tail

