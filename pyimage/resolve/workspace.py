"""First-party packages the app depends on by path: uv workspace members, ``[tool.uv.sources]`` paths and PEP 508
``name @ file:///…`` requirements. Each is built into a wheel as the app is (``appwheel.build_app_wheel``: same
fingerprint reuse, same target checks) and installed non-editable into the ``workspace`` layer.

Where a local package lives is read from the project's own ``pyproject.toml`` files (the app's, each local
package's, the workspace root's), never from a lock: a lock's directory entry is only compared with what
pyproject.toml declares. Every directory must lie inside the *source root* — the workspace root, else the
repository (``.git``/``.hg``) holding the project, else the project's parent directory — so a dependency cannot
pull an arbitrary directory of this machine into an image.

uv's rules are followed: a member's ``[tool.uv.sources]`` paths are relative to the member, the root's apply to
every member unless the member names the package itself, and a member is used only when a source says
``workspace = true``. ``editable`` is ignored: the image holds a normal install.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from pyimage.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Workspace", "LocalSource", "LocalPackage", "find_workspace", "member_dir", "source_root", "local_sources", "relative_path", "collect", "check_buildable"]

_MAX_LOCAL = 200  # a chain of path dependencies longer than this is a cycle of misconfiguration, not a workspace


@dataclass(frozen=True)
class Workspace:
    """A uv workspace: its root directory, members by canonical name, and the root's ``[tool.uv.sources]``."""

    root: Path
    members: tuple[tuple[str, Path], ...]
    sources: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def member(self, name: str) -> Path | None:
        return dict(self.members).get(canonicalize_name(name))


@dataclass(frozen=True)
class LocalSource:
    """A local package to build: ``declared`` says where pyproject.toml names it (for messages); ``url`` is the
    ``file:`` URL when the dependency is a PEP 508 direct reference (resolvers must be given that same URL)."""

    name: str
    directory: Path
    declared: str
    kind: str  # "workspace member" | "path source" | "file: requirement", for the plan's reasons
    extras: tuple[str, ...] = ()
    url: str = ""


@dataclass(frozen=True)
class LocalPackage:
    """A local package built for the image: its source, its wheel, and the wheel's Requires-Dist."""

    source: LocalSource
    wheel: Path
    requires: tuple[str, ...]


def _read(pyproject: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{pyproject}: cannot read it ({exc})", "fix the file (TOML, UTF-8)") from None


def _uv(data: Mapping[str, Any]) -> Mapping[str, Any]:
    tool = data.get("tool")
    uv = tool.get("uv") if isinstance(tool, dict) else None
    return uv if isinstance(uv, dict) else {}


def _project_name(directory: Path) -> str | None:
    name = (_read(directory / "pyproject.toml").get("project") or {}).get("name")
    return canonicalize_name(name) if isinstance(name, str) and name else None


def _members(root: Path, table: Mapping[str, Any]) -> tuple[tuple[str, Path], ...]:
    """Member directories matched by ``members`` globs (minus ``exclude``) that hold a named project."""
    where = f"{root / 'pyproject.toml'}: [tool.uv.workspace]"
    globs, exclude = table.get("members", []), table.get("exclude", [])
    if not isinstance(globs, list) or not all(isinstance(g, str) for g in globs) or not isinstance(exclude, list):
        raise ConfigError(f"{where} members and exclude must be lists of path globs", 'e.g. members = ["packages/*"]')
    found: dict[str, Path] = {}
    root_name = _project_name(root)
    if root_name:
        found[root_name] = root
    for pattern in globs:
        if pattern.startswith("/") or ".." in Path(pattern).parts:
            raise ConfigError(f"{where} member {pattern!r} points outside the workspace", "list members as globs relative to the workspace root")
        for path in sorted(root.glob(pattern)):
            rel = path.relative_to(root).as_posix()
            if not path.is_dir() or any(fnmatch.fnmatchcase(rel, str(x)) for x in exclude):
                continue
            name = _project_name(path)
            if name is None:
                continue  # uv refuses a member without pyproject.toml; here it simply is no package
            if name in found and found[name] != path.resolve():
                raise ConfigError(f"{where}: two members are named {name} ({found[name]} and {path})", "rename one of them")
            found[name] = path.resolve()
    return tuple(sorted(found.items()))


def find_workspace(project_dir: Path) -> Workspace | None:
    """The uv workspace ``project_dir`` belongs to, as uv finds it: the nearest directory at or above it whose
    pyproject.toml has ``[tool.uv.workspace]`` and whose members include it (or which is the project itself)."""
    project_dir = project_dir.resolve()
    for here in (project_dir, *project_dir.parents):
        try:
            table = _uv(_read(here / "pyproject.toml")).get("workspace")
        except ConfigError:
            if here == project_dir:
                raise
            continue  # a broken pyproject.toml above the project that is no workspace root of it: not ours to judge
        if not isinstance(table, dict):
            continue
        members = _members(here, table)
        if here == project_dir or project_dir in {d for _n, d in members}:
            sources = _uv(_read(here / "pyproject.toml")).get("sources")
            return Workspace(here, members, sources if isinstance(sources, dict) else {})
        return None  # uv stops at the first workspace root above, member or not
    return None


def member_dir(start: Path, package: str) -> Path:
    """The directory of workspace member ``package``, looked up from ``start`` (the root or any member)."""
    workspace = find_workspace(start)
    if workspace is None:
        for here in (start.resolve(), *start.resolve().parents):  # start may be a non-member folder of a workspace
            if isinstance(_uv(_read(here / "pyproject.toml")).get("workspace"), dict):
                workspace = find_workspace(here)
                break
    if workspace is None:
        raise ConfigError(f"--package {package}: {start} is not inside a uv workspace ([tool.uv.workspace] in a pyproject.toml above it)", "drop --package and pass the project's directory (-C DIR)")
    found = workspace.member(package)
    if found is None:
        names = ", ".join(n for n, _d in workspace.members) or "none"
        raise ConfigError(f"--package {package}: no member of the workspace at {workspace.root} is named {canonicalize_name(package)}", f"the members are: {names}")
    return found


def check_buildable(project_dir: Path, workspace: Workspace | None) -> None:
    """Refuses to build a virtual workspace root (no ``[project]``): it has no wheel; one of its members does."""
    if workspace is None or workspace.root != project_dir.resolve() or _project_name(project_dir) is not None:
        return
    if any((project_dir / f).is_file() for f in ("setup.py", "setup.cfg")):
        return
    names = ", ".join(n for n, _d in workspace.members) or "none yet"
    raise ConfigError(
        f"{project_dir} is the root of a uv workspace and has no [project] of its own to build",
        f"build one member: --package NAME (members: {names}), or -C its directory",
    )


def source_root(project_dir: Path, workspace: Workspace | None) -> Path:
    """Where local packages may live: the workspace root, else the repository holding the project, else its parent."""
    if workspace is not None:
        return workspace.root
    project_dir = project_dir.resolve()
    for here in (project_dir, *project_dir.parents):
        if (here / ".git").exists() or (here / ".hg").is_dir():
            return here
    return project_dir.parent


def relative_path(directory: Path, start: Path) -> str:
    """``directory`` relative to ``start`` as a posix path (what a lock records instead of a machine path)."""
    return Path(os.path.relpath(directory.resolve(), start.resolve())).as_posix()  # both resolved: a symlinked checkout path cancels out


def _source_entry(sources: Mapping[str, Any], name: str, env: Mapping[str, str]) -> Mapping[str, Any] | None:
    """The ``[tool.uv.sources]`` entry for ``name`` that applies on the target (a list: the first whose marker holds)."""
    for key, value in sources.items():
        if canonicalize_name(str(key)) != name:
            continue
        for entry in value if isinstance(value, list) else [value]:
            if not isinstance(entry, dict):
                continue
            marker = entry.get("marker")
            if isinstance(marker, str):
                from packaging.markers import InvalidMarker, Marker

                try:
                    if not Marker(marker).evaluate(dict(env)):
                        continue
                except InvalidMarker:
                    continue  # uv reports a bad marker when it locks; here it simply does not apply
            return entry
        return {}
    return None


def _check_directory(directory: Path, name: str, declared: str, allowed: Path) -> Path:
    """``directory`` resolved, refused unless it is a Python project inside ``allowed``."""
    resolved = directory.resolve()
    if not resolved.is_dir():
        raise ConfigError(f"{name}: {declared} points to {resolved}, which does not exist", f"fix the path of {name} in pyproject.toml, or restore the package there")
    if resolved != allowed and allowed not in resolved.parents:
        raise ConfigError(
            f"{name}: {declared} points to {resolved}, outside {allowed} (the workspace or repository being built)",
            f"move {name} inside {allowed}, or publish it to an index and depend on it by version",
        )
    if not any((resolved / f).is_file() for f in ("pyproject.toml", "setup.py", "setup.cfg")):
        raise ConfigError(f"{name}: {declared} points to {resolved}, which holds no pyproject.toml or setup.py", f"point {name}'s source at the directory of its pyproject.toml")
    return resolved


def _direct(req: Requirement, package: str, allowed: Path) -> LocalSource | None:
    """A local package from a PEP 508 ``name @ file:`` reference to a directory; None for other URLs."""
    url = req.url or ""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "file":
        return None
    if parsed.netloc not in ("", "localhost"):
        raise ConfigError(f"{req.name}: {package} depends on {url}, a file on another host", "use file:///ABSOLUTE/PATH or a [tool.uv.sources] path")
    path = Path(urllib.parse.unquote(parsed.path))
    if not path.is_absolute():
        raise ConfigError(f"{req.name}: {package} depends on {url}, a relative file URL, which tools read differently", f"use [tool.uv.sources] {req.name} = {{ path = \"…\" }} instead")
    if path.is_file():
        return None  # a wheel or sdist file: the resolvers' rules for local files apply
    name = canonicalize_name(req.name)
    declared = f"{package}'s dependency {req.name} @ {url}"
    return LocalSource(name, _check_directory(path, name, declared, allowed), declared, "file: requirement", tuple(sorted(req.extras)), url)


def local_sources(
    requires: Sequence[str],
    extras: Sequence[str],
    package_dir: Path,
    package: str,
    workspace: Workspace | None,
    allowed: Path,
    env: Mapping[str, str],
) -> list[LocalSource]:
    """The local packages among ``requires`` (one package's Requires-Dist) that apply on the target with
    ``extras``: by a ``file:`` URL, by the package's own ``[tool.uv.sources]``, or by the workspace root's."""
    own = _uv(_read(package_dir / "pyproject.toml")).get("sources")
    own = own if isinstance(own, dict) else {}
    out: list[LocalSource] = []
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue  # the backend wrote it; the resolver reports it in its own words
        if req.marker is not None and not any(req.marker.evaluate(dict(env, extra=e)) for e in [*extras, ""]):
            continue
        name = canonicalize_name(req.name)
        if req.url:
            found = _direct(req, package, allowed)
            if found is not None:
                out.append(found)
            continue
        entry, base, where = _source_entry(own, name, env), package_dir, package_dir / "pyproject.toml"
        if entry is None and workspace is not None:
            entry, base, where = _source_entry(workspace.sources, name, env), workspace.root, workspace.root / "pyproject.toml"
        if not entry:
            continue
        if entry.get("workspace") is True:
            member = workspace.member(name) if workspace is not None else None
            if member is None:
                raise ConfigError(
                    f"{name}: {where} says {{ workspace = true }}, but " + ("there is no uv workspace here" if workspace is None else f"no member of {workspace.root} is named {name}"),
                    f"add {name}'s directory to [tool.uv.workspace] members, or give its path: {{ path = \"…\" }}",
                )
            declared = f"{where} [tool.uv.sources] {name} = {{ workspace = true }}"
            out.append(LocalSource(name, _check_directory(member, name, declared, allowed), declared, "workspace member", tuple(sorted(req.extras))))
        elif isinstance(entry.get("path"), str):
            declared = f"{where} [tool.uv.sources] {name} = {{ path = {entry['path']!r} }}"
            target = base / entry["path"]
            if target.is_file():
                raise ConfigError(f"{name}: {declared} is a file; pyimage builds path dependencies from their source directory", f"point the path at {name}'s project directory")
            out.append(LocalSource(name, _check_directory(target, name, declared, allowed), declared, "path source", tuple(sorted(req.extras))))
    return out


def collect(
    app_requires: Sequence[str],
    extras: Sequence[str],
    project_dir: Path,
    app_name: str,
    workspace: Workspace | None,
    env: Mapping[str, str],
    build: Callable[[LocalSource], tuple[Path, list[str]]],
) -> list[LocalPackage]:
    """Every local package the app needs, transitively: ``build`` makes one's wheel and returns it with its
    Requires-Dist, whose own local packages are then found from that package's pyproject.toml."""
    allowed = source_root(project_dir, workspace)
    queue = [(s, app_name) for s in local_sources(app_requires, extras, project_dir, app_name, workspace, allowed, env)]
    done: dict[str, LocalPackage] = {}
    while queue:
        source, wanted_by = queue.pop(0)
        if source.name == canonicalize_name(app_name) or source.directory == project_dir.resolve():
            raise ConfigError(f"{wanted_by} depends on {source.name} ({source.declared}), which is the project being built", "remove the dependency cycle")
        seen = done.get(source.name)
        if seen is not None:
            if seen.source.directory != source.directory:
                raise ConfigError(
                    f"{source.name} comes from two directories: {seen.source.directory} ({seen.source.declared}) and {source.directory} ({source.declared})",
                    f"give {source.name} one source",
                )
            continue
        if len(done) >= _MAX_LOCAL:
            raise ConfigError(f"more than {_MAX_LOCAL} local packages", "check [tool.uv.sources] for a loop")
        wheel, requires = build(source)
        done[source.name] = LocalPackage(source, wheel, tuple(requires))
        queue += [(s, source.name) for s in local_sources(requires, source.extras, source.directory, source.name, workspace, allowed, env)]
    return sorted(done.values(), key=lambda item: item.source.name)
