"""Interpreters on this machine of the target's Python version, for building the app wheel and sdists.

A wheel built by Python 3.12 for a 3.11 image carries cp312 extension modules; building with an interpreter
of the target's minor version is what makes compiled code (and setup.py logic that reads ``sys.version_info``)
right. Lookup order: the Python running pyimage, ``pythonX.Y`` on PATH, pyenv's versions
(``$PYENV_ROOT/versions/X.Y.*``), then ``uv python find X.Y`` when uv is installed (the only step that
starts a process).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pyimage.tools as tools
from pyimage.errors import BuildError

__all__ = ["find_python", "host_version"]


def host_version() -> str:
    """"X.Y" of the Python running pyimage."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def find_python(version: str) -> str | None:
    """The path of a CPython ``version`` ("3.11") on this machine, or None."""
    if version == host_version():
        return sys.executable
    found = shutil.which(f"python{version}")
    if found and Path(found).parent.name != "shims":  # pyenv's shims fail for versions not selected globally
        return found
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    if root.is_dir():
        def patch(path: Path) -> int:
            tail = path.name[len(version) + 1 :]
            return int(tail) if tail.isdigit() else -1

        for cand in sorted(root.glob(f"{version}.*"), key=patch, reverse=True):
            exe = cand / "bin" / f"python{version}"
            if patch(cand) >= 0 and exe.exists():
                return str(exe)
    uv = shutil.which("uv")
    if uv:
        try:
            proc = tools.run([uv, "python", "find", version], tool="uv", doing=f"looking for Python {version}", timeout=30)
        except BuildError:  # uv gone or hung: no interpreter found, as for any other place that lacks one
            return None
        path = proc.stdout.strip()
        if proc.ok and path and Path(path).exists():
            return path
    return None
