#!/usr/bin/env python3
"""How long pyimage takes to build the examples, next to docker build and buildah (a best-practice Dockerfile)
and pyoci.

For each app (``--apps``) and each repeat, in fresh temp directories (the repo's files are never edited):

* pyimage, as the CLI a user runs: cold (fresh ``--cache-dir`` holding only the downloaded wheels and the build
  backend's environment) with the lock the warm-up wrote and without it (resolution included), cold with the base
  already ingested, no-change rebuild, rebuild after a one-line change in the app, a second app (a renamed copy
  with different code) built against the same cache, and a dependency bump (``BUMPS``: one dependency pinned to
  another release, so the lock is resolved again);
* docker build (BuildKit, overlay2, a private dockerd; the same Dockerfile, made for BuildKit as bench/load.py
  does): the base rootfs ``docker import``-ed first (timed apart), the builder cache pruned at each repeat, then
  cold, no-change, one-line change, second app, dependency bump (``--skip-docker`` leaves it out);
* buildah (``bud --layers --isolation chroot``, vfs storage under a throwaway ``--root``): the base rootfs
  imported first (timed apart), then cold, no-change, one-line change, second app, dependency bump;
* pyoci (from PyPI, in its own venv under /tmp): cold, no-change, one-line change, from a venv holding the app
  and its dependencies; its base image is served by a local TLS registry, since pyoci only pulls bases.

It prints one markdown table per app (median seconds over ``--repeat``; bytes of the new layers each tool made;
the machine's limit for each scenario, from rates measured in the run by bench/limit.py, and pyimage's ratio to it),
then where time goes in a pyimage no-change rebuild (``-X importtime`` and cProfile). ``--json FILE`` keeps every
raw figure. Run: ``python bench/run.py [--apps hello-cli,web-service,torch-app] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import io
import json
import os
import pstats
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomllib

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
BENCH_APPS = Path(__file__).resolve().parent / "apps"  # apps that are benchmarks, not examples (big-app: issue #14)
sys.path.insert(0, str(REPO / "tests" / "support"))
from rootfs import DEFAULT_PATH, debian_rootfs, oci_layout

sys.path.insert(0, str(Path(__file__).resolve().parent))
from limit import Rates, inflated_size
from limit import measure as limit_rates

APPS_DEFAULT = ("hello-cli", "web-service", "torch-app")
BENCH_HOME = Path(tempfile.gettempdir()) / "pyimage-bench"  # pyoci's venv and hatchling wheels are reused from here
PYOCI_REQUIREMENT = "pyoci"
BASE_TAG = "localhost/bench-rootfs:latest"
VENV = "/opt/venv"  # pyimage's default venv; the Dockerfile uses the same path
SCENARIOS = (
    ("cold", "cold from nothing, with lock"),
    ("cold_nolock", "cold from nothing, no lock (resolves)"),
    ("cold_base", "cold, base ready, with lock"),
    ("nochange", "no-change rebuild"),
    ("change", "one-line app change"),
    ("second", "second app, same cache"),
    ("bump", "dependency bump"),
)
# The "dependency bump" scenario: one dependency of the app pinned to another release than the lock holds (an
# older one: what a rollback or a security pin looks like). Each version has wheels for cp311 manylinux here.
BUMPS = {"hello-cli": ("humanize", "4.16.0"), "web-service": ("uvicorn", "0.30.6"), "torch-app": ("numpy", "2.3.5"),
         "big-app": ("pandas", "2.2.3")}


class BenchError(Exception):
    pass


# -- small utilities ------------------------------------------------------------------------------------------

_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str | Path], *, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
        raise BenchError(f"$ {' '.join(map(str, cmd))}\nexit {proc.returncode}\n{tail}")
    return proc


def timed(cmd: Sequence[str | Path], **kw: Any) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall seconds of one whole subprocess (time.perf_counter around it), and its result. The disk is synced
    first, untimed: a run's dirty pages (a docker build leaves GBs) are written back during the next one, and on two
    cores that writeback shifted whichever tool ran next by up to a second."""
    os.sync()
    start = time.perf_counter()
    proc = run(cmd, **kw)
    return time.perf_counter() - start, proc


def human(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def link_tree(src: Path, dst: Path) -> None:
    """A hard-linked copy of ``src`` (symlinks kept): cheap, and a blob keeps its inode, so stat stamps stay valid."""
    shutil.copytree(src, dst, symlinks=True, copy_function=os.link, dirs_exist_ok=True)


def copy_project(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("dist", ".venv", "__pycache__", "*.egg-info", "build"))
    return dst


def app_module(project: Path) -> Path:
    inits = sorted((project / "src").glob("*/__init__.py"))
    if len(inits) != 1:
        raise BenchError(f"{project}: expected one package under src/, found {[str(p) for p in inits]}")
    return inits[0]


def one_line_change(project: Path, n: int) -> None:
    """Appends one line of code to the app's module: what a developer's smallest edit looks like."""
    init = app_module(project)
    init.write_text(init.read_text() + f"BENCH_REVISION = {n}  # one-line change made by bench/run.py\n")


def app_source(app: str) -> Path:
    """An example's directory, or a bench-only app's (bench/apps/)."""
    return EXAMPLES / app if (EXAMPLES / app).is_dir() else BENCH_APPS / app


def bump_dependency(project: Path, name: str, version: str) -> None:
    """Pins ``name`` to ``version`` in pyproject.toml's dependencies: the lock goes stale and is resolved again."""
    path = project / "pyproject.toml"
    text, n = re.subn(rf'"{re.escape(name)}\s*(?:[<>=!~][^"]*)?"', f'"{name}=={version}"', path.read_text(), count=1)
    if n != 1:
        raise BenchError(f"{path}: no dependency {name!r} to bump")
    path.write_text(text)


def second_app(template: Path, dst: Path, app: str) -> Path:
    """A copy of ``app`` renamed ``<app>-2`` (package ``<pkg>_2``) with different code; same dependencies."""
    copy_project(template, dst)
    pkg = app.replace("-", "_")
    (dst / "src" / pkg).rename(dst / "src" / f"{pkg}_2")
    text = (dst / "pyproject.toml").read_text()
    text = re.sub(rf'(?m)^name = "{re.escape(app)}"', f'name = "{app}-2"', text)
    text = re.sub(rf'(?m)^{re.escape(app)} = "{pkg}:', f'{app}-2 = "{pkg}_2:', text)
    (dst / "pyproject.toml").write_text(text)
    init = app_module(dst)
    init.write_text(init.read_text() + '\n\ndef describe() -> str:\n    """The second app differs from the first in code only."""\n    return "second app"\n')
    return dst


@dataclass
class Pin:
    name: str
    version: str
    filename: str
    sha256: str


def read_pins(project: Path) -> list[Pin]:
    data = tomllib.loads((project / "pylock.pyimage.toml").read_text())
    pins = []
    for pkg in data.get("packages", []):
        wheel = pkg["wheels"][0]
        pins.append(Pin(pkg["name"], pkg["version"], wheel["name"], wheel["hashes"]["sha256"]))
    return pins


@dataclass
class Measure:
    """One timed build. ``new_*`` are bytes of the layer blobs the build made that the store did not have (base
    excluded): pyimage's are gzip blobs (``new_raw`` their tar size), buildah's and pyoci's are uncompressed tars."""

    seconds: float | None = None
    new_gz: int | None = None
    new_raw: int | None = None
    new_layers: list[str] = field(default_factory=list)
    note: str = ""
    error: str = ""
    inflated: int = 0  # pyimage only: inflated bytes of the wheels in its new layers (bench/limit.py)
    ingest_raw: int = 0  # pyimage only: the base rootfs tar it ingested (deflated and hashed, nothing to inflate)


Results = dict[str, dict[str, dict[str, list[Measure]]]]  # app -> tool -> scenario -> one Measure per repeat


# -- pyimage ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pyimage:
    exe: str  # the CLI users run
    python: str  # the interpreter behind it, for -X importtime and cProfile
    rootfs: Path
    compression: str = "gzip"
    pycache: Path | None = None  # where its modules' .pyc files go: a pip-installed pyimage has them

    def env(self) -> dict[str, str] | None:
        """This environment, but pyimage byte-compiled as a pip install leaves it: an editable install under
        PYTHONDONTWRITEBYTECODE=1 (this machine) compiles every module on every run (+0.1 s, not what users see)."""
        if self.pycache is None:
            return None
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(self.pycache)  # never writes next to the repo's sources
        return env

    def build_cmd(self, project: Path, cache: Path, out: Path) -> list[str]:
        cmd = ["build", "-C", str(project), "--base", f"rootfs:{self.rootfs}", "-o", f"oci:{out}:latest", "--json", "--cache-dir", str(cache)]
        return cmd + (["--compression", self.compression] if self.compression != "gzip" else [])

    def build(self, project: Path, cache: Path, out: Path) -> tuple[float, dict[str, Any]]:
        seconds, proc = timed([self.exe, *self.build_cmd(project, cache, out)], env=self.env())
        return seconds, json.loads(proc.stdout)


def find_pyimage(explicit: str | None) -> tuple[str, str]:
    exe = explicit or shutil.which("pyimage")
    if not exe:
        raise SystemExit("pyimage is not on PATH (pip install -e .), or pass --pyimage PATH")
    if "/shims/" in exe and shutil.which("pyenv"):  # a pyenv shim costs ~0.15 s of bash per call: not pyimage's
        real = run(["pyenv", "which", "pyimage"], check=False).stdout.strip()
        exe = real or exe
    with open(exe, "rb") as f:
        first = f.readline().decode(errors="replace").strip()
    python = first[2:].strip().split()[0] if first.startswith("#!") else sys.executable
    return exe, python


def seed_cache(seed: Path, cache: Path, *, base: bool) -> None:
    """A fresh pyimage cache holding what "downloaded" means: the wheels, and the build backend's environment
    (making it runs pip against the index). With ``base``, also the ingested base rootfs layer and its scan."""
    cache.mkdir(parents=True)
    for sub in ("wheels", "envs"):
        if (seed / sub).is_dir():
            link_tree(seed / sub, cache / sub)
    if not base:
        return
    for sub in ("layers", "blobs/sha256", "meta"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
    for record in (seed / "layers").glob("rootfs-*.json"):
        os.link(record, cache / "layers" / record.name)
        hexd = json.loads(record.read_text())["digest"].partition(":")[2]
        os.link(seed / "blobs" / "sha256" / hexd, cache / "blobs" / "sha256" / hexd)
        stamp = seed / "meta" / f"stamp-{hexd}.json"
        if stamp.exists():
            os.link(stamp, cache / "meta" / stamp.name)
    # records are named <kind><format version>-<key> (cache.py): rootfs-sha1-…, scan5-…
    for meta in [*(seed / "meta").glob("rootfs-sha*.json"), *(seed / "meta").glob("scan[0-9]*-*.json")]:
        os.link(meta, cache / "meta" / meta.name)


def _raw_sizes(cache: Path) -> dict[str, int]:
    sizes = {}
    for record in (cache / "layers").glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            data = json.loads(record.read_text())
            if data.get("uncompressed_size"):
                sizes[data["digest"]] = data["uncompressed_size"]
    return sizes


def _gunzip_size(path: Path) -> int:
    n = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += len(chunk)
    return n


def pyimage_measure(seconds: float, result: dict[str, Any], cache: Path, wheel_sizes: dict[str, int]) -> Measure:
    """``wheel_sizes`` maps ``name==version`` (a layer's packages) to the inflated bytes of its wheel; the app's
    own wheel, made in the build, is looked up in the cache."""
    raw = _raw_sizes(cache)
    new = [l for l in result["layers"] if not l["cached"] and l["name"] != "base"]
    inflated = 0
    for layer in new:
        for pkg in layer["packages"]:
            size = wheel_sizes.get(pkg)
            if size is None:
                name, _, version = pkg.partition("==")
                found = sorted(cache.rglob(f"{re.sub(r'[-_.]+', '_', name)}-{version}-*.whl"))
                size = inflated_size(found[0]) if found else 0
            inflated += size
    raw_total = 0
    for layer in new:
        size = raw.get(layer["digest"])
        if size is None:
            blob = cache / "blobs" / "sha256" / layer["digest"].partition(":")[2]
            size = _gunzip_size(blob) if blob.exists() else 0
        raw_total += size
    return Measure(seconds, sum(l["size"] for l in new), raw_total, [l["name"] for l in new], inflated=inflated)


def shared_layers_check(first: dict[str, Any], second: dict[str, Any]) -> str:
    """Whether the second app's heavy layers (or, without any, its site-packages layer) were cache hits with the
    same digests as the first app's."""
    by_name = {l["name"]: l for l in first["layers"]}
    shared = [l for l in second["layers"] if l["name"].startswith("heavy:")] or [l for l in second["layers"] if l["name"] == "site-packages"]
    if not shared:
        return "no dependency layer to share"
    parts = []
    for layer in shared:
        other = by_name.get(layer["name"])
        same = other is not None and other["digest"] == layer["digest"]
        parts.append(f"{layer['name']} {'cached' if layer['cached'] else 'REBUILT'}, {'same digest' if same else 'DIFFERENT digest'}")
    return "; ".join(parts)


def pyimage_series(tool: Pyimage, app: str, template: Path, seed: Path, work: Path, rep: int, wheel_sizes: dict[str, int]) -> dict[str, Measure]:
    d = work / "pyimage" / app / f"r{rep}"
    out: dict[str, Measure] = {}
    base_raw = tool.rootfs.stat().st_size
    proj = copy_project(template, d / "proj")
    cache, layout = d / "cache", d / "out"
    seed_cache(seed, cache, base=False)
    s, cold = tool.build(proj, cache, layout)
    out["cold"] = pyimage_measure(s, cold, cache, wheel_sizes)
    out["cold"].ingest_raw = base_raw
    base = next((l for l in cold["layers"] if l["name"] == "base"), None)
    if base is not None:
        out["cold"].note = (f"pylock.pyimage.toml (written by the untimed warm-up) present: no resolution; includes ingesting the "
                            f"{human(base_raw)} base rootfs (gzip blob {human(base['size'])})")
    s, res = tool.build(proj, cache, layout)
    out["nochange"] = pyimage_measure(s, res, cache, wheel_sizes)
    one_line_change(proj, rep + 1)
    s, first = tool.build(proj, cache, layout)
    out["change"] = pyimage_measure(s, first, cache, wheel_sizes)
    proj2 = second_app(template, d / "proj2", app)
    s, res = tool.build(proj2, cache, d / "out2")
    out["second"] = pyimage_measure(s, res, cache, wheel_sizes)
    out["second"].note = shared_layers_check(first, res)
    if app in BUMPS:
        name, version = BUMPS[app]
        bump_dependency(proj, name, version)
        s, res = tool.build(proj, cache, layout)
        out["bump"] = pyimage_measure(s, res, cache, wheel_sizes)
        out["bump"].note = f"{name} pinned to {version} in pyproject.toml: the lock is stale and resolved again; rebuilt " + ", ".join(out["bump"].new_layers)
    cache_n = d / "cache-nolock"
    seed_cache(seed, cache_n, base=False)
    proj_n = copy_project(template, d / "proj-nolock")
    (proj_n / "pylock.pyimage.toml").unlink()
    s, res = tool.build(proj_n, cache_n, d / "out-nolock")
    out["cold_nolock"] = pyimage_measure(s, res, cache_n, wheel_sizes)
    out["cold_nolock"].ingest_raw = base_raw
    out["cold_nolock"].note = "no lock: uv resolves against PyPI (wheels already downloaded), then as cold with lock"
    cache_b = d / "cache-base"
    seed_cache(seed, cache_b, base=True)
    proj_b = copy_project(template, d / "proj-base")
    s, res = tool.build(proj_b, cache_b, d / "out-base")
    out["cold_base"] = pyimage_measure(s, res, cache_b, wheel_sizes)
    # The JSON says ``cached: false`` for the base even when it is reused, so ask the cache's hit log instead.
    hits = (cache_b / "meta" / "hits.log").read_text().split() if (cache_b / "meta" / "hits.log").exists() else []
    out["cold_base"].note = "base layer reused from the seeded cache" if "hit" in hits else "base NOT reused: seeding failed"
    return out


# -- buildah ----------------------------------------------------------------------------------------------------

DOCKERFILE = """\
# Best-practice layering: the dependencies (rarely change) in one layer, then the app (changes often).
FROM {base}
ENV VIRTUAL_ENV={venv} \\
    PATH={venv}/bin:{path} \\
    PYTHONDONTWRITEBYTECODE=1 PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheel directory is bind-mounted, so no wheel lands in a layer. buildah 1.28 leaves bind-mounted content out
# of its layer-cache key, so the exact pins are on the command line, where a change does invalidate the cache.
# The base has no pip (Debian splits it out): pip runs from its wheel. --no-compile matches pyimage's default;
# PYTHONDONTWRITEBYTECODE keeps the app's build from leaving .pyc files of the dependencies in the app layer.
RUN --mount=type=bind,source=wheels,target=/wheels \\
    python3 -m venv --without-pip {venv} && \\
    {venv}/bin/python /wheels/{pip}/pip install --no-compile --no-deps {pins}
COPY . /src/
RUN --mount=type=bind,source=wheels,target=/wheels \\
    {venv}/bin/python /wheels/{pip}/pip install --no-compile --no-deps /src
ENTRYPOINT ["{venv}/bin/{script}"]
"""


@dataclass(frozen=True)
class Buildah:
    root: Path
    runroot: Path
    driver: str = "vfs"  # vfs copies each layer's whole tree; overlay, where the kernel allows it, does not

    def cmd(self, *args: str | Path) -> list[str]:
        return ["buildah", "--root", str(self.root), "--runroot", str(self.runroot), "--storage-driver", self.driver, *map(str, args)]

    def import_base(self, rootfs: Path) -> float:
        """``FROM scratch`` + ``buildah add`` of the rootfs tar, committed as BASE_TAG; returns seconds."""
        start = time.perf_counter()
        ctr = run(self.cmd("from", "scratch")).stdout.strip()
        run(self.cmd("add", ctr, rootfs, "/"))
        run(self.cmd("config", "--env", f"PATH={DEFAULT_PATH}", "--cmd", "bash", ctr))
        run(self.cmd("commit", "-q", ctr, BASE_TAG))
        run(self.cmd("rm", ctr))
        return time.perf_counter() - start

    def bud(self, context: Path, tag: str) -> float:
        seconds, _ = timed(self.cmd("bud", "--isolation", "chroot", "--layers", "-t", tag, "-f", context / "Dockerfile", context))
        return seconds

    def layers(self, tag: str) -> list[tuple[str, int]]:
        """(diff digest, uncompressed size) of each layer, from the image's manifest in local storage."""
        info = json.loads(run(self.cmd("inspect", "--type", "image", tag)).stdout)
        return [(l["digest"], l["size"]) for l in json.loads(info["Manifest"])["layers"]]


def console_script(project: Path) -> str:
    scripts = tomllib.loads((project / "pyproject.toml").read_text()).get("project", {}).get("scripts", {})
    return next(iter(scripts), "python3")


def buildah_context(template: Path, dst: Path, wheels: Path, pins: list[Pin], pip_wheel: str) -> Path:
    copy_project(template, dst)
    (dst / "pylock.pyimage.toml").unlink(missing_ok=True)
    link_tree(wheels, dst / "wheels")
    (dst / ".dockerignore").write_text("wheels\nDockerfile\n.dockerignore\n")
    pin_args = " ".join(f"{p.name}=={p.version}" for p in pins)
    (dst / "Dockerfile").write_text(
        DOCKERFILE.format(base=BASE_TAG, venv=VENV, path=DEFAULT_PATH, pip=pip_wheel, pins=pin_args, script=console_script(dst))
    )
    return dst


def bump_context(ctx: Path, app: str, pins: list[Pin]) -> str:
    """The dependency bump in a Dockerfile context: pyproject.toml (copied into the app layer) and the exact pin
    on the dependency layer's command line. Returns a note."""
    name, version = BUMPS[app]
    old = next((p for p in pins if p.name == name), None)
    if old is None:
        raise BenchError(f"{app}: {name} is not in the lock")
    bump_dependency(ctx, name, version)
    dockerfile = ctx / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace(f" {name}=={old.version}", f" {name}=={version}"))
    return f"{name} {old.version} → {version}"


def find_pip_wheel() -> Path:
    """The pip wheel ensurepip carries: the Dockerfile runs pip from it, since the base has no pip."""
    return max((Path(os.__file__).parent / "ensurepip" / "_bundled").glob("pip-*.whl"))


def wheel_dir(dest: Path, seed: Path, pins: list[Pin], host_py: str) -> Path:
    """The exact wheels pyimage used (hard links out of the seed cache), plus pip and the app's build backend
    (hatchling, fetched once), for a Dockerfile's ``--mount`` and pyoci's venv."""
    build_wheels = BENCH_HOME / "build-wheels"
    if not list(build_wheels.glob("hatchling-*.whl")):
        run([host_py, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", build_wheels, "hatchling"])
    dest.mkdir(parents=True)
    for pin in pins:
        os.link(seed / "wheels" / pin.sha256 / pin.filename, dest / pin.filename)
    for extra in [find_pip_wheel(), *build_wheels.glob("*.whl")]:
        with contextlib.suppress(FileExistsError):
            shutil.copy2(extra, dest / extra.name)
    return dest


def buildah_series(app: str, template: Path, pins: list[Pin], wheels: Path, pip_wheel: str, rootfs: Path, work: Path, rep: int, keep: bool, driver: str) -> dict[str, Measure]:
    d = work / "buildah" / app / f"r{rep}"
    tool = Buildah(d / "root", d / "runroot", driver)
    out: dict[str, Measure] = {}
    seen: set[str] = set()

    def measure(seconds: float, tag: str) -> Measure:
        layers = tool.layers(tag)
        new = [(dg, size) for dg, size in layers if dg not in seen]
        seen.update(dg for dg, _ in layers)
        return Measure(seconds, None, sum(size for _, size in new), [f"layer {[dg for dg, _ in layers].index(dg)}" for dg, _ in new])

    try:
        import_s = tool.import_base(rootfs)
        seen.update(dg for dg, _ in tool.layers(BASE_TAG))
        ctx = buildah_context(template, d / "ctx", wheels, pins, pip_wheel)
        tag = f"localhost/bench/{app}:latest"
        out["cold_base"] = measure(tool.bud(ctx, tag), tag)
        first_layers = tool.layers(tag)
        out["cold"] = Measure(import_s + out["cold_base"].seconds, None, out["cold_base"].new_raw, out["cold_base"].new_layers, f"base import {import_s:.1f} s + bud")
        out["nochange"] = measure(tool.bud(ctx, tag), tag)
        one_line_change(ctx, rep + 1)
        out["change"] = measure(tool.bud(ctx, tag), tag)
        ctx2 = buildah_context(second_app(template, d / "src2", app), d / "ctx2", wheels, pins, pip_wheel)
        tag2 = f"localhost/bench/{app}-2:latest"
        out["second"] = measure(tool.bud(ctx2, tag2), tag2)
        deps1, deps2 = first_layers[1][0], tool.layers(tag2)[1][0]
        out["second"].note = f"dependency layer {'reused (same diff_id)' if deps1 == deps2 else 'REBUILT'}"
        if app in BUMPS:
            note = bump_context(ctx, app, pins)
            out["bump"] = measure(tool.bud(ctx, tag), tag)
            out["bump"].note = note
    finally:
        if not keep:
            run(tool.cmd("rm", "--all"), check=False)
            shutil.rmtree(d, ignore_errors=True)
    return out


# -- docker build (BuildKit) ---------------------------------------------------------------------------------------


def docker_context(ctx: Path) -> Path:
    """The buildah context, made for BuildKit: a bind mount sees only what .dockerignore lets into the context,
    so the wheels stay in it and the app's COPY names the project's files instead of ``.``."""
    (ctx / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")
    files = sorted(p.name for p in ctx.iterdir() if p.name not in ("wheels", "Dockerfile", ".dockerignore"))
    copy = "\n".join(f"COPY {name} /src/{name}" for name in files)
    dockerfile = ctx / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("COPY . /src/", copy))
    return ctx


def docker_series(engine: Any, import_s: float, app: str, template: Path, pins: list[Pin], wheels: Path, pip_wheel: str, work: Path, rep: int) -> dict[str, Measure]:
    from engines import DOCKER_CLIENT

    d = work / "docker" / app / f"r{rep}"
    env = dict(engine.env, DOCKER_BUILDKIT="1")
    run([DOCKER_CLIENT, "builder", "prune", "--all", "--force"], env=env)

    def build(ctx: Path, tag: str) -> float:
        seconds, _ = timed([DOCKER_CLIENT, "build", "--network", "host", "-q", "-t", tag, str(ctx)], env=env)
        return seconds

    out: dict[str, Measure] = {}
    ctx = docker_context(buildah_context(template, d / "ctx", wheels, pins, pip_wheel))
    tag = f"bench/{app}:r{rep}"
    out["cold_base"] = Measure(build(ctx, tag))
    out["cold"] = Measure(import_s + out["cold_base"].seconds, note=f"docker import of the base {import_s:.1f} s + build")  # type: ignore[operator]
    out["nochange"] = Measure(build(ctx, tag))
    one_line_change(ctx, rep + 1)
    out["change"] = Measure(build(ctx, tag))
    ctx2 = docker_context(buildah_context(second_app(template, d / "src2", app), d / "ctx2", wheels, pins, pip_wheel))
    out["second"] = Measure(build(ctx2, f"bench/{app}-2:r{rep}"))
    if app in BUMPS:
        note = bump_context(ctx, app, pins)
        out["bump"] = Measure(build(ctx, tag), note=note)
    shutil.rmtree(d, ignore_errors=True)
    return out


# -- pyoci --------------------------------------------------------------------------------------------------------


@dataclass
class Registry:
    """A throwaway docker-registry on loopback with TLS from a throwaway CA (pyoci speaks only https)."""

    directory: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    def start(self) -> Registry:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run(["openssl", "req", "-x509", *ec, "-keyout", d / "ca.key", "-out", self.ca, "-days", "2", "-subj", "/CN=pyimage bench CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        run(["openssl", "req", "-new", *ec, "-keyout", d / "server.key", "-out", d / "server.csr", "-subj", "/CN=localhost"])
        (d / "ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                               "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run(["openssl", "x509", "-req", "-in", d / "server.csr", "-CA", self.ca, "-CAkey", d / "ca.key", "-CAcreateserial",
             "-out", d / "server.crt", "-days", "2", "-extfile", d / "ext"])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        (d / "config.yml").write_text(
            f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {d / 'storage'}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  tls:\n    certificate: {d / 'server.crt'}\n    key: {d / 'server.key'}\n"
        )
        with open(d / "registry.log", "wb") as log_file:  # the child keeps its own descriptor
            self.process = subprocess.Popen(["docker-registry", "serve", str(d / "config.yml")], stdout=log_file, stderr=log_file, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise BenchError(f"docker-registry did not start: {(d / 'registry.log').read_text()[-800:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
            if self.process.poll() is None:
                self.process.kill()


@dataclass(frozen=True)
class Pyoci:
    exe: Path
    version: str
    base: str  # registry reference of the rootfs image
    ca: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_DIR"}
        env["SSL_CERT_FILE"] = str(self.ca)
        return env

    def build(self, project: Path, cache: Path) -> float:
        seconds, _ = timed(
            [self.exe, "build", "--tag", f"bench/{project.name}:latest", "--base-image", self.base, "--include-deps", "--cache-dir", cache,
             "--no-progress", "--env", "PYTHONPATH=/app/.venv/lib/python3.11/site-packages"],
            cwd=project, env=self.env(),
        )
        return seconds


def setup_pyoci(work: Path, rootfs: Path, python: str) -> tuple[Pyoci, Registry]:
    """pyoci in its own venv (reused across runs), and the base rootfs pushed to a local TLS registry."""
    venv = BENCH_HOME / "pyoci-venv"
    if not (venv / "bin" / "pyoci").exists():
        shutil.rmtree(venv, ignore_errors=True)
        run([python, "-m", "venv", venv])
        run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", PYOCI_REQUIREMENT])
    version = run([venv / "bin" / "python", "-c", "import importlib.metadata as m; print(m.version('pyoci'))"]).stdout.strip()
    reg = Registry(work / "registry").start()
    try:
        layout = oci_layout(rootfs, work / "base-layout")
        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://127.0.0.1:{reg.port}/bench/rootfs:latest"])
    except BaseException:
        reg.stop()
        raise
    return Pyoci(venv / "bin" / "pyoci", version, f"127.0.0.1:{reg.port}/bench/rootfs:latest", reg.ca), reg


def pip_into(python: str, venv: Path, wheels: Path, *args: str | Path) -> float:
    seconds, _ = timed([python, "-m", "pip", "--python", venv / "bin" / "python", "install", "--quiet", "--no-index", "--find-links", wheels, "--no-compile", "--no-deps", *args])
    return seconds


def pyoci_manifest_layers(project: Path) -> list[tuple[str, int]]:
    layout = project / "dist" / "image"
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][-1]["digest"].partition(":")[2]
    manifest = json.loads((layout / "blobs" / "sha256" / digest).read_text())
    return [(l["digest"], l["size"]) for l in manifest["layers"]]


def pyoci_series(tool: Pyoci, app: str, template: Path, pins: list[Pin], wheels: Path, python: str, work: Path, rep: int) -> dict[str, Measure]:
    d = work / "pyoci" / app / f"r{rep}"
    proj = copy_project(template, d / app)
    venv = proj / ".venv"  # pyoci packs <context>/.venv/lib/**/site-packages into its dependency layer
    run([python, "-m", "venv", "--without-pip", venv])
    setup_s = pip_into(python, venv, wheels, *(f"{p.name}=={p.version}" for p in pins))
    setup_s += pip_into(python, venv, wheels, proj)
    cache = d / "cache"
    out: dict[str, Measure] = {}
    seen: set[str] = set()
    base_layers = 1

    def measure(seconds: float) -> Measure:
        layers = pyoci_manifest_layers(proj)
        mine = layers[base_layers:]
        new = [(dg, size) for dg, size in mine if dg not in seen]
        seen.update(dg for dg, _ in mine)
        return Measure(seconds, None, sum(size for _, size in new), [f"layer {layers.index((dg, size))}" for dg, size in new])

    out["cold"] = measure(tool.build(proj, cache))
    out["cold"].note = f"pulls the base from a loopback registry; venv setup (untimed) {setup_s:.1f} s"
    out["nochange"] = measure(tool.build(proj, cache))
    one_line_change(proj, rep + 1)
    refresh_s = pip_into(python, venv, wheels, "--force-reinstall", proj)
    out["change"] = measure(tool.build(proj, cache))
    out["change"].note = f"after `pip install --no-deps --force-reinstall .` into the venv ({refresh_s:.1f} s, untimed)"
    return out


# -- where a no-change pyimage rebuild spends its time --------------------------------------------------------

STAGES = (
    ("cli.build (after typer parsed the arguments; includes importing pyimage.pipeline)", "pyimage/cli.py", "build"),
    ("load_config", "pyimage/config.py", "load_config"),
    ("plan", "pyimage/pipeline.py", "plan"),
    ("  load_base (rootfs stamp, layer record)", "pyimage/base.py", "load_base"),
    ("  scan_base", "pyimage/base.py", "scan_base"),
    ("  build_app_wheel (hatchling in a subprocess, unless the sources are unchanged)", "pyimage/resolve/appwheel.py", "build_app_wheel"),
    ("  _pins (read pylock.pyimage.toml, inputs hash)", "pyimage/build.py", "_pins"),
    ("  fetch_wheels", "pyimage/resolve/pip.py", "fetch_wheels"),
    ("  _wheel_values (read wheels)", "pyimage/build.py", "_wheel_values"),
    ("  _check_conflicts", "pyimage/build.py", "_check_conflicts"),
    ("  plan_layers", "pyimage/layers/plan.py", "plan_layers"),
    ("build (layer cache lookups)", "pyimage/pipeline.py", "build"),
    ("write_outputs (OCI layout)", "pyimage/outputs.py", "write_outputs"),
)


def _importtime(stderr: str) -> tuple[float, list[tuple[str, float]]]:
    top = []
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m and not m.group(3):
            top.append((m.group(4), int(m.group(2)) / 1e6))
    return sum(s for _, s in top), sorted(top, key=lambda t: -t[1])


def profile_rebuild(tool: Pyimage, project: Path, cache: Path, out: Path, work: Path, repeat: int) -> dict[str, Any]:
    """Wall time of a no-change rebuild as run normally, with byte-compiled pyimage modules, under -X importtime,
    and under cProfile (stage breakdown and the top self-time functions)."""
    args = tool.build_cmd(project, cache, out)
    runs = max(3, repeat)
    plain = statistics.median(timed([tool.exe, *args])[0] for _ in range(runs))
    shim_path = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "shims" / "pyimage"
    shim = str(shim_path) if shim_path.exists() else tool.exe
    via_shim = statistics.median(timed([shim, *args])[0] for _ in range(runs)) if shim != tool.exe else plain
    pyc_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    pyc_env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")  # never writes next to the repo's sources
    run([tool.exe, *args], env=pyc_env)  # fills the prefix
    compiled = statistics.median(timed([tool.exe, *args], env=pyc_env)[0] for _ in range(runs))
    version_s = statistics.median(timed([tool.exe, "--version"])[0] for _ in range(runs))
    bare_python = statistics.median(timed([tool.python, "-c", "pass"])[0] for _ in range(runs))
    imp = run([tool.python, "-X", "importtime", "-m", "pyimage", *args])
    import_total, import_top = _importtime(imp.stderr)
    imp_pyc = run([tool.python, "-X", "importtime", "-m", "pyimage", *args], env=pyc_env)
    import_total_pyc, _ = _importtime(imp_pyc.stderr)
    prof_file = work / f"profile-{project.name}.out"
    prof_s, _ = timed([tool.python, "-m", "cProfile", "-o", prof_file, "-m", "pyimage", *args])
    stats = pstats.Stats(str(prof_file), stream=io.StringIO())
    stages = []
    for label, suffix, func in STAGES:
        found = [(v[3]) for k, v in stats.stats.items() if k[0].endswith(suffix) and k[2] == func]  # type: ignore[attr-defined]
        if found:
            stages.append((label, max(found)))
    sub = sum(v[3] for k, v in stats.stats.items() if k[0].endswith("subprocess.py") and k[2] == "run")  # type: ignore[attr-defined]
    selfs = sorted(((v[2], f"{Path(k[0]).name}:{k[1]}({k[2]})") for k, v in stats.stats.items()), reverse=True)[:8]  # type: ignore[attr-defined]
    return {
        "wall_median": plain, "wall_via_pyenv_shim": via_shim, "wall_with_pyc": compiled, "version_only": version_s,
        "python_startup": bare_python, "imports_total": import_total, "imports_total_with_pyc": import_total_pyc, "imports_top": import_top[:8],
        "cprofile_wall": prof_s, "stages": stages, "subprocess_run_total": sub, "top_self": [(name, s) for s, name in selfs],
    }


# -- the run ------------------------------------------------------------------------------------------------------


def source_state() -> str:
    """git describe plus a hash of pyimage's sources: other people edit this tree while the bench runs."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted((REPO / "pyimage").rglob("*.py")):
        h.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    desc = run(["git", "-C", REPO, "describe", "--always", "--dirty"], check=False).stdout.strip()
    return f"{desc} (sources {h.hexdigest()[:12]})"


def median_measure(ms: list[Measure]) -> Measure:
    ok = [m for m in ms if m.seconds is not None and not m.error]
    if not ok:
        return ms[0] if ms else Measure()  # not measured for this tool: shown as "—"
    first = ok[0]
    return Measure(statistics.median(m.seconds for m in ok), first.new_gz, first.new_raw, first.new_layers, first.note,  # type: ignore[misc]
                   inflated=first.inflated, ingest_raw=first.ingest_raw)


def table(app: str, results: dict[str, dict[str, list[Measure]]], repeat: int, rates: Rates, compression: str = "gzip") -> str:
    tools = ("pyimage", "docker", "buildah", "pyoci")
    med = {t: {s: median_measure(results.get(t, {}).get(s, [])) for s, _ in SCENARIOS} for t in tools}
    lines = [
        f"### {app}" + (f" (median of {repeat})" if repeat > 1 else ""),
        "",
        "| scenario | pyimage s | limit s | pyimage/limit | docker build s | buildah s | pyoci s | docker/pyimage | buildah/pyimage | pyoci/pyimage | new layers: pyimage gz (tar) | buildah tar | pyoci tar |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    def sec(m: Measure) -> str:
        return "failed" if m.error else ("—" if m.seconds is None else f"{m.seconds:.2f}")

    def ratio(m: Measure, p: Measure) -> str:
        return f"{m.seconds / p.seconds:.1f}×" if m.seconds and p.seconds and not m.error and not p.error else "—"

    for key, label in SCENARIOS:
        p, k, b, o = med["pyimage"][key], med["docker"][key], med["buildah"][key], med["pyoci"][key]
        p_bytes = "—" if p.seconds is None or p.error else f"{human(p.new_gz)} ({human(p.new_raw)})"
        b_bytes = "—" if b.seconds is None or b.error else human(b.new_raw)
        o_bytes = "—" if o.seconds is None or o.error else human(o.new_raw)
        ok = p.seconds is not None and not p.error
        lim = rates.limit(p.inflated, (p.new_raw or 0) + p.ingest_raw, compression) if ok else None
        lim_s = "—" if lim is None else f"{lim:.2f}" if lim >= 0.1 else f"{lim:.3f}"
        lim_r = "—" if lim is None or p.seconds is None else "no bytes" if lim == 0 else f"{p.seconds / lim:.{1 if p.seconds < 10 * lim else 0}f}×"
        lines.append(f"| {label} | {sec(p)} | {lim_s} | {lim_r} | {sec(k)} | {sec(b)} | {sec(o)} | {ratio(k, p)} | {ratio(b, p)} | {ratio(o, p)} | {p_bytes} | {b_bytes} | {o_bytes} |")
    notes = []
    for t in tools:
        for key, label in SCENARIOS:
            m = med[t][key]
            if m.error:
                notes.append(f"- {t}, {label}: failed: {m.error.splitlines()[0][:300]}")
            elif m.note:
                notes.append(f"- {t}, {label}: {m.note}")
    return "\n".join(lines + ([""] + notes if notes else []))


def profile_report(app: str, prof: dict[str, Any]) -> str:
    lines = [
        f"#### {app}: a no-change rebuild",
        "",
        (f"- wall {prof['wall_median']:.2f} s (direct script); via the pyenv shim {prof['wall_via_pyenv_shim']:.2f} s; "
        f"with byte-compiled pyimage modules (PYTHONPYCACHEPREFIX, this machine sets PYTHONDONTWRITEBYTECODE=1) {prof['wall_with_pyc']:.2f} s"),
        f"- `pyimage --version` {prof['version_only']:.2f} s; bare `python -c pass` {prof['python_startup']:.2f} s; "
        f"imports under -X importtime {prof['imports_total']:.2f} s ({prof['imports_total_with_pyc']:.2f} s with .pyc files), biggest: "
        + ", ".join(f"{n} {s * 1000:.0f} ms" for n, s in prof["imports_top"][:6]),
        f"- cProfile ({prof['cprofile_wall']:.2f} s wall under the profiler); subprocess.run total {prof['subprocess_run_total']:.2f} s:",
    ]
    lines += [f"    - {label}: {s:.3f} s" for label, s in prof["stages"]]
    lines.append("- top self time: " + ", ".join(f"{n} {s * 1000:.0f} ms" for n, s in prof["top_self"][:6]))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--apps", default=",".join(APPS_DEFAULT), help="comma-separated examples (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=1, help="repeats per scenario; the table shows medians")
    ap.add_argument("--skip-docker", action="store_true", help="leave out docker build (BuildKit)")
    ap.add_argument("--skip-buildah", action="store_true")
    ap.add_argument("--skip-pyoci", action="store_true")
    ap.add_argument("--buildah-driver", default="vfs", choices=("vfs", "overlay"), help="buildah storage driver (default: %(default)s)")
    ap.add_argument("--skip-profile", action="store_true", help="skip the no-change rebuild profile")
    ap.add_argument("--compression", default="gzip", choices=("gzip", "zstd", "none"), help="pyimage's layer compression (none: plain tar, as docker build stores layers)")
    ap.add_argument("--json", type=Path, help="write every raw figure here")
    ap.add_argument("--pyimage", help="pyimage executable (default: the one on PATH, a pyenv shim resolved)")
    ap.add_argument("--workdir", type=Path, help=f"where to work (default: a new dir under {BENCH_HOME})")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (buildah stores are GBs)")
    args = ap.parse_args(argv)
    apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    for app in apps:
        if not (app_source(app) / "pyproject.toml").is_file():
            ap.error(f"no example {app!r} in {EXAMPLES} or {BENCH_APPS}")

    BENCH_HOME.mkdir(parents=True, exist_ok=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix=dt.datetime.now().strftime("run-%Y%m%d-%H%M%S-"), dir=BENCH_HOME))
    work.mkdir(parents=True, exist_ok=True)
    exe, py = find_pyimage(args.pyimage)
    host_py = shutil.which("python3.11") or sys.executable
    load_start = os.getloadavg()
    meta: dict[str, Any] = {
        "started": dt.datetime.now().isoformat(timespec="seconds"), "cores": os.cpu_count(), "loadavg_start": load_start,
        "pyimage": run([exe, "--version"]).stdout.strip(), "pyimage_exe": exe, "apps": apps, "repeat": args.repeat,
        "git": source_state(),
    }
    log(f"work dir {work}; {meta['pyimage']} ({exe}); {os.cpu_count()} cores; load {load_start[0]:.2f}")

    rootfs = debian_rootfs()
    tool = Pyimage(exe, py, rootfs, args.compression, work / "pycache-timed")
    log(f"base rootfs {rootfs} ({human(rootfs.stat().st_size)})")

    # Warm-up, untimed: each app built once into a seed cache (downloads its wheels, makes the build backend's
    # environment, writes pylock.pyimage.toml where the example has none). Every later project copy starts from here.
    seed = work / "seed-cache"
    templates: dict[str, Path] = {}
    pins: dict[str, list[Pin]] = {}
    warmup: dict[str, float] = {}
    extra: dict[str, list[Pin]] = {}  # wheels only the bumped dependency brings
    for app in apps:
        templates[app] = copy_project(app_source(app), work / "templates" / app)
        warmup[app], _ = tool.build(templates[app], seed, work / "warm" / app)
        pins[app] = read_pins(templates[app])
        log(f"warm-up {app}: {warmup[app]:.1f} s, {len(pins[app])} locked wheels")
        if app in BUMPS:  # downloads the bumped release's wheel into the seed: the timed bump only resolves
            bumped = copy_project(templates[app], work / "templates-bump" / app)
            bump_dependency(bumped, *BUMPS[app])
            tool.build(bumped, seed, work / "warm-bump" / app)
            extra[app] = [p for p in read_pins(bumped) if p not in pins[app]]
    meta["warmup_seconds"] = warmup
    wheel_sizes = {f"{p.name}=={p.version}": inflated_size(seed / "wheels" / p.sha256 / p.filename)
                   for app in apps for p in [*pins[app], *extra.get(app, [])]}

    # The machine's limit: rates measured now, on the run's biggest wheel (bench/limit.py).
    biggest = max((seed / "wheels" / p.sha256 / p.filename for app in apps for p in pins[app]), key=lambda w: w.stat().st_size)
    rates = limit_rates(biggest, workers=os.cpu_count() or 1)
    meta["rates"] = asdict(rates)
    log(f"machine on {rates.sample}: inflate {rates.inflate / 1e6:.0f} MB/s, deflate (pyimage's encoder, {rates.workers} cores) "
        f"{rates.deflate / 1e6:.0f} MB/s, sha256 {rates.sha256 / 1e6:.0f} MB/s")

    # The exact wheels pyimage used, for the Dockerfile and pyoci's venv.
    pip_wheel = find_pip_wheel()
    wheel_dirs = {app: wheel_dir(work / "wheels" / app, seed, [*pins[app], *extra.get(app, [])], host_py) for app in apps}

    pyoci: Pyoci | None = None
    registry: Registry | None = None
    pyoci_skip = "skipped (--skip-pyoci)" if args.skip_pyoci else ""
    if not args.skip_pyoci:
        try:
            pyoci, registry = setup_pyoci(work, rootfs, host_py)
            meta["pyoci"] = pyoci.version
            log(f"pyoci {pyoci.version}; base served at {pyoci.base}")
        except (BenchError, OSError, RuntimeError) as exc:
            pyoci_skip = f"pyoci cannot run here: {exc}"
            log(pyoci_skip)
    buildah_skip = "skipped (--skip-buildah)" if args.skip_buildah else ("" if shutil.which("buildah") else "buildah is not installed")
    if not buildah_skip:
        meta["buildah"] = run(["buildah", "--version"]).stdout.strip() + f", {args.buildah_driver} storage"

    docker_skip = "skipped (--skip-docker)" if args.skip_docker else ("" if shutil.which("dockerd") else "docker.io is not installed")
    engine, docker_import = None, 0.0
    if not docker_skip:
        from engines import DOCKER_CLIENT, start_dockerd

        try:
            engine = start_dockerd(("overlay2",))
            docker_import, _ = timed([DOCKER_CLIENT, "import", "--change", f"ENV PATH={DEFAULT_PATH}", str(rootfs), BASE_TAG], env=engine.env)
            meta["docker"] = f"Docker {engine.version()} ({engine.driver}, BuildKit)"
            log(f"{meta['docker']}; base imported in {docker_import:.1f} s")
        except (RuntimeError, OSError, BenchError) as exc:
            docker_skip = f"docker cannot run here: {exc}"
            log(docker_skip)
    results: Results = {app: {"pyimage": {}, "docker": {}, "buildah": {}, "pyoci": {}} for app in apps}

    def record(app: str, tool_name: str, scenarios: Iterable[str], fn: Callable[..., dict[str, Measure]], *fn_args: Any) -> None:
        try:
            got = fn(*fn_args)
        except BenchError as exc:
            log(f"{tool_name} {app} failed: {exc}")
            got = {s: Measure(error=str(exc)) for s in scenarios}
        for s, m in got.items():
            results[app][tool_name].setdefault(s, []).append(m)
        log(f"{tool_name} {app}: " + ", ".join(f"{s} {m.seconds:.2f}s" if m.seconds is not None else f"{s} failed" for s, m in got.items()))

    profiles: dict[str, Any] = {}
    try:
        for app in apps:
            for rep in range(args.repeat):
                record(app, "pyimage", [s for s, _ in SCENARIOS], pyimage_series, tool, app, templates[app], seed, work, rep, wheel_sizes)
                if engine is not None:
                    record(app, "docker", [s for s, _ in SCENARIOS], docker_series, engine, docker_import, app, templates[app], pins[app], wheel_dirs[app], pip_wheel.name, work, rep)
                if not buildah_skip:
                    record(app, "buildah", [s for s, _ in SCENARIOS], buildah_series, app, templates[app], pins[app], wheel_dirs[app],
                           pip_wheel.name, rootfs, work, rep, args.keep, args.buildah_driver)
                if pyoci is not None:
                    record(app, "pyoci", ["cold", "nochange", "change"], pyoci_series, pyoci, app, templates[app], pins[app], wheel_dirs[app], host_py, work, rep)
            if not args.skip_profile:
                d = work / "pyimage" / app / "r0"
                try:
                    profiles[app] = profile_rebuild(tool, d / "proj", d / "cache", d / "out", work, args.repeat)
                except BenchError as exc:
                    log(f"profile {app} failed: {exc}")
    finally:
        if registry is not None:
            registry.stop()
        if engine is not None:
            engine.stop()

    meta["loadavg_end"] = os.getloadavg()
    meta["git_end"] = source_state()
    meta["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    meta["total_seconds"] = round(time.perf_counter() - _T0, 1)
    print(f"## pyimage benchmark — {meta['started']}, {meta['cores']} cores, load average {load_start[0]:.2f} → {meta['loadavg_end'][0]:.2f}")
    print()
    moved = "" if meta["git_end"] == meta["git"] else f" (the tree moved to {meta['git_end']} during the run)"
    print(f"{meta['pyimage']} at {meta['git']}{moved}; {meta.get('docker', docker_skip)}; {meta.get('buildah', buildah_skip)}; pyoci {meta.get('pyoci', pyoci_skip)}")
    print(f"base: {rootfs.name} ({human(rootfs.stat().st_size)} Debian bookworm rootfs with python3); total run {meta['total_seconds']:.0f} s")
    if args.compression == "none":
        print(f"pyimage writes plain tar layers (--compression none, as docker build stores them). limit: inflate the new layers' "
              f"wheels at {rates.inflate / 1e6:.0f} MB/s and sha256 their tars once at {rates.sha256 / 1e6:.0f} MB/s; rates "
              f"measured in this run on {rates.sample}; resolution and start-up not included")
    else:
        print(f"limit: inflate the new layers' wheels at {rates.inflate / 1e6:.0f} MB/s, deflate their tars (and the base's, when "
              f"ingested) at {rates.deflate / 1e6:.0f} MB/s (pyimage's encoder, libdeflate level 1, {rates.workers} cores), sha256 them twice at "
              f"{rates.sha256 / 1e6:.0f} MB/s; rates measured in this run on {rates.sample}; resolution and start-up not included")
    for app in apps:
        print()
        print(table(app, results[app], args.repeat, rates, args.compression))
    if pyoci_skip:
        print(f"\npyoci: {pyoci_skip}")
    if profiles:
        print("\n### Where a no-change pyimage rebuild spends its time\n")
        for app, prof in profiles.items():
            print(profile_report(app, prof))
            print()
    if args.json:
        payload = {
            "meta": meta,
            "results": {app: {t: {s: [asdict(m) for m in ms] for s, ms in by.items()} for t, by in tools.items()} for app, tools in results.items()},
            "profiles": profiles,
        }
        args.json.write_text(json.dumps(payload, indent=1, default=str) + "\n")
        log(f"wrote {args.json}")
    if args.keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
