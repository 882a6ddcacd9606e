#!/usr/bin/env python3
"""A CI run that only pushes: how much a small, pruned cache costs next to a whole one.

CI restores pyimage's cache, builds after a code change and pushes; nothing is written on the runner. The
GitHub Action trims the cache before saving it (``cache-max-size``). ``cache prune`` removes blobs and wheels but
keeps the layer records (a few hundred bytes each), so a push-only build asks the registry for the layers it
built before instead of downloading their wheels and building them again. Scenarios, each after a one-line
change, each pushing to the same repository of a loopback TLS registry the seed build pushed to:

- whole cache: the seed cache as it was saved after the first push;
- pruned cache: the same, after ``pyimage cache prune --max-size SIZE`` (records kept);
- pruned, no records: the same prune with the layer records deleted too (what a cache without records costs:
  every wheel fetched and every layer built again).

Wheels come from pip's configured indexes and find-links (here: PyPI and the machine's local wheel directory),
so the "no records" figure includes real downloads. Printed per scenario: seconds, the cache size restored,
the wheel bytes fetched into the cache, and the blobs uploaded.

Run: ``python3 bench/push_only.py [--app torch-app] [--max-size 100MB]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BENCH_HOME, EXAMPLES, Registry, copy_project, find_pyimage, human, log, one_line_change, run, timed  # noqa: E402
from rootfs import debian_rootfs  # noqa: E402


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) if path.is_dir() else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--app", default="torch-app")
    ap.add_argument("--max-size", default="100MB", help="what the pruned cache is trimmed to (default: %(default)s)")
    ap.add_argument("--pyimage", help="pyimage executable (default: the one on PATH)")
    args = ap.parse_args(argv)
    exe, _ = find_pyimage(args.pyimage)
    BENCH_HOME.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="push-only-", dir=BENCH_HOME))
    rootfs = debian_rootfs()
    registry = Registry(work / "registry").start()
    ref = f"localhost:{registry.port}/apps/{args.app}:ci"
    try:
        project = copy_project(EXAMPLES / args.app, work / "project")
        seed = work / "seed-cache"

        def build(cache: Path) -> tuple[float, dict]:
            seconds, proc = timed([exe, "build", "-C", str(project), "--base", f"rootfs:{rootfs}", "--push", ref,
                                   "--ca-bundle", str(registry.ca), "--json", "--cache-dir", str(cache)])
            return seconds, json.loads(proc.stdout)

        seconds, _ = build(seed)
        log(f"seed build + first push: {seconds:.1f} s, cache {human(tree_size(seed))}")
        rows = []
        for n, (name, prune, records) in enumerate((("whole cache", False, True), ("pruned cache", True, True), ("pruned, no records", True, False)), 1):
            cache = work / f"cache-{n}"
            # A copy, not hard links: a hit touches what it uses, and shared inodes would let one scenario's
            # hits reorder the next one's prune.
            shutil.copytree(seed, cache, symlinks=True)
            if prune:
                run([exe, "cache", "prune", "--max-size", args.max_size, "--cache-dir", str(cache)])
            if not records:
                shutil.rmtree(cache / "layers")
            restored = tree_size(cache)
            wheels_before = tree_size(cache / "wheels")
            one_line_change(project, n)
            seconds, report = build(cache)
            fetched = max(0, tree_size(cache / "wheels") - wheels_before)
            pushed = report["pushed"][0]
            states = ", ".join(f"{l['name']}: {'registry' if l.get('remote') else 'cached' if l['cached'] else 'built'}" for l in report["layers"])
            rows.append((name, seconds, restored, fetched, pushed["uploaded"], human(pushed["bytes_uploaded"]), states))
            log(f"{name}: {seconds:.2f} s")
        print(f"\n### push-only CI run after a one-line change: {args.app} (prune to {args.max_size})\n")
        print("| cache restored | seconds | cache size | wheels fetched | blobs uploaded | bytes uploaded |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, seconds, restored, fetched, uploaded, sent, _ in rows:
            print(f"| {name} | {seconds:.2f} | {human(restored)} | {human(fetched)} | {uploaded} | {sent} |")
        print()
        for name, *_, states in rows:
            print(f"- {name}: {states}")
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
