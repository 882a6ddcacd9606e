"""Which deflate backend and level for layer blobs? Measured on a real wheel's uncompressed layer tar.

    python3 bench/compression.py [WHEEL]     (default: the torch wheel in /opt/wheels)

Prints MB/s (of uncompressed input, one core) and compressed size for zlib, zlib-ng (if installed:
`pip install zlib-ng`), isal (igzip), libdeflate and zstd at their useful levels, and inflate speed through
zipfile/zlib versus isal. pyimage inflates with isal (the fastest here). It deflates with libdeflate level 1, not
isal's faster igzip: igzip writes other bytes on another CPU (aarch64, or x86-64 without SSE4.2), so a layer's
digest would depend on the machine that built it (tests/e2e/test_platforms.py, tests/layers/test_workers.py).
"""

from __future__ import annotations

import glob
import io
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyimage.layers.install import InstallPaths, install_wheel  # noqa: E402
from pyimage.layers.tar import TarWriter  # noqa: E402

CHUNK = 1 << 20


def layer_tar(wheel: Path) -> bytes:
    buf = io.BytesIO()
    tw = TarWriter(buf)
    install_wheel(wheel, tw, InstallPaths())
    tw.finish()
    return buf.getvalue()


def timed(fn) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    size = fn()
    return time.perf_counter() - start, size


def deflate_with(module, level: int, data: bytes) -> int:  # type: ignore[no-untyped-def]
    obj = module.compressobj(level, zlib.DEFLATED, -15)
    size = 0
    for i in range(0, len(data), CHUNK):
        size += len(obj.compress(data[i : i + CHUNK]))
    return size + len(obj.flush())


def main() -> None:
    wheel = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(sorted(glob.glob("/opt/wheels/torch-*.whl"))[-1])
    data = layer_tar(wheel)
    mb = len(data) / 1e6
    print(f"{wheel.name}: layer tar {mb:.0f} MB, wheel {wheel.stat().st_size / 1e6:.0f} MB\n")
    rows: list[tuple[str, float, int]] = []
    rows.append(("zlib level 1", *timed(lambda: deflate_with(zlib, 1, data))))
    rows.append(("zlib level 6 (gzip default)", *timed(lambda: deflate_with(zlib, 6, data))))
    try:
        from zlib_ng import zlib_ng

        rows.append(("zlib-ng level 1", *timed(lambda: deflate_with(zlib_ng, 1, data))))
        rows.append(("zlib-ng level 6", *timed(lambda: deflate_with(zlib_ng, 6, data))))
    except ImportError:
        print("(zlib-ng not installed: pip install zlib-ng)")
    from isal import isal_zlib

    for level in (0, 1, 2, 3):
        rows.append((f"isal level {level}", *timed(lambda level=level: deflate_with(isal_zlib, level, data))))
    import deflate

    for level in (1, 2, 4, 6):
        rows.append((f"libdeflate level {level} (pyimage: 1)" if level == 1 else f"libdeflate level {level}", *timed(lambda level=level: len(deflate.deflate_compress(data, level)))))
    import zstandard

    for level in (1, 3):
        rows.append((f"zstd level {level}", *timed(lambda level=level: len(zstandard.ZstdCompressor(level=level).compress(data)))))
    print(f"{'compressor':30} {'MB/s':>8} {'size MB':>8} {'ratio':>6}")
    for name, secs, size in rows:
        print(f"{name:30} {mb / secs:8.0f} {size / 1e6:8.1f} {size / len(data):6.3f}")

    import zipfile

    def inflate_zipfile() -> int:
        n = 0
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                with zf.open(info) as f:
                    while chunk := f.read(CHUNK):
                        n += len(chunk)
        return n

    def inflate_isal() -> int:
        from pyimage.layers.zipmember import open_member

        n = 0
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                f = open_member(zf, info)
                while chunk := f.read(CHUNK):
                    n += len(chunk)
        return n

    print(f"\n{'inflate (whole wheel)':30} {'MB/s':>8}")
    for name, fn in (("zipfile + zlib", inflate_zipfile), ("isal (pyimage)", inflate_isal)):
        secs, n = timed(fn)
        print(f"{name:30} {n / 1e6 / secs:8.0f}")


if __name__ == "__main__":
    main()
