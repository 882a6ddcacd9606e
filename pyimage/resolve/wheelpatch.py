"""The project's wheel made from its last build when only files the backend copies into it changed.

Building the app's wheel starts the backend (a Python process importing hatchling, say): ~0.2 s of a one-line
change's ~0.4 s. For a pure-Python project whose metadata is static, a wheel backend copies each source file into
the wheel byte for byte, so the wheel of the edited tree is the last wheel with those members' bytes (and their
RECORD lines) replaced. Like Jib and ko, which copy changed class files and binaries into their layer without
a build tool in between, this path copies the edited files into the last wheel, and only where that is provably
what the backend would have written:

- the backend is one that copies sources verbatim (hatchling, flit-core, pdm-backend, poetry-core, uv_build,
  setuptools without a ``setup.py``), with no build hooks, no file it writes into the tree, and ``[project]``
  metadata that is all static, or a ``dynamic`` version read from a file pyproject.toml names (``hatch new``'s
  ``__about__.py``), which is then never copied in;
- everything else the backend could read is the same: the set of files and their modes, ``pyproject.toml``
  and every other file that is not a copied member, the VCS state, the backend, interpreter and epoch (the
  record is keyed by all of that: ``shape``);
- each changed file was, at the last build, the one and only source of exactly one member (same bytes, and the
  member path a suffix of its path: ``src/app/cli.py`` → ``app/cli.py``).

Anything else (a new, removed or renamed file, an edited ``README`` the metadata embeds, a file the wheel does
not hold) builds with the backend as before. The tests build both ways, for each backend, and compare.
"""

from __future__ import annotations

import base64
import collections
import copy
import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from pyimage.cache import Cache, Meta
from pyimage.hashing import hash_stream, hex_of

__all__ = ["Source", "SOURCES", "license_globs", "patchable", "remember", "patch"]

# Backends that copy a pure-Python project's files into the wheel as they are.
_COPYING_BACKENDS = {"hatchling.build", "flit_core.buildapi", "pdm.backend", "poetry.core.masonry.api", "uv_build", "setuptools.build_meta"}
# Files a backend reads for its configuration: never a copied member, whatever their bytes.
_CONFIG = {"pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "pdm_build.py", "build.py", "hatch.toml", "hatch_build.py"}


@dataclass(frozen=True)
class Source:
    """One entry of the project's tree as the fingerprint sees it: a regular file (``digest`` its sha256, hex) or
    a symlink (``link`` its target)."""

    rel: str
    executable: bool
    digest: str = ""
    link: str | None = None


@dataclass(frozen=True)
class _Last:
    """The last wheel built for a project of one shape: its fingerprint (the kept wheel's key), the digest of each
    regular file then, and which member each single-source file became."""

    fingerprint: str
    files: Mapping[str, str]
    members: Mapping[str, str]


def _load(value: Any) -> _Last:
    fingerprint, files, members = value
    if not isinstance(fingerprint, str) or not isinstance(files, dict) or not isinstance(members, dict):
        raise TypeError("not an app-sources record")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in [*files.items(), *members.items()]):
        raise TypeError("not an app-sources record")
    return _Last(fingerprint, files, members)


SOURCES: Meta[_Last] = Meta("app-sources", _load, lambda last: [last.fingerprint, dict(last.files), dict(last.members)])


def shape(sources: Iterable[Source], extra: object) -> str:
    """Everything the backend could read but the bytes of regular files: paths, modes, symlink targets, and
    ``extra`` (the fingerprint's own extra inputs: backend, requirements, interpreter, epoch, VCS state)."""
    h = hashlib.sha256(repr(extra).encode())
    for s in sources:
        h.update(f"{s.rel}\0{s.executable}\0{s.link}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def patchable(pyproject: Mapping[str, Any], backend: str, project_dir: Path, written: set[str]) -> bool:
    """Whether this project's wheel is its files copied as they are, with metadata that no source file changes."""
    if backend not in _COPYING_BACKENDS or written:
        return False
    try:
        return _static(pyproject, project_dir, backend)
    except (AttributeError, TypeError):  # a table where a value belongs, or the reverse: the backend will say so
        return False


def _static(pyproject: Mapping[str, Any], project_dir: Path, backend: str) -> bool:
    project = pyproject.get("project")
    if not isinstance(project, dict):
        return False
    dynamic = project.get("dynamic") or []
    if dynamic and (dynamic != ["version"] or not _version_file(pyproject, backend)):
        return False
    if any((project_dir / name).exists() for name in ("setup.py", "hatch.toml", "hatch_build.py", "pdm_build.py", "build.py")):
        return False  # code (or configuration) the backend runs that this reading does not follow
    tool = pyproject.get("tool") or {}
    if not isinstance(tool, dict):
        return False
    hatch = tool.get("hatch") or {}
    if isinstance(hatch, dict):
        build = hatch.get("build") or {}
        targets = build.get("targets") or {} if isinstance(build, dict) else {}
        if not isinstance(build, dict) or build.get("hooks") or (hatch.get("metadata") or {}).get("hooks"):
            return False
        if any(not isinstance(t, dict) or t.get("hooks") for t in targets.values()):
            return False
    poetry = tool.get("poetry") or {}
    if isinstance(poetry, dict) and (poetry.get("build") or poetry.get("build-script")):
        return False
    return True


def _version_file(pyproject: Mapping[str, Any], backend: str) -> bool:
    """Whether a dynamic version is read from a file pyproject.toml names (``hatch new``'s ``[tool.hatch.version]
    path = "src/app/__about__.py"``, pdm's ``source = "file"``): an edit to that file, whose name is then in
    pyproject.toml, goes to the backend (``_in_metadata``); any other edit leaves the version as it was. A version
    from git (hatch-vcs, setuptools-scm) is not: an edit makes the tree dirty, which such versions say."""
    tool = pyproject.get("tool") or {}
    if backend == "hatchling.build":
        version = (tool.get("hatch") or {}).get("version") or {}
        return isinstance(version.get("path"), str) and version.get("source", "regex") == "regex"
    if backend == "pdm.backend":
        version = (tool.get("pdm") or {}).get("version") or {}
        return isinstance(version.get("path"), str) and version.get("source") == "file"
    return False


def remember(cache: Cache, key: str, fingerprint: str, sources: Iterable[Source], wheel: Path) -> None:
    """Records which regular file became which member of ``wheel`` (the wheel just built for ``fingerprint``)."""
    files = {s.rel: s.digest for s in sources if s.link is None}
    by_digest: dict[str, list[str]] = {}
    for rel, digest in files.items():
        if rel not in _CONFIG:
            by_digest.setdefault(digest, []).append(rel)
    members: dict[str, str] = {}
    taken: dict[str, int] = {}
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            top = info.filename.split("/", 1)[0]
            if info.is_dir() or top.endswith((".dist-info", ".data")):
                continue
            with zf.open(info) as member:
                digest = hex_of(hash_stream(member))  # type: ignore[arg-type]
            found = [rel for rel in by_digest.get(digest, ()) if rel == info.filename or rel.endswith("/" + info.filename)]
            for rel in found:
                taken[rel] = taken.get(rel, 0) + 1
            if len(found) == 1:
                members[found[0]] = info.filename
    # a file copied to two members, or two files with one member's bytes, is not a one-to-one copy
    sources_of = collections.Counter(members.values())
    members = {rel: m for rel, m in members.items() if taken[rel] == 1 and sources_of[m] == 1}
    cache.put_meta(SOURCES, _Last(fingerprint, files, members), key)


def _in_metadata(rel: str, text: str, license_globs: Iterable[str]) -> bool:
    """Whether pyproject.toml (``text``) may name ``rel`` (a ``readme`` or ``license`` file the backend also copies
    into the package), or a ``license-files`` glob matches it: its text then goes into the metadata too, which a
    copy would leave stale. Read broadly: the file's name anywhere in the text."""
    import fnmatch

    name = rel.rsplit("/", 1)[-1]
    return name in text or any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) for g in license_globs)


def license_globs(pyproject: Mapping[str, Any]) -> list[str]:
    """The ``license-files`` globs of ``[project]`` (PEP 639) and ``[tool.setuptools]``."""
    found: list[str] = []
    for table in (pyproject.get("project"), (pyproject.get("tool") or {}).get("setuptools") if isinstance(pyproject.get("tool"), dict) else None):
        value = table.get("license-files") if isinstance(table, dict) else None
        if isinstance(value, list):
            found += [g for g in value if isinstance(g, str)]
        elif isinstance(value, dict):  # the older {paths = [...], globs = [...]} form
            found += [g for v in value.values() if isinstance(v, list) for g in v if isinstance(g, str)]
    return found


def patch(cache: Cache, key: str, project_dir: Path, sources: Iterable[Source], out_dir: Path, text: str = "", globs: Iterable[str] = ()) -> tuple[Path, int] | None:
    """The wheel of the tree as it is now, made from the last wheel built for this ``shape`` (kept in the cache),
    and the number of files copied in; None when that is not provably what the backend would write (then the
    backend builds it)."""
    last = cache.get_meta(SOURCES, key)
    if last is None:
        return None
    before = cache.app_wheel_dir(last.fingerprint)
    wheels = sorted(before.glob("*.whl")) if before.is_dir() else []
    if len(wheels) != 1:
        return None  # pruned, or never kept
    current = {s.rel: s.digest for s in sources if s.link is None}
    if set(current) != set(last.files):
        return None
    changed = {rel for rel, digest in current.items() if last.files[rel] != digest}
    if not changed or not changed <= set(last.members) or any(_in_metadata(rel, text, globs) for rel in changed):
        return None
    replaced: dict[str, bytes] = {}
    for rel in changed:
        data = (project_dir / rel).read_bytes()
        if hashlib.sha256(data).hexdigest() != current[rel]:
            return None  # edited again since the scan: let the backend see the tree as it is
        replaced[last.members[rel]] = data
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / wheels[0].name
    staging = dest.with_name(f".{os.getpid()}-{dest.name}")
    try:
        with zipfile.ZipFile(wheels[0]) as old, zipfile.ZipFile(staging, "w") as new:
            record_name = next((i.filename for i in old.infolist() if i.filename.endswith(".dist-info/RECORD") and i.filename.count("/") == 1), None)
            if record_name is None:
                return None
            record = _patched_record(old.read(record_name), replaced)
            if record is None:
                return None
            for info in old.infolist():
                body = record if info.filename == record_name else replaced.get(info.filename)
                new.writestr(copy.copy(info), old.read(info) if body is None else body)
        os.replace(staging, dest)
    finally:
        staging.unlink(missing_ok=True)
    return dest, len(replaced)


def _patched_record(record: bytes, replaced: Mapping[str, bytes]) -> bytes | None:
    """RECORD with the hash and size of each replaced member written anew, every other line kept byte for byte;
    None when a replaced member's line is not the plain ``path,sha256=…,size`` form (quoted: a comma in its path)."""
    newline = b"\r\n" if b"\r\n" in record else b"\n"
    lines = record.split(newline)
    seen = set()
    for i, line in enumerate(lines):
        path, sep, _rest = line.partition(b",")
        name = path.decode("utf-8", "surrogateescape")
        if sep and name in replaced:
            if line.startswith(b'"') or line.count(b",") != 2:
                return None
            data = replaced[name]
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            lines[i] = path + b",sha256=" + digest + b"," + str(len(data)).encode()
            seen.add(name)
    return newline.join(lines) if seen == set(replaced) else None
