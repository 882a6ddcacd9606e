"""The ``Wheel`` value: what a wheel is (name, version, tags), which bytes it is (sha256) and how big it installs."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from pyimage.errors import BuildError
from pyimage.layers.compress import file_sha256

__all__ = ["Wheel", "read_wheel", "installed_size"]


@dataclass(frozen=True)
class Wheel:
    """A wheel: ``name`` is canonical (PEP 503), ``sha256`` the hex digest of the file. ``path`` is None while the
    file is not needed (its layers are cached) and not in the local wheel cache."""

    name: str
    version: str
    filename: str
    sha256: str
    path: Path | None
    installed_size: int

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def installed_size(path: Path) -> int:
    """Sum of the uncompressed sizes in the zip's central directory: no member is inflated."""
    try:
        with zipfile.ZipFile(path) as zf:
            return sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise BuildError(f"{path.name}: not a readable wheel ({exc})", "re-download or rebuild the wheel") from exc


def read_wheel(path: Path, sha256: str | None = None, size: int | None = None) -> Wheel:
    """A ``Wheel`` for ``path``; ``sha256``/``size`` skip re-reading what a lock file or cache already knows."""
    try:
        name, version, _build, _tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        raise BuildError(f"{path.name}: not a valid wheel file name ({exc})", "wheel names follow PEP 427") from exc
    return Wheel(
        name=canonicalize_name(name),
        version=str(version),
        filename=path.name,
        sha256=sha256 or file_sha256(path).partition(":")[2],
        path=path,
        installed_size=installed_size(path) if size is None else size,
    )
