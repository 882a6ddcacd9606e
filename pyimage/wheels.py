"""The ``Wheel`` value: what a wheel is (name, version, tags), which bytes it is (sha256) and how big it installs."""

from __future__ import annotations

import contextlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from pyimage.errors import BuildError
from pyimage.hashing import file_digest, hex_of

__all__ = ["Wheel", "read_wheel", "read_metadata", "installed_size", "script_source"]


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
        sha256=sha256 or hex_of(file_digest(path)),
        path=path,
        installed_size=installed_size(path) if size is None else size,
    )


class AppMetadata(NamedTuple):
    name: str
    requires: list[str]  # Requires-Dist lines
    scripts: list[str]
    requires_python: str | None
    extras: frozenset[str]  # the extras it provides, normalized (Provides-Extra, and any a requirement's marker names)


_EXTRA_MARKER_RE = re.compile(r"""\bextra\s*==\s*['"]([^'"]+)['"]""")


def read_metadata(app: Path) -> AppMetadata:
    """Name, Requires-Dist lines, script names, Requires-Python and extras from the app wheel's metadata. The
    scripts are its console scripts and the legacy scripts it carries in ``NAME.data/scripts/`` (setup.py's
    ``scripts=['hg']``): both land in the venv's bin, so either can be the image's entrypoint."""
    with zipfile.ZipFile(app) as zf:
        dist_info = next(n.split("/")[0] for n in zf.namelist() if n.split("/")[0].endswith(".dist-info"))
        meta = _headers(zf.read(f"{dist_info}/METADATA").decode("utf-8"))
        scripts: list[str] = []
        with contextlib.suppress(KeyError):
            scripts = _console_scripts(zf.read(f"{dist_info}/entry_points.txt").decode("utf-8"))
        data = dist_info[: -len(".dist-info")] + ".data/scripts/"
        scripts += [n[len(data) :] for n in zf.namelist() if n.startswith(data) and "/" not in n[len(data) :] and n[len(data) :]]
    first = {k: v[0] for k, v in meta.items()}
    requires = meta.get("requires-dist", [])
    extras = {*meta.get("provides-extra", []), *(m for line in requires for m in _EXTRA_MARKER_RE.findall(line))}
    return AppMetadata(first.get("name", ""), requires, sorted(set(scripts)), first.get("requires-python"), frozenset(canonicalize_name(e) for e in extras))


def _headers(text: str) -> dict[str, list[str]]:
    """The header fields of a core-metadata file (RFC 822 style: ``Name: value`` lines up to the first blank line,
    a line starting with whitespace continuing the one before), by lower-cased name. (email.parser and
    pypa/installer's entry point reader cost every build ~15 ms of imports for these few fields.)"""
    fields: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in text.splitlines():
        if not line.strip():
            break
        if line[0] in " \t" and last:
            last[-1] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep:
            last = fields.setdefault(name.strip().lower(), [])
            last.append(value.strip())
    return fields


def script_source(app: Path, script: str) -> tuple[str, str, str] | None:
    """(``module:object`` as the console script ``script`` names it, the object's first name, the module's source)
    when the app wheel itself holds that module as a .py file; None otherwise (another wheel's module, a legacy
    script, an extension module, or an object that is a submodule of the package: the script's
    ``from PKG import NAME`` imports it)."""
    with zipfile.ZipFile(app) as zf:
        dist_info = next(n.split("/")[0] for n in zf.namelist() if n.split("/")[0].endswith(".dist-info"))
        try:
            text = zf.read(f"{dist_info}/entry_points.txt").decode("utf-8", "replace")
        except KeyError:
            return None
        section, target = "", ""
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
            elif section == "console_scripts" and line.split("=", 1)[0].strip() == script and "=" in line:
                target = line.split("=", 1)[1].split("[")[0].strip()
        module, _, attr = target.partition(":")
        module, attr = module.strip(), attr.strip()
        if not module or not attr or not all(p.isidentifier() for p in module.split(".")):
            return None
        stem = module.replace(".", "/")
        first = attr.split(".")[0]
        names = set(zf.namelist())
        if f"{stem}/{first}.py" in names or any(n.startswith(f"{stem}/{first}/") for n in names):
            return None
        for name in (f"{stem}.py", f"{stem}/__init__.py"):
            try:
                source = zf.read(name).decode("utf-8", "replace")
            except KeyError:
                continue
            return f"{module}:{attr}", attr.split(".")[0], source
    return None


def _console_scripts(text: str) -> list[str]:
    """The names in the ``[console_scripts]`` section of an ``entry_points.txt``."""
    names, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == "console_scripts" and "=" in line:
            names.append(line.split("=", 1)[0].strip())
    return names
