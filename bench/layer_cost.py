"""Where a cold heavy layer's time goes: each pass over the bytes alone, then the real ``build_layer``.

    python3 bench/layer_cost.py [WHEEL] [--repeat N]    (default: the torch wheel in /opt/wheels)

Each stage is timed on its own, on one core, in memory (the wheel's members and the layer tar are held in RAM so
no stage pays for another): the wheel's way into the cache (copied and hashed in one read across file systems,
hashed in place when hard-linked), inflating its members (isal),
the RECORD sha256 over the inflated bytes, the tar writer's own work (headers, padding, copies; measured as the
install into a null sink minus inflate and RECORD sha256), deflate (``compress_chunk``: the layer's gzip encoder),
sha256 of the compressed blob (digest) and of the tar (diff_id). Then ``build_layer`` on a fresh cache, wall time
and CPU time of the whole process (all threads), and the machine's limit for the layer: every stage's work
spread evenly over the cores (no pipeline does better; the copy into the cache is not part of the layer).

Figures are medians over ``--repeat`` runs (and the best run of the real layer: on a shared machine the best is
the closest to what the code costs). Read the ratios more than the seconds.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from pyimage.cache import Cache  # noqa: E402
from pyimage.hashing import copy_hashing  # noqa: E402
from pyimage.layers import install as _install  # noqa: E402
from pyimage.layers.build import LayerContext, build_layer  # noqa: E402
from pyimage.layers.compress import CHUNK_SIZE, BlobWriter, compress_chunk, compress_workers  # noqa: E402
from pyimage.layers.install import install_wheel  # noqa: E402
from pyimage.layers.paths import InstallPaths  # noqa: E402
from pyimage.layers.plan import LayerSpec  # noqa: E402
from pyimage.layers.zipmember import open_member  # noqa: E402
from pyimage.layers.tar import TarWriter  # noqa: E402
from pyimage.wheels import read_wheel  # noqa: E402

CHUNK = 1 << 20


class _Null:
    def write(self, data: bytes) -> int:
        return len(data)


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def members(wheel: Path) -> list[bytes]:
    out = []
    with zipfile.ZipFile(wheel) as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            out.append(open_member(zf, info).read())
    return out


def inflate(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            f = open_member(zf, info)
            while f.read(CHUNK):
                pass


def sha256_chunks(blobs: list[bytes]) -> None:
    for data in blobs:
        h = hashlib.sha256()
        for i in range(0, len(data), CHUNK):
            h.update(data[i : i + CHUNK])


def deflate(data: bytes) -> bytes:
    """The layer's gzip members, one ``CHUNK_SIZE`` chunk after another on this core."""
    view = memoryview(data)
    return b"".join(compress_chunk("gzip", view[i : i + CHUNK_SIZE]) for i in range(0, len(data), CHUNK_SIZE))


def layer_tar(wheel: Path) -> bytes:
    buf = io.BytesIO()
    tw = TarWriter(buf)
    install_wheel(wheel, tw, InstallPaths())
    tw.finish()
    return buf.getvalue()


def blob_writer(tar: bytes, out: Path, workers: int) -> None:
    sink = BlobWriter(out, "gzip", workers=workers)
    for i in range(0, len(tar), CHUNK):
        sink.write(tar[i : i + CHUNK])
    sink.close()


def copy_into_cache(wheel: Path, root: Path) -> None:
    """What ``Cache.add_wheel`` does when it cannot hard-link: copy and hash in one read."""
    dest = root / wheel.name
    copy_hashing(wheel, dest)
    dest.unlink()


def hash_file(path: Path) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(CHUNK):
            h.update(data)


def cold_layer(wheel: Path, root: Path) -> tuple[float, float, float, str, str]:
    """Wall seconds, CPU seconds (all threads, then the caller's thread alone) of ``build_layer`` for one heavy
    wheel on an empty cache, and its digest and diff_id. The caller's thread is the pipeline's one serial stage
    (inflate, tar), so its CPU time is the wall time an idle machine cannot beat."""
    cache_dir = Path(tempfile.mkdtemp(dir=root))
    w = read_wheel(wheel)
    ctx = LayerContext(cache=Cache(cache_dir), paths=InstallPaths())
    spec = LayerSpec("heavy:" + w.name, "heavy", (w,))
    cpu0, own0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
    layer = build_layer(spec, ctx)
    wall, cpu, own = time.perf_counter() - wall0, time.process_time() - cpu0, time.thread_time() - own0
    shutil.rmtree(cache_dir)
    return wall, cpu, own, layer.digest, layer.diff_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", nargs="?", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-stages", action="store_true", help="only the real build_layer")
    args = parser.parse_args()
    wheel = Path(args.wheel) if args.wheel else Path(sorted(glob.glob("/opt/wheels/torch-*.whl"))[-1])
    repeat = max(1, args.repeat)
    work = Path(tempfile.mkdtemp(prefix="pyimage-layer-cost-"))
    try:
        print(f"{wheel.name}: wheel {wheel.stat().st_size / 1e6:.0f} MB, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
        rows: list[tuple[str, float, float]] = []  # (stage, seconds, MB it passes over)
        if not args.skip_stages:
            wheel_mb = wheel.stat().st_size / 1e6
            rows.append(("copy+hash wheel into cache", median_time(lambda: copy_into_cache(wheel, work), repeat), wheel_mb))
            rows.append(("sha256 of the wheel (linked in)", median_time(lambda: hash_file(wheel), repeat), wheel_mb))
            rows.append(("inflate (isal)", median_time(lambda: inflate(wheel), repeat), 0.0))
            files = members(wheel)
            files_mb = sum(map(len, files)) / 1e6
            rows[-1] = (rows[-1][0], rows[-1][1], files_mb)
            record = median_time(lambda: sha256_chunks(files), repeat)
            rows.append(("RECORD sha256 (members)", record, files_mb))
            del files
            offload = _install._RecordChecks.OFFLOAD_MIN
            _install._RecordChecks.OFFLOAD_MIN = 1 << 62  # every RECORD hash inline, so the difference is the tar's
            try:
                install = median_time(lambda: install_wheel(wheel, TarWriter(_Null()), InstallPaths()), repeat)
            finally:
                _install._RecordChecks.OFFLOAD_MIN = offload
            tar = layer_tar(wheel)
            tar_mb = len(tar) / 1e6
            rows.append(("tar writer (own work)", max(0.0, install - rows[2][1] - record), tar_mb))
            packed = deflate(tar)
            rows.append(("deflate (libdeflate l1, 1 core)", median_time(lambda: deflate(tar), repeat), tar_mb))
            rows.append(("digest sha256 (blob)", median_time(lambda: sha256_chunks([packed]), repeat), len(packed) / 1e6))
            rows.append(("diff_id sha256 (tar)", median_time(lambda: sha256_chunks([tar]), repeat), tar_mb))
            out = work / "blob"
            rows.append(("write blob file", median_time(lambda: out.write_bytes(packed), repeat), len(packed) / 1e6))
            # The compressor stage as the layer uses it (chunks, pool, ordered digest and diff_id), fed from memory:
            # not a stage of its own (the sum below leaves it out), but what the tar producer can hand off to.
            writers = [(f"BlobWriter, {n} worker{'s' if n > 1 else ''}", n) for n in sorted({1, compress_workers()})]
            handoff = [(name, median_time(lambda n=n: blob_writer(tar, out, n), repeat), tar_mb) for name, n in writers]
            del tar, packed
            print(f"\n{'stage (one core, in memory)':32} {'s':>7} {'MB':>7} {'MB/s':>7}")
            for name, secs, mb in rows:
                print(f"{name:32} {secs:7.2f} {mb:7.0f} {mb / secs if secs else 0:7.0f}")
            for name, secs, mb in handoff:
                print(f"{name:32} {secs:7.2f} {mb:7.0f} {mb / secs if secs else 0:7.0f}")
            total = sum(secs for _, secs, _ in rows[2:])
            cores = os.cpu_count() or 1
            limit = total / cores
            print(f"{'sum of layer stages (1 core)':32} {total:7.2f}")
            print(f"{'limit: spread over ' + str(cores) + ' cores':32} {limit:7.2f}")
        results = [cold_layer(wheel, work) for _ in range(repeat)]
        wall = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        own = statistics.median(r[2] for r in results)
        digests = {(r[3], r[4]) for r in results}
        best = min(r[0] for r in results)
        print(f"\nbuild_layer, cold: {wall:.2f} s wall (best {best:.2f}), {cpu:.2f} s CPU ({cpu / wall:.2f} cores busy), caller's thread {own:.2f} s CPU")
        if not args.skip_stages:
            print(f"ratio to the limit: {wall / limit:.2f}x")
        for digest, diff_id in sorted(digests):
            print(f"digest  {digest}\ndiff_id {diff_id}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
