"""What a ``files`` entry leaves out when it walks a directory or expands a glob, and which files it keeps that
look like secrets.

``files = [{src = ".", dest = "/app/"}]`` is what ``COPY . /app`` users write; taken literally it copies the
repository's ``.git``, a ``.venv`` (whose ``bin/python`` points outside the project), caches, and the previous
image (the default output lives in the project). Three rules, in this order:

1. Built-in: never app content, always left out — VCS directories, virtual environments (``.venv`` or any
   directory holding ``pyvenv.cfg``), OCI layouts (a directory holding ``oci-layout``) and the configured output
   paths, ``__pycache__``/``*.pyc``, tool caches, ``*.egg-info`` and setuptools' ``build/`` debris.
2. The project's ``.dockerignore``, with Docker's syntax (``*`` and ``?`` within one path part, ``**`` across
   parts, ``!`` re-includes, the last matching line wins, a matching directory covers what it holds), paths
   relative to the project directory.
3. The entry's own ``exclude`` globs (relative to the entry's ``src`` directory, or a bare name).

A ``src`` that names one path without wildcards is taken as named (the user asked for it); the rules apply to
what is found beneath it. Directories are pruned before they are entered, so nothing inside an excluded
directory is read or checked (a venv's symlinks out of the project are no error).
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["DockerIgnore", "read_dockerignore", "builtin_excluded", "entry_excluded", "secret_like", "database_like", "SECRET_PATTERNS"]

_NEVER_DIRS = frozenset({".git", ".hg", ".svn", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox", ".nox"})
_NEVER_FILES = ("*.pyc", "*.pyo")
_MARKERS = ("pyvenv.cfg", "oci-layout")  # a virtual environment, an OCI image layout
# What `setup.py build`/`bdist_wheel` leave in build/ (a frontend's build/ with static files is kept)
_SETUPTOOLS_DEBRIS = ("build/lib", "build/lib.*", "build/bdist.*", "build/temp.*", "build/scripts-*")
SECRET_PATTERNS = (".env", ".env.*", "*.pem", "*.key", "id_rsa*", "id_ecdsa*", "id_ed25519*", "*.p12", "*.pfx")
_NOT_SECRETS = (".env.example", ".env.sample", ".env.template", ".env.dist")  # committed on purpose, values blank
_DATABASES = ("*.sqlite", "*.sqlite3")  # Django's db.sqlite3 after a local `migrate`, …
_MAX_IGNORE_READ = 1 << 20


def builtin_excluded(rel: str, path: Path, is_dir: bool, skip: Sequence[Path] = ()) -> bool:
    """True for what is never app content: ``rel`` is relative to the project directory, ``path`` the real
    path (for the marker files and the output paths in ``skip``)."""
    name = posixpath.basename(rel)
    if skip and any(path == s for s in skip):
        return True
    if not is_dir:
        return any(fnmatch.fnmatchcase(name, p) for p in _NEVER_FILES)
    if name in _NEVER_DIRS or name.endswith(".egg-info"):
        return True
    if any(fnmatch.fnmatchcase(rel, p) for p in _SETUPTOOLS_DEBRIS):
        return True
    return any((path / marker).is_file() for marker in _MARKERS)


def entry_excluded(rel: str, patterns: Sequence[str], is_dir: bool = False) -> bool:
    """The entry's ``exclude``: a glob matching the path (relative to ``src``) or its name. A directory also
    matches ``DIR/*`` and ``DIR/**``, so ``exclude = [".venv/*"]`` prunes ``.venv`` before it is entered."""
    name = posixpath.basename(rel)
    candidates = (rel, name, rel + "/") if is_dir else (rel, name)
    return any(fnmatch.fnmatch(c, p) for p in patterns for c in candidates)


def _regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (Go's filepath.Match plus ``**``) as a regex over a ``/``-separated path."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # "**/" : any number of leading directories, none included
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith(("!", "^")) else body).replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


@dataclass(frozen=True)
class DockerIgnore:
    """A parsed ``.dockerignore``: (pattern text, compiled pattern, re-include) in file order."""

    rules: tuple[tuple[str, re.Pattern[str], bool], ...] = ()

    def excluded(self, rel: str) -> bool:
        """Docker's rule: the last line matching the path, or one of its parent directories, decides."""
        parents = [rel]
        while "/" in parents[-1]:
            parents.append(parents[-1].rsplit("/", 1)[0])
        verdict = False
        for _text, regex, include in self.rules:
            if any(regex.match(p) for p in parents):
                verdict = not include
        return verdict

    def prunes(self, rel_dir: str) -> bool:
        """True when an excluded directory need not be entered: no ``!`` line could re-include what it holds."""
        if not self.excluded(rel_dir):
            return False
        return not any(include and (text.startswith(rel_dir + "/") or "*" in text.split("/")[0] or "?" in text or "[" in text) for text, _r, include in self.rules)


def read_dockerignore(root: Path) -> DockerIgnore:
    """The project's ``.dockerignore`` (none: an empty one). Lines are cleaned as Docker cleans them: ``#``
    comments and blank lines dropped, a leading ``/`` or ``./`` removed, ``.``/``..`` parts resolved."""
    path = root / ".dockerignore"
    if not path.is_file() or path.is_symlink():
        return DockerIgnore()
    with open(path, "rb") as stream:
        text = stream.read(_MAX_IGNORE_READ).decode("utf-8", "replace")
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        line = line[1:].strip() if include else line
        line = posixpath.normpath(line.lstrip("/")) if line.lstrip("/") else ""
        if not line or line in (".", "..") or line.startswith("../"):
            continue
        rules.append((line, _regex(line), include))
    return DockerIgnore(tuple(rules))


def secret_like(dests: Iterable[str]) -> list[str]:
    """The in-image paths whose names look like credentials (``.env``, keys, certificates' private halves)."""
    def looks(name: str) -> bool:
        return name not in _NOT_SECRETS and any(fnmatch.fnmatchcase(name, p) for p in SECRET_PATTERNS)

    return sorted(d for d in dests if looks(posixpath.basename(d)))


def database_like(dests: Iterable[str]) -> list[str]:
    """The in-image paths whose names look like a local SQLite database (``db.sqlite3`` after ``manage.py migrate``
    on the developer's machine): copied into an app's tree, every container starts from that copy."""
    return sorted(d for d in dests if any(fnmatch.fnmatchcase(posixpath.basename(d), p) for p in _DATABASES))
