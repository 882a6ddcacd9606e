#!/usr/bin/env python3
"""Two platforms in one build against one, and against what emulation costs a Dockerfile build.

A project like hello-cli plus numpy (a native extension, so each platform has its own wheels) is built by
``pyimage build`` for linux/amd64, then for linux/amd64 + linux/arm64 into one index, each from a cache holding
only the downloaded wheels (warm-up untimed). The peer is what ``docker buildx --platform linux/arm64`` does
under QEMU for the same dependencies: ``pip install`` of the same wheels inside the arm64 Debian rootfs, run
through qemu-user-static (chroot), next to the same install in the amd64 rootfs natively.

Run: ``python3 bench/platforms.py`` (root; qemu-user-static, binfmt-support, mmdebstrap).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BENCH_HOME, EXAMPLES, copy_project, find_pip_wheel, find_pyimage, link_tree, log, timed  # noqa: E402
from rootfs import debian_rootfs, qemu_ready  # noqa: E402

PLATFORMS = ("linux/amd64", "linux/arm64")
EXTRA = "numpy>=2"


def main() -> int:
    if not qemu_ready("aarch64"):
        raise SystemExit("arm64 binaries do not run here: apt-get install qemu-user-static binfmt-support")
    BENCH_HOME.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="platforms-", dir=BENCH_HOME))
    exe, _ = find_pyimage(None)
    roots = {"linux/amd64": debian_rootfs(), "linux/arm64": debian_rootfs(arch="arm64")}
    base = "base={ " + ", ".join(f'"{p}" = "rootfs:{r}"' for p, r in roots.items()) + " }"
    try:
        project = copy_project(EXAMPLES / "hello-cli", work / "project")
        pyproject = project / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace('"attrs>=23"', f'"attrs>=23", "{EXTRA}"'))
        seed = work / "seed"

        def build(platforms: tuple[str, ...], cache: Path) -> tuple[float, dict]:
            seconds, done = timed([exe, "build", "--json", "-C", project, "--platform", ",".join(platforms), "--set", base,
                                   "-o", f"oci:{work / 'out'}:{len(platforms)}", "--cache-dir", cache])
            return seconds, json.loads(done.stdout)

        build(PLATFORMS, seed)  # warm-up: downloads every platform's wheels, makes the locks
        figures: dict[str, float] = {}
        for platforms in ((PLATFORMS[0],), PLATFORMS):
            cache = work / f"cache-{len(platforms)}"
            cache.mkdir()
            link_tree(seed / "wheels", cache / "wheels")
            if (seed / "envs").is_dir():
                link_tree(seed / "envs", cache / "envs")
            figures[",".join(platforms)], report = build(platforms, cache)
            log(f"pyimage {','.join(platforms)}: {figures[','.join(platforms)]:.2f} s")
        shared = [l["name"] for l in report["platforms"][1]["layers"] if l["cached"] and l["name"] != "base"]

        # The peer: pip install of the same locked wheels inside each rootfs; arm64 runs under qemu.
        emulated: dict[str, float] = {}
        for platform, rootfs in roots.items():
            lock = __import__("tomllib").loads((project / "pylock.pyimage.toml").read_text())
            pins = [f"{p['name']}=={p['version']}" for p in lock["packages"] if p.get("tool", {}).get("pyimage", {}).get("target") == platform]
            wheels = work / f"wheels-{platform.replace('/', '-')}"
            wheels.mkdir()
            for sha in (seed / "wheels").iterdir():
                for whl in sha.glob("*.whl"):
                    if any(whl.name.lower().startswith(p.split("==")[0].replace("-", "_").lower() + "-") for p in pins):
                        os.link(whl, wheels / whl.name)
            root = work / f"root-{platform.replace('/', '-')}"
            root.mkdir()
            with tarfile.open(rootfs) as tar:
                tar.extractall(root, filter="fully_trusted")
            shutil.copytree(wheels, root / "wheels")
            pip = find_pip_wheel()
            shutil.copy2(pip, root / "wheels" / pip.name)
            cmd = ["chroot", str(root), "/usr/bin/python3", f"/wheels/{pip.name}/pip", "install", "--no-index", "--find-links", "/wheels",
                   "--no-compile", "--target", "/opt/site", *pins]
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            emulated[platform] = time.perf_counter() - start
            if done.returncode:
                raise SystemExit(f"pip install in the {platform} rootfs failed:\n{done.stderr[-2000:]}")
            log(f"pip install in the {platform} rootfs{' (qemu)' if platform != PLATFORMS[0] else ''}: {emulated[platform]:.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    one, both = figures[PLATFORMS[0]], figures[",".join(PLATFORMS)]
    print(f"## Two platforms in one build — hello-cli + {EXTRA}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print()
    print("| what | seconds |")
    print("| --- | ---: |")
    print(f"| pyimage, linux/amd64 (cold, wheels downloaded) | {one:.2f} |")
    print(f"| pyimage, linux/amd64 + linux/arm64 in one index | {both:.2f} ({both / one:.2f}× one platform) |")
    print(f"| pip install of the same wheels, amd64 rootfs (native) | {emulated[PLATFORMS[0]]:.2f} |")
    print(f"| pip install of the same wheels, arm64 rootfs under qemu (what buildx does) | {emulated[PLATFORMS[1]]:.2f} |")
    print()
    print(f"arm64 layers taken from the amd64 build's cache: {', '.join(shared) or 'none'}; pyimage ran nothing under emulation.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
