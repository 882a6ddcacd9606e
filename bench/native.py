"""What the native-library check costs: reading a wheel's ELF facts once (cold) and the cached verdict (warm).

    python3 bench/native.py [WHEEL ...]     (default: the torch wheel in /opt/wheels)

For each wheel prints the seconds to read every ELF file's DT_NEEDED through zipfile's zlib reader and through
isal (what pyimage uses, ``layers/native.py``), their ratio, and the seconds of a whole ``check_libraries`` call
cold (an empty cache) and warm (the verdict cached: what a no-change rebuild pays). Medians of 3 runs.
"""

from __future__ import annotations

import glob
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyimage.cache import Cache  # noqa: E402
from pyimage.layers.elf import MAGIC, read_dynamic  # noqa: E402
from pyimage.layers.native import _candidate, _read_natives, check_libraries  # noqa: E402
from pyimage.wheels import read_wheel  # noqa: E402

BASE = ("libc.so.6", "libgcc_s.so.1", "libstdc++.so.6", "libz.so.1")  # what a Debian base has for torch


def with_zipfile(path: Path) -> int:
    count = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.is_dir() or not _candidate(info.filename) or info.file_size < 64:
                continue
            with zf.open(info) as member:
                if member.read(4) == MAGIC and read_dynamic(member, info.file_size) is not None:  # type: ignore[arg-type]
                    count += 1
    return count


def median_seconds(fn, runs: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(paths: list[str]) -> None:
    wheels = [Path(p) for p in paths] or [Path(p) for p in sorted(glob.glob("/opt/wheels/torch-*.whl"))[:1]]
    if not wheels:
        sys.exit("give a wheel path (no torch wheel in /opt/wheels)")
    print("| wheel | zipfile s | isal s | zipfile/isal | check cold s | check warm ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for path in wheels:
        slow = median_seconds(lambda: with_zipfile(path))
        fast = median_seconds(lambda: _read_natives(str(path)))
        wheel = read_wheel(path)
        with tempfile.TemporaryDirectory() as tmp:
            cache = Cache(Path(tmp))

            def check() -> None:
                check_libraries([wheel], cache, base_libraries=BASE, libc="glibc", machine="x86_64", allow=(), base="bench")

            cold = median_seconds(check, runs=1)
            warm = median_seconds(check)
        print(f"| {path.name} | {slow:.2f} | {fast:.2f} | {slow / fast:.1f}× | {cold:.2f} | {warm * 1000:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
