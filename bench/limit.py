"""The machine's limit for a build scenario: how fast this machine can do the byte work the scenario cannot avoid.

A scenario that makes new layers must at least inflate the wheels that go into them, deflate the new layer tars
(pyimage's own encoder, ``compress_chunk``: libdeflate level 1 in chunks, spread over every core) and sha256 them twice (diff_id of the tar, digest of the
blob; the blob is smaller than the tar, so hashing the tar twice is a slight over-estimate). Resolution, process
start-up and metadata are not in the limit: it is a floor for the bytes, not for the build. The rates are measured
in the same run as the builds, on the run's biggest wheel, so the limit moves with the machine and its load.
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from isal import isal_zlib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pyimage.layers.compress import CHUNK_SIZE, compress_chunk  # noqa: E402

SAMPLE_MAX = 256 << 20  # bytes of inflated wheel content to time on (torch's first 256 MB)
SAMPLE_MIN = 64 << 20  # small wheels are repeated to this size so a timing is not noise


@dataclass(frozen=True)
class Rates:
    """Bytes per second on this machine, all counted in uncompressed bytes."""

    inflate: float  # isal inflate of wheel members, one core (a wheel's members inflate one by one)
    deflate: float  # pyimage's gzip encoder (``compress_chunk``) on ``workers`` threads, chunk by chunk
    sha256: float  # hashlib sha256, one core
    workers: int
    sample: str  # the wheel the rates were measured on

    def limit(self, inflated: int, tar: int, compression: str = "gzip") -> float:
        """Seconds to inflate ``inflated`` wheel bytes, then deflate ``tar`` layer bytes and hash them twice;
        plain tar layers (``compression = "none"``) are neither deflated nor hashed twice (digest = diff_id)."""
        if compression == "none":
            return inflated / self.inflate + tar / self.sha256
        return inflated / self.inflate + tar / self.deflate + 2 * tar / self.sha256


def inflated_size(wheel: Path) -> int:
    """Sum of the members' uncompressed sizes, from the zip's central directory (nothing is inflated)."""
    with zipfile.ZipFile(wheel) as zf:
        return sum(info.file_size for info in zf.infolist())


def _deflated_members(wheel: Path) -> tuple[list[bytes], bytes]:
    """The raw deflate streams of the wheel's members (up to SAMPLE_MAX inflated), and their inflated bytes."""
    streams: list[bytes] = []
    plain = bytearray()
    with zipfile.ZipFile(wheel) as zf, open(wheel, "rb") as f:
        for info in sorted(zf.infolist(), key=lambda i: -i.file_size):
            if info.compress_type != zipfile.ZIP_DEFLATED or len(plain) >= SAMPLE_MAX:
                continue
            f.seek(info.header_offset)
            local = f.read(30)  # the local header: its name and extra lengths give where the data starts
            f.seek(info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little"))
            data = zf.read(info)
            streams.append(f.read(info.compress_size))
            plain += data
    return streams, bytes(plain)


def _best(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(wheel: Path, workers: int = 2, repeat: int = 3) -> Rates:
    """Rates measured on ``wheel`` (its biggest deflated members): the inflate, deflate and hash passes alone, in
    memory, so none pays for another or for the disk."""
    streams, plain = _deflated_members(wheel)
    if not plain:
        raise ValueError(f"{wheel}: no deflated member to measure on")
    copies = max(1, -(-SAMPLE_MIN // len(plain)))
    streams, plain = streams * copies, plain * copies

    def inflate() -> None:
        for s in streams:
            isal_zlib.decompress(s, -15)

    view = memoryview(plain)
    chunks = [view[i:i + CHUNK_SIZE] for i in range(0, len(plain), CHUNK_SIZE)]
    pool = ThreadPoolExecutor(workers)
    try:
        deflate_s = _best(lambda: list(pool.map(lambda c: compress_chunk("gzip", c), chunks)), repeat)
    finally:
        pool.shutdown()
    inflate_s = _best(inflate, repeat)
    sha_s = _best(lambda: hashlib.sha256(plain).digest(), repeat)
    n = len(plain)
    return Rates(n / inflate_s, n / deflate_s, n / sha_s, workers, wheel.name)
