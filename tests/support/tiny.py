"""Small, offline inputs for fault and hostile-input tests: a project, a base layout, a canary tree, the CLI.

``tiny_project`` writes a project whose build backend lives in the project itself (``backend-path``), so
building its wheel installs nothing; its dependencies come from a find-links directory of hand-made wheels
(``make_wheel``) with the index switched off. ``tiny_base`` is an OCI layout whose one layer holds a file
named like an interpreter, which is all the base scan needs. A whole build takes about a second, with no
network, so each hostile case can end with a rerun that must succeed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import pytest

from support.registry import make_image, make_layer

from pyimage.oci.layout import write_layout

__all__ = ["tiny_project", "tiny_base", "snapshot", "Run", "run_pyimage", "assert_one_error", "verify_clean", "offline_env", "small_tmpfs"]

_BACKEND = '''\
"""A PEP 517 backend for tests: packages src/ into a wheel with a correct RECORD, nothing installed."""
import base64, hashlib, os, sys, zipfile
if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def _h(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    if os.path.exists("FAIL"):  # a test's way to make the backend fail, with this message
        print("tiny backend: checking the sources", file=sys.stderr)
        raise RuntimeError(open("FAIL").read().strip())
    if os.path.exists("SLEEP"):  # a test's way to hold the build here (to interrupt or kill it)
        import time
        open("SLEEPING", "w").close()
        time.sleep(float(open("SLEEP").read()))
    with open("pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    name, version = project["name"].replace("-", "_"), project["version"]
    files = {}
    for root, _dirs, names in os.walk("src"):
        for n in sorted(names):
            path = os.path.join(root, n)
            with open(path, "rb") as f:
                files[os.path.relpath(path, "src").replace(os.sep, "/")] = f.read()
    di = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\\nName: {project['name']}\\nVersion: {version}\\n"
    for dep in project.get("dependencies", []):
        meta += f"Requires-Dist: {dep}\\n"
    files[f"{di}/METADATA"] = meta.encode()
    files[f"{di}/WHEEL"] = b"Wheel-Version: 1.0\\nGenerator: tiny\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    scripts = project.get("scripts", {})
    if scripts:
        files[f"{di}/entry_points.txt"] = ("[console_scripts]\\n" + "".join(f"{k} = {v}\\n" for k, v in scripts.items())).encode()
    record = "".join(f"{p},{_h(d)},{len(d)}\\n" for p, d in files.items()) + f"{di}/RECORD,,\\n"
    files[f"{di}/RECORD"] = record.encode()
    out = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, out), "w") as zf:
        for p, d in files.items():
            info = zipfile.ZipInfo(p, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, d)
    return out
'''


def tiny_project(directory: Path, name: str = "tinyapp", version: str = "1.0", dependencies: Sequence[str] = (), tool: str = "") -> Path:
    """A project with one module and one console script, built by an in-tree backend; returns its directory."""
    module = name.replace("-", "_")
    (directory / "src" / module).mkdir(parents=True, exist_ok=True)
    (directory / "src" / module / "__init__.py").write_text("def main():\n    print('hello from tiny')\n")
    (directory / "_backend").mkdir(exist_ok=True)
    (directory / "_backend" / "tiny_backend.py").write_text(_BACKEND)
    deps = ", ".join(json.dumps(d) for d in dependencies)
    (directory / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "tiny_backend"\nbackend-path = ["_backend"]\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = [{deps}]\n\n'
        f'[project.scripts]\n{name} = "{module}:main"\n\n[tool.pyimage]\n{tool}\n'
    )
    return directory


def tiny_base(directory: Path, tag: str = "base", extra: Mapping[str, bytes] | None = None) -> str:
    """An OCI layout at ``directory`` holding a one-layer image with ``usr/bin/python3.11``; returns ``oci:DIR:TAG``."""
    files = {"usr/bin/python3.11": b"#!not really python\n", "etc/os-release": b"ID=tiny\n", **(extra or {})}
    layer = make_layer(directory.parent / f".{directory.name}-layers", files, name="base")
    write_layout(make_image([layer]), directory, tag)
    return f"oci:{directory}:{tag}"


def snapshot(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under ``root``: relative path -> (kind, mode, sha256 or link target); compares trees exactly."""
    out: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), "")
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def offline_env(find_links: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment for an offline run: no index, wheels only from ``find_links``, no debug tracebacks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYIMAGE_"))}
    env.update(PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", COLUMNS="200")
    if find_links is not None:
        env["PIP_FIND_LINKS"] = str(find_links)
    env.update(extra)
    return env


def run_pyimage(*args: str, cache: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 300) -> Run:
    """The real CLI (``python -m pyimage``) with ``--cache-dir cache`` appended to the command."""
    cmd = [sys.executable, "-m", "pyimage", *args]
    if args and args[0] in ("build", "plan", "lock", "inspect"):
        cmd += ["--cache-dir", str(cache)]
    elif args and args[0] == "cache":
        cmd += ["--cache-dir", str(cache)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(env or offline_env()), cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)
    return Run(done.returncode, done.stdout, done.stderr)


def assert_one_error(result: Run, code: int, *needles: str) -> str:
    """Exit ``code``, no traceback, exactly one ``error:`` line (followed by its ``hint:``) holding each needle."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "internal error" not in errors[0], result.stderr
    lines = result.stderr.splitlines()
    i = lines.index(errors[0])
    assert i + 1 < len(lines) and lines[i + 1].startswith("hint:"), result.stderr
    for needle in needles:
        assert needle in errors[0], result.stderr
    return errors[0]


def verify_clean(cache: Path) -> None:
    """``pyimage cache verify`` exits 0 and calls the cache clean (no corrupt blob, no leftover temp file); a build
    that failed before opening the cache made none, which is clean too (``cache verify`` refuses a directory with
    no cache, as a mistyped one)."""
    if not cache.exists():
        return
    done = run_pyimage("cache", "verify", cache=cache)
    assert done.returncode == 0 and "clean" in done.stderr, done.stderr


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "1m", read_only: bool = False) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``path`` (root only): a disk that fills up, or a read-only one."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
