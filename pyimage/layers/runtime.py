"""What an app needs in its image beyond its wheels: files from the project (``files``), the user it runs as when
the base lacks it (``user``), and directories that user may write (``writable``).

Two small layers above ``app``, each a pure function of its inputs like every other layer:

- ``runtime``: ``/etc/passwd`` and ``/etc/group`` (the base's, plus the new user's lines) and the user's home,
  when ``user`` names someone the base does not have; the ``writable`` directories, owned by the runtime user.
- ``files``: the project files ``files`` selects, at their in-image paths, root-owned (read-only for a non-root
  user), keyed by every file's path, mode and sha256 — a changed file rebuilds this layer only. What a directory
  or glob finds is filtered first (``layers/ignore.py``: built-in excludes, ``.dockerignore``, ``exclude``).

Paths come from the project's config, so they are checked like any untrusted input: a ``src`` never leaves the
project (no absolute path, no ``..``, no symlink pointing out), a ``dest`` is absolute without ``..``; problems are
one error naming the entry, before any layer work.
"""

from __future__ import annotations

import glob
import hashlib
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from pyimage.errors import ConfigError
from pyimage.layers.ignore import DockerIgnore, builtin_excluded, entry_excluded, read_dockerignore
from pyimage.layers.tar import Owner, TarWriter

__all__ = ["ProjectFile", "RuntimeUser", "collect_files", "files_parts", "files_filler", "runtime_user", "runtime_parts", "runtime_filler"]

_FIRST_ID = 1000  # the first id adduser hands out on Debian, Alpine and Fedora
_FILE_HINT = "fix the entry in [tool.pyimage] files (src is relative to the project directory)"


@dataclass(frozen=True)
class ProjectFile:
    dest: str  # in-image path, relative (no leading "/")
    source: Path
    mode: int
    sha256: str
    size: int


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def _inside(path: Path, root: Path, where: str, hint: str = _FILE_HINT) -> Path:
    real = path.resolve()
    if real != root and root not in real.parents:
        raise ConfigError(f"{where}: {path} points outside the project ({real})", hint)
    return real


def collect_files(project_dir: Path, entries: Sequence[dict[str, Any]], *, skip: Sequence[Path] = (), app_tree: str | None = None) -> list[ProjectFile]:
    """The files ``entries`` select, sorted by in-image path; a ConfigError for an entry that selects nothing,
    leaves the project, or writes a path another entry writes with other content.

    What a directory walk or a glob finds passes the rules in ``layers/ignore.py`` (built-in excludes, the
    project's ``.dockerignore``, the entry's ``exclude``) before it is checked or read: an excluded directory is
    never entered. ``skip`` holds the configured output paths (real paths), left out like an OCI layout.
    ``app_tree`` (a workdir): the entries are a non-package app's tree, which errors name as such, not as
    ``files`` entries the user never wrote."""
    root = project_dir.resolve()
    ignore = read_dockerignore(root)
    skip = tuple(Path(p).resolve() for p in skip)
    chosen: dict[str, ProjectFile] = {}
    for i, entry in enumerate(entries):
        src, dest = entry["src"], entry["dest"]
        where = f"[tool.pyimage] files[{i}] (src = {src!r})" if app_tree is None else f"the app's tree (copied to {app_tree})"
        hint = _FILE_HINT if app_tree is None else "remove it, or leave it out of the image with a .dockerignore line"
        magic = _has_magic(src)
        if magic:
            matches = sorted(Path(p) for p in glob.glob(src, root_dir=root, recursive=True))
            parts = src.split("/")
            prefix = "/".join(parts[: next(j for j, p in enumerate(parts) if _has_magic(p))])
        else:
            matches = [Path(src.strip("/"))] if (root / src).exists() or (root / src).is_symlink() else []
            prefix = src.strip("/") if (root / src).is_dir() else posixpath.dirname(src.strip("/"))
        if not matches:
            raise ConfigError(f"{where}: nothing in {root} matches it", hint)
        base = prefix or "."
        rules = _Rules(root, ignore, skip, entry["exclude"], base)
        files: list[tuple[str, Path]] = []  # (path relative to the prefix, real path)
        for match in matches:
            rel = posixpath.normpath(match.as_posix())
            if magic and rules.hidden(rel, root / match):
                continue
            real = _inside(root / match, root, where, hint)
            if real.is_dir():
                for dirpath, dirnames, filenames in os.walk(real):
                    here = Path(dirpath)
                    here_rel = here.relative_to(root).as_posix()
                    dirnames[:] = sorted(d for d in dirnames if not rules.drop(posixpath.normpath(posixpath.join(here_rel, d)), here / d, True))
                    for name in sorted(filenames):
                        found_rel = posixpath.normpath(posixpath.join(here_rel, name))
                        if not rules.drop(found_rel, here / name, False):
                            files.append((posixpath.relpath(found_rel, base), _inside(here / name, root, where, hint)))
            elif real.is_file():
                files.append((posixpath.relpath(rel, base), real))
            else:
                raise ConfigError(f"{where}: {match} is not a regular file or directory", hint)
        if magic and not files:
            raise ConfigError(f"{where}: every path it matches is excluded (built-in excludes, .dockerignore or its exclude)", hint)
        single = not magic and len(files) == 1 and not dest.endswith("/") and (root / src).is_file()
        for rel, real in files:
            target = dest.strip("/") if single else posixpath.join(dest.strip("/"), rel)
            data = real.read_bytes()
            mode = entry["mode"] if entry["mode"] is not None else (0o755 if os.stat(real).st_mode & 0o111 else 0o644)
            one = ProjectFile(target, real, mode, hashlib.sha256(data).hexdigest(), len(data))
            prev = chosen.get(target)
            if prev is not None and (prev.sha256, prev.mode) != (one.sha256, one.mode):
                other = "with other content" if prev.sha256 != one.sha256 else f"with another mode ({one.mode:04o}, there {prev.mode:04o})"
                raise ConfigError(f"{where}: /{target} is also written by another files entry, {other}", "give each in-image path one source" if prev.sha256 != one.sha256 else "give both entries the same mode (or exclude the file from one)")
            chosen[target] = one
    dirs = {posixpath.dirname(p) for p in chosen}
    clash = next((p for p in chosen if p in dirs), None)
    if clash:
        raise ConfigError(f"[tool.pyimage] files: /{clash} is both a file and a directory", "give the file another dest")
    return [chosen[k] for k in sorted(chosen)]


@dataclass(frozen=True)
class _Rules:
    """One entry's view of the exclusion rules (``layers/ignore.py``); paths are relative to the project."""

    root: Path
    ignore: DockerIgnore
    skip: tuple[Path, ...]
    exclude: Sequence[str]
    base: str  # the entry's src directory, what its ``exclude`` globs are relative to

    def drop(self, rel: str, path: Path, is_dir: bool) -> bool:
        """For a walk: True if ``rel`` is left out (a directory: not entered)."""
        if builtin_excluded(rel, path, is_dir, self.skip):
            return True
        if self.ignore.prunes(rel) if is_dir else self.ignore.excluded(rel):
            return True
        return entry_excluded(posixpath.relpath(rel, self.base), self.exclude, is_dir)

    def hidden(self, rel: str, path: Path) -> bool:
        """For a glob match: True if it, or a directory above it, is left out (files only for .dockerignore's
        re-includes, which a walk of the match will apply)."""
        parts = rel.split("/")
        for n in range(1, len(parts)):
            above = "/".join(parts[:n])
            if builtin_excluded(above, self.root / above, True, self.skip) or self.ignore.prunes(above):
                return True
        is_dir = path.is_dir() and not path.is_symlink()
        if builtin_excluded(rel, path, is_dir, self.skip) or (self.ignore.prunes(rel) if is_dir else self.ignore.excluded(rel)):
            return True
        return entry_excluded(posixpath.relpath(rel, self.base), self.exclude, is_dir) if posixpath.relpath(rel, self.base) != "." else False


def files_parts(files: Sequence[ProjectFile]) -> list[list[object]]:
    return [[f.dest, f"{f.mode:o}", f.sha256] for f in files]


def files_filler(files: Sequence[ProjectFile]) -> Callable[[TarWriter], None]:
    def fill(tw: TarWriter) -> None:
        for f in files:
            with open(f.source, "rb") as stream:
                digest = tw.add_file(f.dest, stream, f.size, mode=f.mode)
            if digest != f.sha256:
                raise ConfigError(f"/{f.dest}: {f.source} changed while the image was being built", "build again")

    return fill


@dataclass(frozen=True)
class RuntimeUser:
    uid: int
    gid: int
    name: str = ""
    home: str = ""
    passwd: str = ""  # the new /etc/passwd and /etc/group when pyimage creates the user, else ""
    group: str = ""

    @property
    def created(self) -> bool:
        return bool(self.passwd)

    @property
    def config_user(self) -> str:
        """What the image config's ``User`` says: the numeric ids of a user pyimage created (a runtime can then
        verify it is not root, as Kubernetes' runAsNonRoot needs), else the value as configured."""
        return f"{self.uid}:{self.gid}"


def _table(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _ids(rows: list[list[str]], column: int) -> set[int]:
    return {int(r[column]) for r in rows if len(r) > column and r[column].isdigit()}


def runtime_user(spec: str | None, passwd: str, group: str) -> RuntimeUser | None:
    """The runtime user ``spec`` names: numeric ids as given, a name the base has with its ids, or a new user
    (first free id from 1000, a group of its name unless ``NAME:GROUP`` names one the base has, home
    ``/home/NAME``). None when ``spec`` is unset (the base's user)."""
    if not spec:
        return None
    name, _, group_name = spec.partition(":")
    users, groups = _table(passwd), _table(group)
    if name.isdigit():
        gid = int(group_name) if group_name.isdigit() else next((int(r[3]) for r in users if len(r) > 3 and r[2] == name and r[3].isdigit()), int(name))
        return RuntimeUser(int(name), gid)
    known = next((r for r in users if r[0] == name and len(r) > 3 and r[2].isdigit() and r[3].isdigit()), None)
    if known is not None:
        gid = next((int(r[2]) for r in groups if group_name and r[0] == group_name and len(r) > 2 and r[2].isdigit()), int(known[3]))
        return RuntimeUser(int(known[2]), gid, name)
    used_uids, used_gids = _ids(users, 2), _ids(groups, 2)
    uid = next(i for i in range(_FIRST_ID, 1 << 31) if i not in used_uids)
    existing_group = next((r for r in groups if group_name and r[0] == group_name and len(r) > 2 and r[2].isdigit()), None)
    new_group_name = group_name or name
    if existing_group is not None:
        gid, group_line = int(existing_group[2]), ""
    else:
        gid = uid if uid not in used_gids else next(i for i in range(_FIRST_ID, 1 << 31) if i not in used_gids)
        group_line = f"{new_group_name}:x:{gid}:\n"
    home = f"/home/{name}"
    base_passwd = passwd if passwd.strip() else "root:x:0:0:root:/root:/sbin/nologin\n"
    base_group = group if group.strip() else "root:x:0:\n"
    return RuntimeUser(
        uid, gid, name, home,
        base_passwd.rstrip("\n") + f"\n{name}:x:{uid}:{gid}::{home}:/sbin/nologin\n",
        base_group.rstrip("\n") + "\n" + group_line if group_line else base_group,
    )


def runtime_parts(user: RuntimeUser | None, writable: Sequence[str]) -> dict[str, object]:
    return {
        "passwd": user.passwd if user else "", "group": user.group if user else "", "home": user.home if user else "",
        "owner": f"{user.uid}:{user.gid}" if user else "0:0", "writable": sorted(writable),
    }


def runtime_filler(user: RuntimeUser | None, writable: Sequence[str]) -> Callable[[TarWriter], None]:
    owner = Owner(user.uid, user.gid) if user else Owner()

    def fill(tw: TarWriter) -> None:
        if user is not None and user.created:
            tw.add_bytes("etc/passwd", user.passwd.encode(), mode=0o644)
            tw.add_bytes("etc/group", user.group.encode(), mode=0o644)
            tw.add_dir(user.home, 0o755, owner=owner)
        for path in sorted(writable):
            tw.add_dir(path, 0o755, owner=owner)

    return fill
