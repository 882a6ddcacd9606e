"""Same inputs, same bytes, whatever the number of layer jobs and compression workers.

A blob is cut into fixed ``CHUNK_SIZE`` chunks, each compressed as its own gzip member or zstd frame by a pool of
workers; these tests build the same blobs and layers with one and with two workers (and one and two layer jobs)
and compare them byte for byte, with numpy's wheel (71 MB of tar: 17 chunks) as the large input.
The diff_ids are pinned to what the writer produced before chunking: only the compressed bytes may change.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import platform
import random
import shutil
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
import zstandard

from pyimage.cache import Cache
from pyimage.layers.build import LayerContext, build_layer
from pyimage.layers.compress import CHUNK_SIZE, BlobWriter, compress_chunk
from pyimage.layers.conflicts import wheel_files
from pyimage.layers.paths import InstallPaths
from pyimage.layers.plan import LayerSpec
from pyimage.oci.check import check_image
from pyimage.oci.layout import write_layout
from pyimage.oci.model import Image, Layer
from pyimage.wheels import Wheel, read_wheel
from support.encoder import ENCODE, wheel_content
from wheels_fixture import download_wheel

PATHS = InstallPaths("/opt/venv", "3.11")
NUMPY = "numpy==2.0.2"
# diff_ids written by the layer writer before chunked compression (LAYER_FORMAT 2), for the same wheels and paths.
DIFF_IDS_BEFORE = {
    "heavy:six": "sha256:b27d6eac7648a229eb829344d6c70ebe29e894228b70ce27f2ca36cf523c2ac6",
    "site-packages": "sha256:0e80756cdd31f4635a06621e84990247bf2140cd62779b58a9aee4dd2e361a5d",
}
# numpy's wheel differs by interpreter and platform: pinned for the cp311 manylinux x86_64 file.
NUMPY_CP311_SHA256 = "13e689d772146140a252c3a28501da66dfecd77490b498b168b501835041f951"
NUMPY_DIFF_ID_BEFORE = "sha256:c4254c68a7bc5d849e82c8e4e150cd413a34f83d52a6940259de2bd1330a2b97"


def gzip_members(blob: bytes) -> int:
    """How many gzip members ``blob`` holds (each must be complete)."""
    count = 0
    while blob:
        obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
        obj.decompress(blob)
        assert obj.eof, "a truncated member"
        blob = obj.unused_data
        count += 1
    return count


def zstd_frames(blob: bytes) -> int:
    count = 0
    while blob:
        obj = zstandard.ZstdDecompressor().decompressobj()
        obj.decompress(blob)
        blob = obj.unused_data
        count += 1
    return count


def members(blob: bytes) -> list[tuple[bytes, bytes]]:
    """``(compressed member, its inflated bytes)`` for each gzip member of ``blob``."""
    out = []
    while blob:
        obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
        raw = obj.decompress(blob)
        rest = obj.unused_data
        out.append((blob[: len(blob) - len(rest)], raw))
        blob = rest
    return out


def first_differing_member(one: bytes, two: bytes) -> str:
    """Where two gzip blobs of the same content part: which member, its sizes, whether it inflates alike (a
    compressor that is not deterministic) or not (a fragment chosen or written differently)."""
    a, b = members(one), members(two)
    for i, ((pa, ra), (pb, rb)) in enumerate(zip(a, b)):
        if pa != pb:
            at = sum(len(p) for p, _ in a[:i])
            same = "the same bytes" if ra == rb else "different bytes"
            return f"member {i} of {len(a)}/{len(b)} at offset {at}: {len(pa)}/{len(pb)} bytes compressed, {len(ra)}/{len(rb)} inflated, to {same}"
    return f"{len(a)}/{len(b)} members, none differs"


def write_blob(path: Path, kind: str, data: bytes, workers: int, piece: int) -> tuple[bytes, object]:
    sink = BlobWriter(path, kind, workers=workers)
    for i in range(0, len(data), piece):
        sink.write(data[i : i + piece])
    result = sink.close()
    return path.read_bytes(), result


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_blob_bytes_depend_on_the_input_alone_not_on_workers_or_write_sizes(kind: str, tmp_path: Path) -> None:
    rng = random.Random(7)
    data = b"".join(rng.randbytes(4096) * rng.randint(1, 64) for _ in range(200))[: 3 * CHUNK_SIZE + 4321]
    assert len(data) == 3 * CHUNK_SIZE + 4321

    one, r1 = write_blob(tmp_path / "one", kind, data, workers=1, piece=1 << 20)
    two, r2 = write_blob(tmp_path / "two", kind, data, workers=2, piece=300_001)
    three, r3 = write_blob(tmp_path / "three", kind, data, workers=3, piece=len(data))

    # each member is the chunk compressed on its own: which one differs, and whether it inflates alike, says whether
    # the compressor or the chunking went astray (a one-off mismatch of this kind was seen once in a full run)
    serial = b"".join(compress_chunk(kind, data[i : i + CHUNK_SIZE]) for i in range(0, len(data), CHUNK_SIZE))
    for name, blob in (("workers=1", one), ("workers=2", two), ("workers=3", three)):
        assert blob == serial, f"{name}: " + (first_differing_member(serial, blob) if kind == "gzip" else f"{len(blob)}/{len(serial)} bytes")
    assert r1 == r2 == r3
    assert r1.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()  # type: ignore[attr-defined]
    assert r1.digest == "sha256:" + hashlib.sha256(one).hexdigest()  # type: ignore[attr-defined]
    if kind == "gzip":
        assert gzip_members(one) == 4  # three full chunks and the rest, each a complete member
        assert gzip.decompress(one) == data
    else:
        assert zstd_frames(one) == 4
        assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(one), read_across_frames=True).read() == data


def test_a_blob_of_exactly_one_chunk_is_one_member(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(CHUNK_SIZE)
    blob, result = write_blob(tmp_path / "b", "gzip", data, workers=2, piece=65536)
    assert gzip_members(blob) == 1
    assert gzip.decompress(blob) == data
    assert result.uncompressed_size == CHUNK_SIZE  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def numpy_wheel(test_cache_dir: Path) -> Wheel:
    return read_wheel(download_wheel(NUMPY, test_cache_dir / "wheels"))


# -- the encoder: the same bytes on every CPU ------------------------------------------------------------------
# isal's igzip (the gzip encoder before libdeflate) wrote other bytes for every chunk of this input on a CPU without
# SSE4.2 (qemu64), and on aarch64 (tests/e2e/test_platforms.py): a layer's digest depended on the building machine.
@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_layer_blobs_are_the_same_bytes_on_a_cpu_without_sse4_or_avx(kind: str, numpy_wheel: Wheel, tmp_path: Path) -> None:
    qemu = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
    if platform.machine() != "x86_64" or qemu is None:
        reason = "needs an x86_64 host with qemu-user-static (apt-get install qemu-user-static; see .ci/run)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes") and platform.machine() == "x86_64":
            pytest.fail(f"CI is set but {reason}", pytrace=False)
        pytest.skip(reason)
    assert numpy_wheel.path is not None
    data = tmp_path / "data"
    data.write_bytes(wheel_content(numpy_wheel.path, 2 * CHUNK_SIZE + 123_457))  # two full chunks and a tail

    here = subprocess.run([sys.executable, "-c", ENCODE, str(data), kind], capture_output=True, text=True, check=True)
    # qemu64: the x86-64 baseline (SSE2; no SSE4.2, AVX, AVX2 or AVX-512): every CPU-dispatched path takes its fallback
    there = subprocess.run([qemu, "-cpu", "qemu64", sys.executable, "-c", ENCODE, str(data), kind], capture_output=True, text=True)
    assert there.returncode == 0, there.stderr[-2000:]
    assert len(here.stdout.splitlines()) == 4  # the encoder's id and three members
    assert there.stdout == here.stdout


def build_all(specs: list[LayerSpec], cache: Path, *, jobs: int, workers: int) -> list[Layer]:
    """The layers of ``specs``, ``jobs`` at a time, the way ``build_image`` runs them (biggest first)."""
    ctx = LayerContext(cache=Cache(cache), paths=PATHS, compress_workers=workers)
    for spec in specs:  # the conflict check records these before layer work: a cold assembled layer streams its diff_id
        for wheel in spec.wheels:
            wheel_files(wheel, PATHS, ctx.cache)
    order = sorted(range(len(specs)), key=lambda i: -specs[i].installed_size)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {i: pool.submit(build_layer, specs[i], ctx) for i in order}
        return [futures[i].result() for i in range(len(specs))]


# numpy 2.0.2 ships one .pyc under __pycache__, which installer skips with a RuntimeWarning (also under -W error).
@pytest.mark.filterwarnings("ignore:Skip installing:RuntimeWarning")
def test_layers_are_identical_with_one_or_two_jobs_and_compression_workers(
    numpy_wheel: Wheel, real_wheels: dict[str, Path], tmp_path: Path
) -> None:
    six, wheel = read_wheel(real_wheels["six"]), read_wheel(real_wheels["wheel"])
    specs = [
        LayerSpec("heavy:numpy", "heavy", (numpy_wheel,)),
        LayerSpec("heavy:six", "heavy", (six,)),
        LayerSpec("site-packages", "site-packages", (six, wheel)),
        LayerSpec("deps", "site-packages", (wheel, numpy_wheel)),
    ]
    serial = build_all(specs, tmp_path / "serial", jobs=1, workers=1)
    parallel = build_all(specs, tmp_path / "parallel", jobs=2, workers=2)

    for a, b in zip(serial, parallel):
        assert (a.name, a.diff_id, a.descriptor.size) == (b.name, b.diff_id, b.descriptor.size)
        one, two = a.blob.read_bytes(), b.blob.read_bytes()
        assert one == two, f"{a.name}: {first_differing_member(one, two)}"
        assert a.digest == b.digest
    numpy_blob = parallel[0].blob.read_bytes()
    assert parallel[0].uncompressed_size > 4 * CHUNK_SIZE  # type: ignore[operator]
    assert gzip_members(numpy_blob) == -(-parallel[0].uncompressed_size // CHUNK_SIZE)  # type: ignore[operator]
    assert gzip_members(parallel[3].blob.read_bytes()) > 4  # assembled: the fragments' members, concatenated

    by_name = {layer.name: layer.diff_id for layer in parallel}
    assert {name: by_name[name] for name in DIFF_IDS_BEFORE} == DIFF_IDS_BEFORE
    if numpy_wheel.sha256 == NUMPY_CP311_SHA256:
        assert by_name["heavy:numpy"] == NUMPY_DIFF_ID_BEFORE

    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in parallel]},
        "history": [{"created_by": layer.name, "comment": "pyimage"} for layer in parallel],
    }
    write_layout(Image(config=config, layers=tuple(parallel)), tmp_path / "layout", "t")
    report = check_image(tmp_path / "layout")
    assert report.ok, report.findings


# -- the diff_id of an assembled layer: fragments inflated on a thread ahead of the hash ----------------------
def test_items_produced_ahead_arrive_in_order_and_a_failure_reaches_the_consumer() -> None:
    from pyimage.layers.build import _ahead

    with _ahead(iter([b"%d" % i for i in range(100)]), depth=3) as items:
        assert list(items) == [b"%d" % i for i in range(100)]

    def broken() -> Iterator[bytes]:
        yield b"first"
        raise zlib.error("invalid stored block lengths")

    with pytest.raises(zlib.error, match="invalid stored block"), _ahead(broken()) as items:
        assert next(items) == b"first"
        list(items)


def test_leaving_early_stops_the_producing_thread() -> None:
    import threading

    from pyimage.layers.build import _ahead

    before = {t.ident for t in threading.enumerate()}
    with _ahead((b"x" * 1024 for _ in range(10_000)), depth=2) as items:
        next(items)
    assert {t.ident for t in threading.enumerate() if t.name == "pyimage-inflate"} - before == set()


def test_the_mismatch_report_names_the_member_and_whether_it_inflates_alike() -> None:
    data = random.Random(11).randbytes(1000) * 50
    fast = gzip.compress(data[:20_000], compresslevel=1, mtime=0) + gzip.compress(data[20_000:], compresslevel=1, mtime=0)
    best = gzip.compress(data[:20_000], compresslevel=1, mtime=0) + gzip.compress(data[20_000:], compresslevel=9, mtime=0)
    assert first_differing_member(fast, best).startswith("member 1 of 2/2 at offset ")
    assert first_differing_member(fast, best).endswith("to the same bytes")
    assert first_differing_member(fast, fast) == "2/2 members, none differs"
