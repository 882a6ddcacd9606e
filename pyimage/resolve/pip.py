"""Resolution with pip's own resolver in report mode, and fetching the wheels it chose.

pip runs as ``python -m pip`` from pyimage's own environment, so the user's pip configuration (pip.conf,
``PIP_*`` variables: index-url, extra-index-url, find-links, constraints, certificates) applies as it does to
their ``pip install``. Dependencies published only as sdists are built into wheels on this machine with an
interpreter of the target's version and offered back to the resolver through a find-links directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from packaging.utils import canonicalize_name

from pyimage.cache import Cache
from pyimage.errors import BuildError
from pyimage.resolve.interpreters import find_python, host_version
from pyimage.resolve.target import Target

__all__ = ["Pin", "resolve", "fetch_wheels", "host_python"]

_MAX_SDIST_ROUNDS = 20


@dataclass(frozen=True)
class Pin:
    """One resolved distribution: a wheel file, where to get it, and its sha256 (hex)."""

    name: str
    version: str
    filename: str
    url: str
    sha256: str
    size: int | None = None

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "filename": self.filename, "url": self.url, "sha256": self.sha256}


def host_python(version: str) -> str | None:
    """An interpreter of Python ``version`` on this machine (this one, PATH, pyenv, uv), for sdist builds."""
    return find_python(version)


def _pip(args: Sequence[str], *, python: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return subprocess.run([python or sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env)


_NO_MATCH = re.compile(r"No matching distribution found for ([A-Za-z0-9][A-Za-z0-9._-]*)(\S*)")


def _last_error(stderr: str) -> str:
    lines = [l.strip() for l in stderr.splitlines() if l.strip() and not l.startswith("WARNING")]
    errors = [l for l in lines if l.startswith("ERROR")]
    return (errors[-1] if errors else (lines[-1] if lines else "pip failed")).removeprefix("ERROR: ")


_SUBPROCESS_OUTPUT = re.compile(r"\[\d+ lines? of output\]\n(.*?)\n\s*\[end of output\]", re.S)


def _build_failure(output: str) -> str:
    """The build backend's own last words (pip boxes them as "[N lines of output]"), else pip's error line."""
    for block in reversed(_SUBPROCESS_OUTPUT.findall(output)):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return _last_error(output)


def resolve(
    requirements: Sequence[str], target: Target, cache: Cache, *, extra_args: Sequence[str] = (), prefer: Sequence[Pin] = ()
) -> list[Pin]:
    """Pins for ``requirements`` (and everything they need) as wheels for ``target``.

    ``requirements`` are pip arguments (a wheel path, ``-r file``, ``name==1.0``). ``prefer`` (the old lock)
    is tried as constraints first, so a refresh keeps versions that still fit. Raises BuildError naming the
    package when no wheel exists for the target and its sdist cannot be built here.
    """
    if prefer:
        constraints = cache.tmp_path("-constraints.txt")
        constraints.write_text("".join(f"{p.name}=={p.version}\n" for p in prefer))
        try:
            return resolve(requirements, target, cache, extra_args=[*extra_args, "-c", str(constraints)])
        except BuildError:
            pass  # the old versions no longer fit the new inputs: resolve freely
        finally:
            constraints.unlink(missing_ok=True)
    built_dir = cache.root / "sdist-wheels" / target.python
    built_dir.mkdir(parents=True, exist_ok=True)
    tried: set[str] = set()
    with tempfile.TemporaryDirectory(dir=cache.root / "tmp") as tmp:
        report = Path(tmp) / "report.json"
        for _ in range(_MAX_SDIST_ROUNDS):
            proc = _pip(
                [
                    "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
                    "--target", str(Path(tmp) / "unused-target"), "--find-links", str(built_dir),
                    *target.pip_args(), *extra_args, *requirements,
                ]
            )
            if proc.returncode == 0:
                break
            missing = _NO_MATCH.search(proc.stderr)
            if not missing or canonicalize_name(missing.group(1)) in tried:
                name = missing.group(1) if missing else None
                raise BuildError(
                    f"cannot resolve the dependencies for {target.describe()}: {_last_error(proc.stderr)}",
                    f"{name} has no wheel for this target and no sdist that builds here; pin a version that has one, or pick a base/python that matches"
                    if name
                    else "run the same requirements through `pip install --dry-run` to see pip's full message",
                )
            name, spec = missing.group(1), missing.group(2)
            tried.add(canonicalize_name(name))
            _build_sdist(name, spec, target, built_dir, extra_args)
        else:
            raise BuildError("dependency resolution did not converge", "report this with `pyimage build --debug` output")
        data = json.loads(report.read_text())
    pins = []
    for item in data.get("install", []):
        meta, info = item["metadata"], item.get("download_info", {})
        url = info.get("url", "")
        hashes = info.get("archive_info", {}).get("hashes", {})
        sha = hashes.get("sha256") or info.get("archive_info", {}).get("hash", "").partition("=")[2]
        filename = urllib.parse.unquote(url.rsplit("/", 1)[-1].split("#")[0])
        if not filename.endswith(".whl"):
            raise BuildError(f"{meta['name']}: pip chose {filename or url}, which is not a wheel", "report this with --debug output")
        pins.append(Pin(canonicalize_name(meta["name"]), meta["version"], filename, url, sha))
    return sorted(pins, key=lambda p: p.name)


def _build_sdist(name: str, spec: str, target: Target, out: Path, extra_args: Sequence[str]) -> None:
    python = host_python(target.python)
    if python is None:
        raise BuildError(
            f"{name}: no wheel for {target.describe()}, and building its sdist needs a Python {target.python} on this machine (pyimage runs on {host_version()}; none of {target.python} found on PATH, in pyenv or uv)",
            f"install Python {target.python} (pyenv install {target.python} or uv python install {target.python}), or pin a {name} version that publishes wheels",
        )
    proc = _pip(["wheel", "--no-deps", "--no-binary", name, "--wheel-dir", str(out), *extra_args, f"{name}{spec}"], python=python)
    if proc.returncode != 0:
        raise BuildError(
            f"{name}: no wheel for {target.describe()}, and its sdist failed to build: {_build_failure(proc.stdout + proc.stderr)}",
            f"install the build requirements of {name} (compiler, headers), or pin a version that publishes wheels",
        )
    for built in out.glob("*.whl"):
        if not any(t in built.name for t in ("-none-any", f"linux_{target.machine}", "manylinux", "musllinux")):
            built.unlink()


def fetch_wheels(pins: Sequence[Pin], target: Target, cache: Cache) -> dict[str, Path]:
    """The local path of every pinned wheel, by name; downloads only what the cache lacks, verified by sha256."""
    paths: dict[str, Path] = {}
    missing: list[Pin] = []
    for pin in pins:
        hit = cache.cached_wheel(pin.sha256, pin.filename) if pin.sha256 else None
        if hit:
            paths[pin.name] = hit
        elif pin.url.startswith("file:"):
            local = Path(urllib.parse.unquote(urllib.parse.urlparse(pin.url).path))
            if not local.is_file():
                raise BuildError(f"{pin.name}: {local} is gone", "run `pyimage lock` to resolve again")
            paths[pin.name], _ = cache.add_wheel(local, pin.sha256 or None)
        else:
            missing.append(pin)
    if missing:
        with tempfile.TemporaryDirectory(dir=cache.root / "tmp") as tmp:
            reqs = Path(tmp) / "requirements.txt"
            reqs.write_text("".join(f"{p.name} @ {p.url} --hash=sha256:{p.sha256}\n" for p in missing))
            dest = Path(tmp) / "wheels"
            proc = _pip(["download", "--no-deps", "--require-hashes", "--dest", str(dest), *target.pip_args(), "-r", str(reqs)])
            if proc.returncode != 0:
                raise BuildError(f"cannot download the locked wheels: {_last_error(proc.stderr)}", "check the network and index settings, or run `pyimage lock`")
            for pin in missing:
                got = dest / pin.filename
                if not got.exists():
                    raise BuildError(f"{pin.name}: pip did not download {pin.filename}", "run `pyimage lock` to resolve again")
                paths[pin.name], _ = cache.add_wheel(got, pin.sha256)
    return paths
