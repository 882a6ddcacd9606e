"""The project's uv index declarations — ``[[tool.uv.index]]`` and ``[tool.uv.sources]`` entries with
``index = "…"`` — applied when pyimage resolves (no lock), e.g. torch from the PyTorch CPU index.

What uv does with them, measured with uv 0.13 (``uv pip compile pyproject.toml --no-config``): a project's
``[tool.uv.sources]`` and the indexes they name are honoured when the input is the project's pyproject.toml,
even with ``--no-config`` (a package pinned to an ``explicit = true`` index comes from that index only, and
only for the project's direct dependencies, as ``uv lock`` does); a non-explicit ``[[tool.uv.index]]`` is
*not* (it is configuration, which ``--no-config`` turns off). So pyimage compiles the project's pyproject.toml
(``--extra`` for the configured extras) instead of its wheel, adds each non-explicit index as
``--index NAME=URL`` (``--default-index`` for ``default = true``) and ``[tool.uv] index-strategy`` when set.

pip has no way to pin a package to an index, so a build that pip would resolve (``resolver = "pip"``, or a
target or pip setting uv cannot serve) is refused with the reason, never resolved without the sources.

Credentials are uv's: ``UV_INDEX_<NAME>_USERNAME`` / ``_PASSWORD`` and netrc. uv reads them itself when it
resolves; the wheels it chose on such an index are then downloaded by pyimage (``prefetch``) with the same
credentials (pip, which fetches the others, knows netrc but not uv's variables). They are sent only to that
index's host and never printed or written (pyimage's lock holds the URLs uv reports, without credentials).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from pyimage.cache import Cache
from pyimage.errors import ConfigError
from pyimage.resolve import indexfiles
from pyimage.resolve.pip import Pin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["UvIndex", "UvSources", "read", "refuse_pip", "prefetch"]

_STRATEGIES = ("first-index", "unsafe-first-match", "unsafe-best-match")


@dataclass(frozen=True)
class UvIndex:
    name: str
    url: str
    explicit: bool = False
    default: bool = False


@dataclass(frozen=True)
class UvSources:
    """The index declarations of one project; empty when it has none (then nothing changes)."""

    indexes: tuple[UvIndex, ...] = ()
    pinned: tuple[tuple[str, str], ...] = ()  # (package, index name), marker-conditional entries included
    index_strategy: str | None = None
    pyproject: Path | None = None

    @property
    def declared(self) -> bool:
        return bool(self.indexes or self.pinned)

    def uv_args(self) -> list[str]:
        """uv flags for what uv does not read from the pyproject by itself (non-explicit indexes, the strategy)."""
        args: list[str] = []
        for index in self.indexes:
            if index.default:
                args += ["--default-index", index.url]
            elif not index.explicit:
                args += ["--index", f"{index.name}={index.url}" if index.name else index.url]
        if self.index_strategy:
            args += ["--index-strategy", self.index_strategy]
        return args

    def fingerprint(self) -> str:
        """What pyimage's own lock must be stale on: the declarations (URLs as written: credentials live in env)."""
        material = {"indexes": [vars(i) for i in self.indexes], "pinned": sorted(self.pinned), "strategy": self.index_strategy}
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest() if self.declared else ""

    def describe(self) -> str:
        if self.pinned:
            package, index = self.pinned[0]
            return f"[tool.uv.sources] takes {package} from the index {index!r}"
        return f"[[tool.uv.index]] declares {self.indexes[0].name or self.indexes[0].url!r}"


def _where(pyproject: Path, key: str) -> str:
    return f"{pyproject}: {key}"


def read(project_dir: Path) -> UvSources:
    """The project's uv index declarations, checked: each index has a URL, each source names a declared index."""
    pyproject = project_dir / "pyproject.toml"
    try:
        data: dict[str, Any] = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return UvSources()  # no pyproject, or one the config loader already reported
    uv = data.get("tool", {}).get("uv", {}) if isinstance(data.get("tool"), dict) else {}
    if not isinstance(uv, dict):
        return UvSources()
    indexes: list[UvIndex] = []
    for i, entry in enumerate(uv.get("index") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str) or not entry["url"]:
            raise ConfigError(f"{_where(pyproject, f'[[tool.uv.index]] #{i + 1}')} has no url", 'give it url = "https://…/simple"')
        name = entry.get("name", "")
        if not isinstance(name, str) or (name and not re.fullmatch(r"[A-Za-z0-9._-]+", name)):
            raise ConfigError(f"{_where(pyproject, f'[[tool.uv.index]] #{i + 1}')} has the name {name!r}", "use letters, digits, `.`, `_` and `-`")
        indexes.append(UvIndex(name, entry["url"], bool(entry.get("explicit", False)), bool(entry.get("default", False))))
    names = {index.name for index in indexes if index.name}
    pinned: list[tuple[str, str]] = []
    sources = uv.get("sources") or {}
    for package, spec in sources.items() if isinstance(sources, dict) else ():
        for entry in spec if isinstance(spec, list) else [spec]:  # a list: marker-conditional sources
            if isinstance(entry, dict) and "index" in entry:
                index = entry["index"]
                if index not in names:
                    raise ConfigError(
                        f"{_where(pyproject, f'[tool.uv.sources] {package}')} takes it from the index {index!r}, which no [[tool.uv.index]] declares",
                        f'declare it: [[tool.uv.index]] name = "{index}", url = "…", explicit = true',
                    )
                pinned.append((canonicalize_name(package), str(index)))
    strategy = uv.get("index-strategy")
    if strategy is not None and strategy not in _STRATEGIES:
        raise ConfigError(f"{_where(pyproject, '[tool.uv] index-strategy')} is {strategy!r}", f"use one of {', '.join(_STRATEGIES)}")
    return UvSources(tuple(indexes), tuple(pinned), strategy, pyproject)


def refuse_pip(sources: UvSources, why: str) -> ConfigError:
    """The error for a build pip would resolve although the project pins packages to indexes pip cannot honour."""
    because = f" (pip resolves here: {why})" if why else ' (resolver = "pip")'
    return ConfigError(
        f"{sources.describe()}, which pip cannot honour{because}",
        'resolve with uv (resolver = "auto" or "uv", on a target uv serves), or move the index to pip\'s configuration (extra-index-url) and drop the source',
    )


def _env_name(name: str) -> str:
    """uv's spelling of an index name in environment variables: upper case, anything else as ``_``."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def _with_credentials(index: UvIndex) -> str:
    """The index URL with ``UV_INDEX_<NAME>_USERNAME``/``_PASSWORD`` as its user info (kept in memory only)."""
    import os

    if not index.name:
        return index.url
    env = _env_name(index.name)
    return indexfiles.with_credentials(index.url, os.environ.get(f"UV_INDEX_{env}_USERNAME"), os.environ.get(f"UV_INDEX_{env}_PASSWORD"))


def prefetch(pins: list[Pin], sources: UvSources, cache: Cache) -> None:
    """Downloads (hash-checked) the wheels of ``pins`` that live on one of the project's uv indexes, with that
    index's credentials, so that fetching them later never asks pip, which lacks uv's credential variables."""
    import urllib.parse

    hosts = {urllib.parse.urlsplit(i.url).netloc.rpartition("@")[2] for i in sources.indexes}
    fetch_from = indexfiles.Sources(tuple(_with_credentials(i) for i in sources.indexes), ())
    for pin in pins:
        parts = urllib.parse.urlsplit(pin.url)
        if pin.is_sdist or parts.scheme not in ("http", "https") or parts.netloc not in hosts:
            continue
        indexfiles.fetch(pin, fetch_from, cache, "the resolution")
