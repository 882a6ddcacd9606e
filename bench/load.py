#!/usr/bin/env python3
"""``pyimage build --load`` next to ``docker build`` (BuildKit, overlay2): the image ends up in the same local
Docker Engine either way, which is what a developer who runs ``docker run`` next cares about.

A private dockerd (tests/support/engines.py) serves both. The Dockerfile is bench/run.py's best-practice one
(dependencies in one layer from the same locked wheels, bind-mounted; then the app), its base the same Debian
rootfs, imported with ``docker import`` (timed apart). pyimage starts from a cache holding only the downloaded
wheels and the build backend's environment, as in bench/run.py. Scenarios: cold, no-change, one-line edit.

Run: ``python3 bench/load.py [--app torch-app] [--repeat N]`` (root; Debian's docker.io installed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # noqa: E402  (bench/run.py is the shared toolkit; it puts tests/support on sys.path)
    BASE_TAG,
    BENCH_HOME,
    EXAMPLES,
    Pyimage,
    buildah_context,
    copy_project,
    docker_context,
    find_pip_wheel,
    find_pyimage,
    log,
    one_line_change,
    read_pins,
    seed_cache,
    timed,
    wheel_dir,
)
from engines import DOCKER_CLIENT, start_dockerd  # noqa: E402
from rootfs import DEFAULT_PATH, debian_rootfs  # noqa: E402

SCENARIOS = (("cold", "cold (base imported/ingested apart)"), ("nochange", "no-change rebuild"), ("change", "one-line app change"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--app", default="torch-app", help="example to build (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=1, help="repeats; the table shows medians")
    args = ap.parse_args(argv)

    BENCH_HOME.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="load-", dir=BENCH_HOME))
    exe, py = find_pyimage(None)
    rootfs = debian_rootfs()
    tool = Pyimage(exe, py, rootfs)
    engine = start_dockerd(("overlay2",))
    env = dict(engine.env, DOCKER_BUILDKIT="1")
    try:
        version = engine.version()
        log(f"dockerd {version} ({engine.driver}) at {engine.host}; work dir {work}")
        template = copy_project(EXAMPLES / args.app, work / "template")
        seed = work / "seed"
        warm, _ = tool.build(template, seed, work / "warm")
        pins = read_pins(template)
        wheels = wheel_dir(work / "wheels", seed, pins, shutil.which("python3.11") or sys.executable)
        log(f"warm-up {warm:.1f} s, {len(pins)} locked wheels")
        import_s, _ = timed([DOCKER_CLIENT, "import", "--change", f"ENV PATH={DEFAULT_PATH}", str(rootfs), BASE_TAG], env=env)
        log(f"docker import of the base: {import_s:.1f} s")

        results: dict[str, dict[str, list[float]]] = {"pyimage": {}, "docker": {}}
        for rep in range(args.repeat):
            # docker build, BuildKit: a fresh builder cache each repeat (the base image stays imported)
            timed([DOCKER_CLIENT, "builder", "prune", "--all", "--force"], env=env)
            ctx = docker_context(buildah_context(template, work / f"ctx{rep}", wheels, pins, find_pip_wheel().name))
            tag = f"bench/{args.app}:docker{rep}"
            build = [DOCKER_CLIENT, "build", "--network", "host", "-q", "-t", tag, str(ctx)]
            for scenario in ("cold", "nochange", "change"):
                if scenario == "change":
                    one_line_change(ctx, rep + 1)
                seconds, _ = timed(build, env=env)
                results["docker"].setdefault(scenario, []).append(seconds)
            # pyimage build --load, from a cache with the wheels only
            proj = copy_project(template, work / f"proj{rep}")
            cache = work / f"cache{rep}"
            seed_cache(seed, cache, base=False)
            cmd = [exe, "build", "--load", "--json", "-C", str(proj), "--base", f"rootfs:{rootfs}", "--cache-dir", str(cache)]
            for scenario in ("cold", "nochange", "change"):
                if scenario == "change":
                    one_line_change(proj, rep + 1)
                seconds, done = timed(cmd, env=env)
                loaded = json.loads(done.stdout)["loaded"][0]
                results["pyimage"].setdefault(scenario, []).append(seconds)
            log(f"repeat {rep}: " + ", ".join(f"{t} {s} {results[t][s][-1]:.2f}s" for t in results for s in results[t]))
        run_out = engine.docker("run", "--rm", "--network", "none", loaded["reference"], timeout=300).stdout.strip().splitlines()
    finally:
        engine.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"## pyimage build --load vs docker build — {args.app}, {os.cpu_count()} cores, Docker {version} ({engine.driver}, BuildKit), "
          f"median of {args.repeat}, {time.strftime('%Y-%m-%d')}")
    print()
    print("| scenario | pyimage --load s | docker build s | docker/pyimage |")
    print("| --- | ---: | ---: | ---: |")
    for key, label in SCENARIOS:
        p, d = statistics.median(results["pyimage"][key]), statistics.median(results["docker"][key])
        print(f"| {label} | {p:.2f} | {d:.2f} | {d / p:.1f}× |")
    print()
    print(f"docker import of the base rootfs (not in the docker figures): {import_s:.1f} s; pyimage's cold figure includes ingesting it.")
    print(f"the loaded image ran in Docker: {run_out[-1] if run_out else '(no output)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
