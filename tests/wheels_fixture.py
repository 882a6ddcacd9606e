"""Wheels for the tests: a few real ones from PyPI, cached by requirement, and small hand-made ones.

``real_wheels`` (session fixture) downloads each requirement in ``REAL_WHEELS`` once with ``pip download`` into
``<test cache>/wheels/<requirement>/`` and reuses it afterwards (an ``fcntl`` lock keeps parallel runs from
downloading twice). ``make_wheel`` writes a wheel whose WHEEL, METADATA and RECORD are correct, so a test can
put exactly one defect in it (an escaping path, a wrong hash) and nothing else.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Mapping

import pytest

__all__ = ["REAL_WHEELS", "download_wheel", "make_sdist", "make_wheel", "record_hash", "real_wheels"]

# Small, pure-Python, and on the local PyPI mirror: six is one module; wheel has a console script.
REAL_WHEELS = {"six": "six==1.17.0", "wheel": "wheel==0.46.3"}


def download_wheel(requirement: str, cache: Path, target: tuple[str, str] | None = None) -> Path:
    """The wheel for ``requirement`` (``name==version``), downloaded once into ``cache/<requirement>/``;
    ``target`` = (platform tag, Python version) fetches another machine's wheel, ``("manylinux2014_aarch64", "3.11")``."""
    folder = cache / (requirement if target is None else f"{requirement}-{target[0]}-{target[1]}")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = sorted(folder.glob("*.whl"))
        if found:
            return found[0]
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, requirement,
                 *(["--platform", target[0], "--python-version", target[1]] if target else [])],
                check=True,
            )
            (wheel,) = Path(tmp).glob("*.whl")
            shutil.move(str(wheel), folder / wheel.name)  # same file system: an atomic rename
        return folder / wheel.name


@pytest.fixture(scope="session")
def real_wheels(test_cache_dir: Path) -> dict[str, Path]:
    """``{"six": Path, "wheel": Path}``: real wheels from PyPI, cached by requirement."""
    cache = test_cache_dir / "wheels"
    return {name: download_wheel(req, cache) for name, req in REAL_WHEELS.items()}


def record_hash(data: bytes) -> str:
    """The RECORD form of a sha256: ``sha256=<urlsafe base64, no padding>``."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def make_wheel(
    directory: Path,
    name: str = "demo",
    version: str = "1.0",
    files: Mapping[str, bytes] | None = None,
    *,
    entry_points: str | None = None,
    executable: tuple[str, ...] = (),
    purelib: bool = True,
    tamper: Mapping[str, bytes] | None = None,
    requires_python: str | None = None,
    requires: tuple[str, ...] = (),
) -> Path:
    """Writes ``{name}-{version}-py3-none-any.whl`` into ``directory`` and returns its path.

    ``files`` maps archive paths to contents (any path, even ``../x``: the caller chooses the defect);
    RECORD lists every file with its true hash, except that ``tamper`` replaces a file's stored bytes after
    its hash was recorded. ``executable`` paths get mode 0755 in the zip. ``requires_python`` and ``requires``
    become METADATA's Requires-Python and Requires-Dist.
    """
    dist_info = f"{name}-{version}.dist-info"
    members: dict[str, bytes] = dict(files or {})
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += f"Requires-Python: {requires_python}\n" if requires_python else ""
    metadata += "".join(f"Requires-Dist: {req}\n" for req in requires)
    members[f"{dist_info}/METADATA"] = metadata.encode()
    members[f"{dist_info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: pyimage-tests\nRoot-Is-Purelib: {'true' if purelib else 'false'}\n"
        "Tag: py3-none-any\n"
    ).encode()
    if entry_points is not None:
        members[f"{dist_info}/entry_points.txt"] = entry_points.encode()
    record_path = f"{dist_info}/RECORD"
    record = "".join(f"{path},{record_hash(data)},{len(data)}\n" for path, data in members.items())
    record += f"{record_path},,\n"
    members.update(tamper or {})
    members[record_path] = record.encode()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            info = zipfile.ZipInfo(member, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100755 if member in executable else 0o100644) << 16
            zf.writestr(info, data)
    return path


SETUPTOOLS_PYPROJECT = b'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'


def make_sdist(directory: Path, name: str, version: str, files: Mapping[str, bytes]) -> Path:
    """Writes ``{name}-{version}.tar.gz`` (PKG-INFO and a setuptools pyproject.toml, plus ``files`` under its top
    directory) into ``directory`` and returns its path."""
    import io
    import tarfile

    top = f"{name}-{version}"
    members = {"PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(), "pyproject.toml": SETUPTOOLS_PYPROJECT, **files}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{top}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(f"{top}/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
