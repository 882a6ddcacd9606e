#!/usr/bin/env python3
"""Resolution: pyimage's uv backend next to its pip backend, same inputs, same target, same run.

Each requirement set is resolved for CPython 3.11 on linux/amd64 (glibc 2.36, Debian bookworm) through
``pyimage.resolve.{uv,pip}.resolve`` — the code ``pyimage build`` runs — with this machine's pip configuration.
Each backend runs ``--repeat`` times (default 3; the first run warms uv's and pip's HTTP caches, as any
developer machine or CI cache has them); the table shows the median of the warm runs, the cold first run, and
whether both backends chose the same files.

Run: ``python3 bench/resolve.py [--repeat N] [--sets hello-cli,torch-app,big]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pyimage.cache import Cache  # noqa: E402
from pyimage.oci.model import Platform  # noqa: E402
from pyimage.resolve import pip as pip_backend  # noqa: E402
from pyimage.resolve import uv as uv_backend  # noqa: E402
from pyimage.resolve.target import Target  # noqa: E402

SETS = {
    "hello-cli": ["attrs>=23", "humanize>=4"],
    "web-service": ["fastapi>=0.110", "uvicorn>=0.29"],
    "torch-app": ["torch==2.13.0", "numpy>=1.26"],
    # the ~200-package app of issue 14: a data/ML notebook stack with an orchestrator
    "big": ["jupyterlab", "pandas", "scikit-learn", "matplotlib", "apache-airflow-core"],
}
TARGET = Target("3.11", Platform.parse("linux/amd64"), "glibc", "2.36")


def timed(backend, requirements: list[str], cache: Cache) -> tuple[float, dict[str, str]]:
    start = time.perf_counter()
    pins = backend.resolve(requirements, TARGET, cache)
    return time.perf_counter() - start, {p.name: p.filename for p in pins}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sets", default=",".join(SETS))
    args = ap.parse_args()
    why = uv_backend.why_not_uv(TARGET)
    if why:
        raise SystemExit(f"uv cannot serve here: {why}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="pyimage-bench-resolve-") as tmp:
        cache = Cache(Path(tmp) / "cache")
        for name in args.sets.split(","):
            requirements = SETS[name]
            runs: dict[str, list[float]] = {"uv": [], "pip": []}
            chosen: dict[str, dict[str, str]] = {}
            for _ in range(max(1, args.repeat)):
                for label, backend in (("uv", uv_backend), ("pip", pip_backend)):
                    seconds, chosen[label] = timed(backend, requirements, cache)
                    runs[label].append(seconds)
            warm = {k: statistics.median(v[1:] or v) for k, v in runs.items()}
            same = "yes" if chosen["uv"] == chosen["pip"] else f"no ({len(set(chosen['uv'].items()) ^ set(chosen['pip'].items()))} files differ)"
            rows.append((name, len(chosen["uv"]), runs["pip"][0], runs["uv"][0], warm["pip"], warm["uv"], same))
            print(f"{name}: pip {warm['pip']:.2f} s, uv {warm['uv']:.2f} s", file=sys.stderr)
    print(f"\n### Resolution for {TARGET.describe()} (warm: median of runs 2..{args.repeat})\n")
    print("| set | packages | pip cold | uv cold | pip warm | uv warm | pip / uv (warm) | same files |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, count, pc, uc, pw, uw, same in rows:
        print(f"| {name} | {count} | {pc:.2f} s | {uc:.2f} s | {pw:.2f} s | {uw:.2f} s | {pw / uw:.1f}× | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
