"""The project's own wheel, built with pypa/build in a build environment that is made once and reused.

A fresh isolated environment per build costs seconds (pip installing the backend each time); a code change
must cost well under one. One environment per ``build-system.requires`` (and host Python) lives in the cache,
is marked ready only after its requirements installed, and is rebuilt if that mark is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from pyimage.cache import Cache
from pyimage.errors import BuildError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["build_app_wheel", "build_requires", "source_fingerprint"]

_DEFAULT_SYSTEM = {"requires": ["setuptools>=40.8.0"], "build-backend": "setuptools.build_meta:__legacy__"}


def build_requires(project_dir: Path) -> tuple[list[str], str]:
    data = tomllib.loads((project_dir / "pyproject.toml").read_text())
    system = data.get("build-system") or _DEFAULT_SYSTEM
    return sorted(system.get("requires", [])), system.get("build-backend", _DEFAULT_SYSTEM["build-backend"])


def _install(env_python: Path, requirements: list[str]) -> None:
    if not requirements:
        return
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_python), "install", "--quiet", *requirements],
        capture_output=True,
        text=True,
        env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1"),
    )
    if proc.returncode != 0:
        last = [l for l in proc.stderr.splitlines() if l.strip()][-1:] or ["pip failed"]
        raise BuildError(f"cannot install the build requirements {requirements}: {last[0]}", "check [build-system] requires and your index settings")


def _env(cache: Cache, requires: list[str]) -> Path:
    key = hashlib.sha256(json.dumps([sys.version, requires]).encode()).hexdigest()[:24]
    env_dir = cache.root / "envs" / key
    python = env_dir / "bin" / "python"
    ready = env_dir / ".pyimage-ready"
    with cache.lock(f"env-{key}"):
        if not (ready.exists() and python.exists()):
            if env_dir.exists():
                shutil.rmtree(env_dir)
            venv.create(env_dir, with_pip=False, symlinks=True)
            _install(python, requires)
            ready.write_text(json.dumps(requires))
    return python


_SKIP_DIRS = {".git", ".hg", ".svn", "dist", "build", "__pycache__", ".venv", "venv", ".tox", ".nox", "node_modules", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".cache"}


def source_fingerprint(project_dir: Path, extra: object) -> str:
    """A hash of every file the build backend could read (path, size, mtime) plus ``extra``.

    Output and tool directories are skipped; git's HEAD and index stamps are included so that a version taken
    from VCS (setuptools-scm, hatch-vcs) changes the fingerprint too.
    """
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    stack = [project_dir]
    while stack:
        here = stack.pop()
        with os.scandir(here) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_dir(follow_symlinks=False):
                    if entry.name not in _SKIP_DIRS and not entry.name.endswith(".egg-info"):
                        stack.append(Path(entry.path))
                elif entry.is_file() and not (here == project_dir and entry.name.startswith("pylock.") and entry.name.endswith(".toml")):
                    st = entry.stat()  # (pyimage's own lock file is an output, not a source)
                    h.update(f"{entry.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))  # any file name, UTF-8 or not
    for name in (".git/HEAD", ".git/index"):
        path = project_dir / name
        if path.exists():
            st = path.stat()
            h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{path.read_bytes()[:200] if name.endswith('HEAD') else b''}\n".encode())
    return h.hexdigest()[:32]


def build_app_wheel(project_dir: Path, out_dir: Path, cache: Cache, epoch: int) -> Path:
    """The project's wheel in ``out_dir`` (built with SOURCE_DATE_EPOCH=``epoch``); returns its path.

    A wheel built from the same sources (same fingerprint) is taken from the cache instead of running the
    backend again: a no-change rebuild starts no build subprocess at all.
    """
    requires, backend = build_requires(project_dir)
    fingerprint = source_fingerprint(project_dir, [requires, backend, epoch, sys.version])
    kept = cache.root / "appwheels" / fingerprint
    out_dir.mkdir(parents=True, exist_ok=True)
    for wheel in kept.glob("*.whl") if kept.is_dir() else ():
        dest = out_dir / wheel.name
        shutil.copyfile(wheel, dest)
        return dest
    built = _build(project_dir, out_dir, cache, epoch, requires)
    staging = cache.tmp_path("-appwheel")
    staging.mkdir()
    shutil.copyfile(built, staging / built.name)
    kept.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, kept)
    except OSError:  # another build of the same sources got there first
        shutil.rmtree(staging, ignore_errors=True)
    return built


def _build(project_dir: Path, out_dir: Path, cache: Cache, epoch: int, requires: list[str]) -> Path:
    from build import BuildBackendException, ProjectBuilder

    python = _env(cache, requires)

    def runner(cmd, cwd=None, extra_environ=None):  # type: ignore[no-untyped-def]
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), **(extra_environ or {}))
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise backend_failure(proc.stdout + "\n" + proc.stderr)

    builder = ProjectBuilder(project_dir, python_executable=str(python), runner=runner)
    # The backend's dynamic build requirements are asked once per environment and pyproject.toml, not per build.
    checked = python.parent.parent / f".deps-{hashlib.sha256((project_dir / 'pyproject.toml').read_bytes()).hexdigest()[:16]}"
    try:
        if not checked.exists():
            missing = builder.check_dependencies("wheel")
            if missing:
                _install(python, sorted({r for group in missing for r in group[:1]}))
            checked.touch()
        return Path(builder.build("wheel", out_dir))
    except BuildBackendException as exc:
        inner = getattr(exc, "exception", None)
        raise (inner if isinstance(inner, BuildError) else backend_failure(str(exc))) from None


def backend_failure(output: str, keep: int = 10) -> BuildError:
    """The backend's own last lines, without Python traceback frames: its final line (the exception, or what it
    printed last) is the error, the lines before it are shown above as context."""
    lines: list[str] = []
    in_traceback = False
    for line in output.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            in_traceback = True
            continue
        if in_traceback and (line.startswith(" ") or not line.strip()):
            continue  # a frame ("  File …", its source line) of the traceback
        in_traceback = False
        if line.strip():
            lines.append(line.rstrip())
    last = lines[-1].strip() if lines else "the build backend failed without a message"
    return BuildError(
        f"building the project's wheel failed: {last[:300]}",
        "fix the error above in the project, or run `python -m build --wheel` there to see the full output",
        tuple(l[:300] for l in lines[-keep:-1]),
    )
