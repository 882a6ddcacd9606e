"""A requirements file with ``--hash`` pins (``uv pip compile --generate-hashes``, ``pip-compile
--generate-hashes``) installed as a lock: exactly those versions, no resolver, every file checked.

pip's own rule decides what counts: once any requirement carries a ``--hash``, every requirement must carry
one and be pinned with ``==`` (or ``===``); a file that breaks it is one error naming the line, before any work.
A file without any ``--hash`` is not a lock: pyimage resolves from it as before.

For each requirement whose marker holds on the target, the files of that version are looked up on the index
(pip's configuration, or the ``--index-url`` / ``--extra-index-url`` / ``--find-links`` lines of the file
itself, as pip reads them), only those whose sha256 the line lists are considered, and the wheel the target
ranks first among them is taken (an sdist only when none of the listed files is a wheel). The file is checked
again after download (resolve/indexfiles.py).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from packaging.utils import canonicalize_name

from pyimage.cache import Cache, Meta, strings
from pyimage.errors import BuildError, ConfigError
from pyimage.hashing import file_digest, hex_of
from pyimage.resolve import indexfiles
from pyimage.resolve.pip import Pin
from pyimage.resolve.target import Target

__all__ = ["HashedRequirement", "HashedRequirements", "is_hashed", "parse", "locked_pins"]

FIX = "regenerate it with `uv pip compile --generate-hashes` (or `pip-compile --generate-hashes`)"
_HASH = re.compile(r"--hash[= ]\s*(\S+)")
_OPTION_START = re.compile(r"\s+(?=--?[A-Za-z])")


@dataclass(frozen=True)
class HashedRequirement:
    name: str
    version: str
    marker: str  # "" when unconditional
    hashes: tuple[str, ...]  # sha256 hex digests
    line: int


@dataclass(frozen=True)
class HashedRequirements:
    requirements: tuple[HashedRequirement, ...]
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each logical line: continuations joined, comments dropped."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw)  # a comment: `#` at the start or after white space
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined = (pending + line).strip()
        pending = ""
        if joined:
            out.append((start, joined))
    if pending.strip():
        out.append((start, pending.strip()))
    return out


def is_hashed(text: str) -> bool:
    """Whether any requirement of the file carries a ``--hash``: then the file is a lock (pip's hash mode)."""
    return any(_HASH.search(line) for _, line in _logical_lines(text))


def parse(path: Path) -> HashedRequirements:
    """The pins of a hashed requirements file; a requirement without a hash or an ``==`` pin is an error."""
    from packaging.requirements import InvalidRequirement, Requirement

    name = path.name
    reqs: list[HashedRequirement] = []
    index_url: str | None = None
    extra: list[str] = []
    links: list[str] = []
    no_index = False
    for number, line in _logical_lines(path.read_text()):
        where = f"{name} line {number}"
        if line.startswith("-"):
            option, value = (re.split(r"[=\s]+", line, maxsplit=1) + [""])[:2]
            value = _expand_env(value.strip())  # `--index-url https://${USER}:${TOKEN}@…`, as pip expands it
            if option in ("-i", "--index-url"):
                index_url = value
            elif option == "--extra-index-url":
                extra.append(value)
            elif option in ("-f", "--find-links"):
                links.append(value if "://" in value or Path(value).is_absolute() else str((path.parent / value).resolve()))  # as pip: beside the file
            elif option == "--no-index":
                no_index = True
            elif option in ("--trusted-host", "--pre", "--prefer-binary", "--only-binary", "--require-hashes"):
                pass  # nothing to choose: every file is named by its hash
            else:
                raise ConfigError(f"{where}: {option} is not supported in a hashed requirements file pyimage installs as a lock", f"inline what it names, or {FIX}")
            continue
        requirement, *options = _OPTION_START.split(line)
        hashes: list[str] = []
        for option in options:
            found = _HASH.fullmatch(option.strip())
            if not found:
                raise ConfigError(f"{where}: option {option.split()[0]!r} is not supported on a requirement line", FIX)
            algorithm, _, digest = found.group(1).partition(":")
            if algorithm == "sha256":
                if not re.fullmatch(r"[0-9a-f]{64}", digest):
                    raise ConfigError(f"{where}: {found.group(1)!r} is not a sha256 digest", FIX)
                hashes.append(digest)
        try:
            req = Requirement(requirement.strip())
        except InvalidRequirement as exc:
            raise ConfigError(f"{where}: not a requirement ({exc})", FIX) from None
        if req.url:
            raise ConfigError(f"{where}: {req.name} is a direct URL requirement; pyimage installs a hashed file's pins from the index", f"publish {req.name} to an index and pin it with ==, then {FIX}")
        pins = [s for s in req.specifier if s.operator in ("==", "===") and "*" not in s.version]
        if len(list(req.specifier)) != 1 or not pins:
            raise ConfigError(f"{where}: {requirement.strip()!r} is not pinned with ==, and a file with hashes must pin every requirement (pip's rule)", FIX)
        if not hashes:
            raise ConfigError(f"{where}: {req.name} has no --hash=sha256:…, and once one requirement has a hash every one must (pip's rule)", FIX)
        reqs.append(HashedRequirement(canonicalize_name(req.name), pins[0].version, str(req.marker or ""), tuple(hashes), number))
    return HashedRequirements(tuple(reqs), index_url, tuple(extra), tuple(links), no_index)


def _expand_env(text: str) -> str:
    """pip's rule for requirements files: ``${NAME}`` (upper-case letters, digits, ``_``) is the environment
    variable's value; an unset one stays as written."""
    return re.sub(r"\$\{([A-Z0-9_]+)\}", lambda m: os.environ.get(m.group(1), m.group(0)), text)


def _sources(parsed: HashedRequirements) -> indexfiles.Sources:
    """pip's configured sources, with the file's own index lines on top as pip applies them."""
    configured = indexfiles.configured_sources()
    if parsed.no_index:
        return indexfiles.Sources((), (*parsed.find_links, *configured.find_links))
    indexes = list(configured.indexes)
    if parsed.index_url:
        indexes = [parsed.index_url, *indexes[1:]]
    return indexfiles.Sources((*indexes, *parsed.extra_index_urls), (*parsed.find_links, *configured.find_links))


def _version_of(filename: str) -> str | None:
    from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename

    try:
        return str(parse_wheel_filename(filename)[1] if filename.endswith(".whl") else parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def _file_sha256(found: indexfiles.IndexFile) -> str:
    """The index's sha256 for a file, or for a local file (a find-links directory) its computed one."""
    if found.sha256 or not found.url.startswith("file:"):
        return found.sha256
    local = Path(urllib.parse.unquote(urllib.parse.urlsplit(found.url).path))
    return hex_of(file_digest(local)) if local.is_file() else ""  # streamed: torch's wheels are GBs


def _load_pins(value: Any) -> tuple[Pin, ...]:
    if not isinstance(value, list):
        raise TypeError("not a list of pins")
    pins = []
    for entry in value:
        name, version, filename, url, sha256 = strings(entry)
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError("not a sha256")
        pins.append(Pin(name, version, filename, url, sha256))
    return tuple(pins)


def _dump_pins(pins: tuple[Pin, ...]) -> list[list[str]]:
    return [[p.name, p.version, p.filename, indexfiles.strip_credentials(p.url), p.sha256] for p in pins]  # never a secret on disk


PINS: Meta[tuple[Pin, ...]] = Meta("hashed-pins", _load_pins, _dump_pins)


def locked_pins(path: Path, target: Target, cache: Cache, events: Callable[[str], None]) -> list[Pin]:
    """The pins of the hashed requirements file for ``target``, their files fetched and hash-checked."""
    from packaging.markers import Marker

    from pyimage.resolve.lockinput import target_environment

    parsed = parse(path)
    events(f"installing from {path.name} as locked (every requirement pinned and hashed; no resolution)")
    sources = _sources(parsed)
    # A rebuild asks no index: the files chosen before for this file, target and indexes, when all are cached.
    from pyimage.resolve.lock import target_key

    record_key = (path.read_text(), target_key(target), sources.describe())
    known = cache.get_meta(PINS, *record_key)
    if known and all(not p.is_sdist and cache.cached_wheel(p.sha256, p.filename) is not None for p in known):
        return list(known)
    env = target_environment(target)
    chosen: dict[str, HashedRequirement] = {}
    for req in parsed.requirements:
        if req.marker and not Marker(req.marker).evaluate(dict(env, extra="")):
            continue
        if req.name in chosen:
            raise ConfigError(f"{path.name} line {req.line}: {req.name} is pinned twice for {target.describe()} (also line {chosen[req.name].line})", FIX)
        chosen[req.name] = req

    def one(req: HashedRequirement) -> Pin:
        name = req.name
        listed = set(req.hashes)
        candidates: dict[str, tuple[indexfiles.IndexFile, str]] = {}
        for found in indexfiles.project_files(name, sources):
            version = _version_of(found.filename)
            if version is None or not _same_version(version, req.version) or found.filename in candidates:
                continue
            sha = _file_sha256(found)
            if sha in listed:
                candidates[found.filename] = (found, sha)
        wheels = [f for f in candidates if f.endswith(".whl")]
        fitting = indexfiles.rank_wheels(wheels, target)
        sdists = [f for f in candidates if not f.endswith(".whl")]
        if not candidates:
            raise BuildError(
                f"{name} {req.version}: no file on {sources.describe()} has a sha256 that {path.name} line {req.line} lists",
                f"configure the index the file was compiled against (pip's index-url, or an --index-url line), or {FIX}",
            )
        if wheels and not fitting:
            raise BuildError(
                f"{name} {req.version}: {path.name} line {req.line} lists no wheel for {target.describe()} (the hashes of {len(wheels)} other wheels)",
                f"{FIX} for the target platform (uv: --python-platform, or --universal), or choose a {name} version with a wheel for it",
            )
        found, sha = candidates[fitting[0] if fitting else sdists[0]]
        pin = Pin(name, req.version, found.filename, "" if found.url.startswith("file:") else found.url, sha)
        indexfiles.fetch(Pin(name, req.version, found.filename, found.url, sha), sources, cache, path.name)
        return pin

    pins = indexfiles.in_parallel(one, [chosen[n] for n in sorted(chosen)])
    cache.put_meta(PINS, tuple(pins), *record_key)
    return pins


def _same_version(found: str, pinned: str) -> bool:
    """``==`` compares versions (1.0 is 1.0.0); an ``===`` pin may be no valid version at all: compared as text."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(found) == Version(pinned)
    except InvalidVersion:
        return found == pinned
