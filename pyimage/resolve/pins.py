"""Which versions the image installs: a hashed requirements file as it is, the team's lock as locked,
pyimage's own lock while its inputs are unchanged, else a fresh resolution (uv, or pip) that rewrites it; and
whether a plain requirements file covers the project's own dependencies."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from packaging.utils import canonicalize_name

from pyimage.cache import Cache
from pyimage.config import Config
from pyimage.errors import ConfigError, PyimageError
from pyimage.resolve import hashedreqs
from pyimage.resolve.appsource import AppSource, is_package, static_requires
from pyimage.resolve.lock import inputs_key, read_lock, target_table, write_lock
from pyimage.resolve.lockinput import detect as detect_lock_input, is_pyimage_lock, locked_pins, target_environment
from pyimage.resolve.pip import Pin, resolve
from pyimage.resolve.target import Target
from pyimage.resolve.uvsources import UvSources, prefetch as prefetch_from_uv_indexes, read as read_uv_sources, refuse_pip
from pyimage.resolve.workspace import LocalPackage, Workspace, relative_path

__all__ = ["choose_pins", "check_requirements_cover", "Ahead", "resolve_ahead", "declared_digest"]

Events = Callable[[str], None]


def _local_material(local: Sequence[LocalPackage], start: Path) -> list[str]:
    """What the local packages add to resolution (their names, places and Requires-Dist), without machine paths."""
    return sorted(f"local {p.source.name} at {relative_path(p.source.directory, start)}: {r}" for p in local for r in (*p.requires, ""))


def choose_pins(
    cfg: Config,
    app: Path | AppSource,
    requires: list[str],
    target: Target,
    cache: Cache,
    events: Events,
    refresh: bool,
    upgrade: bool,
    local: Sequence[LocalPackage] = (),
    workspace: Workspace | None = None,
    ahead: Ahead | None = None,
) -> list[Pin]:
    """The pins the image installs (see the module docstring for the order). ``ahead``: a resolution started from
    pyproject.toml while the app wheel was built (``resolve_ahead``), taken when the wheel asks the same."""
    req_file = cfg.requirements
    if req_file and not (cfg.project_dir / req_file).is_file():
        raise ConfigError(f"requirements file {req_file} not found in {cfg.project_dir}", "fix [tool.pyimage] requirements")
    req_text = (cfg.project_dir / req_file).read_text() if req_file else ""
    if req_file:
        _refuse_local_lines(cfg.project_dir, req_file, req_text)
    app_name = app.name if isinstance(app, AppSource) else app.name.split("-")[0].replace("_", "-").lower()
    local_names = frozenset(p.source.name for p in local)
    if req_file and hashedreqs.is_hashed(req_text):  # every requirement pinned and hashed: a lock, installed as it is
        if refresh:
            raise ConfigError(f"{req_file} pins and hashes every requirement; pyimage does not rewrite it", hashedreqs.FIX)
        _no_groups_without_a_lock(cfg.groups)
        pins = [p for p in hashedreqs.locked_pins(cfg.project_dir / req_file, target, cache, events) if p.name != app_name]
        check_requirements_cover(requires, cfg.extras, pins, target, req_file)
        return pins
    team_lock = None if req_file else detect_lock_input(cfg.project_dir, cfg.lock_input)
    if team_lock is None and not req_file and cfg.lock_input is None and workspace is not None and (workspace.root / "uv.lock").is_file():
        team_lock = workspace.root / "uv.lock"  # a member builds from the workspace root's lock
    if team_lock is not None:  # the team's lock: installed as locked, never resolved again, never written
        if refresh:
            fix = {"uv.lock": "uv lock", "poetry.lock": "poetry lock"}.get(team_lock.name, "the tool that wrote it (uv export, pip lock)")
            raise ConfigError(f"the project's lock is {team_lock.name}; pyimage does not rewrite it", f"update it with {fix}, or set lock-input = \"none\" to let pyimage resolve")
        all_requires = [*requires, *(r for p in local for r in p.requires)]
        where = {p.source.name: p.source.directory for p in local}
        return locked_pins(team_lock, app_name, all_requires, cfg.extras, cfg.groups, target, cache, events, local=where, project_dir=cfg.project_dir)
    _no_groups_without_a_lock(cfg.groups)
    uv_sources = UvSources() if req_file else read_uv_sources(cfg.project_dir)
    lock_path = cfg.project_dir / cfg.lock
    # With a requirements file, the local packages' own dependencies are resolved too since 2026-11 (marked, so a
    # lock made without them is stale)
    marker = ["requirements+local"] if req_file and local else []
    key = inputs_key([*requires, *_local_material(local, lock_path.parent), *marker], cfg.extras, req_text, target, uv_sources.fingerprint())
    _migrate_lock(lock_path, events)
    lock = read_lock(lock_path, target)
    local_entries = [(p.source.name, relative_path(p.source.directory, lock_path.parent)) for p in local]
    if lock is not None and lock.inputs == key and not refresh:
        if lock.legacy:  # pyimage's lock of the old single-platform form: rewritten once with per-platform entries
            write_lock(lock_path, lock.pins, key, target, local_entries)
        prefetch_from_uv_indexes(lock.pins, uv_sources, cache)
        return lock.pins
    if lock is not None and lock.inputs != key:
        events(f"{lock_path.name} is stale ({_what_changed(lock_path, target, lock.declared, requires, cfg.extras)}): resolving again")
    prefer = [] if upgrade or lock is None else _fitting(lock.pins, [*requires, *(r for p in local for r in p.requires)])
    extras = f"[{','.join(cfg.extras)}]" if cfg.extras else ""
    if req_file:  # and the local packages, whose own dependencies the file may not list
        request = ["-r", str(cfg.project_dir / req_file), *_local_request(local)]
    elif isinstance(app, AppSource):  # no wheel: its dependencies themselves (the extras' already among them)
        request = [*(r for r in requires if _requirement_name(r) not in local_names), *_local_request(local)]
    else:
        request = [f"{app}{extras}", *_local_request(local)]
    declared = declared_digest(requires, cfg.extras, target) if not req_file and not isinstance(app, AppSource) and not local else ""
    taken = ahead.pins_for(declared, prefer, events) if ahead is not None and declared else None
    if taken is not None:
        pins = taken
    else:
        pins = _resolve(cfg.resolver, request, target, cache, prefer, events, local_names, uv_sources, cfg.extras) if request else []
    if req_file:
        check_requirements_cover([r for r in requires if _requirement_name(r) not in local_names], cfg.extras, pins, target, req_file)
    pins = [p for p in pins if p.name != app_name and p.name not in local_names]
    prefetch_from_uv_indexes(pins, uv_sources, cache)
    write_lock(lock_path, pins, key, target, local_entries, declared)
    return pins


def declared_digest(requires: Sequence[str], extras: Sequence[str], target: Target) -> str:
    """What a project asks of the resolver on ``target``: each requirement that applies there (its marker true with
    no extra or a selected one), as name, extras, specifiers and URL, hashed. The same for pyproject.toml's
    dependencies and the Requires-Dist a backend writes from them, however it spells them; "" when a line cannot
    be read (then nothing is compared)."""
    from packaging.requirements import InvalidRequirement, Requirement

    env = target_environment(target)
    asked = set()
    try:
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not any(req.marker.evaluate({**env, "extra": e}) for e in [*extras, ""]):
                continue
            asked.add((canonicalize_name(req.name), ",".join(sorted(canonicalize_name(e) for e in req.extras)), str(req.specifier), req.url or ""))
    except (InvalidRequirement, ValueError, TypeError, LookupError):
        return ""
    return hashlib.sha256(json.dumps(sorted(asked)).encode()).hexdigest()


class Ahead:
    """A resolution of pyproject.toml's static dependencies, running on a thread while the app wheel is built
    (uv's time is mostly the index's replies, the backend's is one core: a dependency bump overlapped them,
    0.45 s here). Its pins stand for the wheel's only when the wheel asks the same (``declared_digest``) with the
    same preferred versions; otherwise, or when it failed, the build resolves as if it had never run."""

    def __init__(self, declared: str, prefer: Sequence[Pin], run: Callable[[Events], list[Pin]]) -> None:
        self.declared, self.prefer = declared, tuple(prefer)
        self._said: list[str] = []
        self._pins: list[Pin] | None = None
        self._thread = threading.Thread(target=self._run, args=(run,), name="pyimage-resolve-ahead", daemon=True)
        self._thread.start()

    def _run(self, run: Callable[[Events], list[Pin]]) -> None:
        try:
            self._pins = run(self._said.append)
        except (PyimageError, OSError):
            self._pins = None  # the build's own resolution meets it again and says it in its place

    def wait(self) -> None:
        self._thread.join()

    def pins_for(self, declared: str, prefer: Sequence[Pin], events: Events) -> list[Pin] | None:
        """Its pins when ``declared`` and ``prefer`` are what it resolved (its messages said now), else None."""
        if declared != self.declared or tuple(prefer) != self.prefer:
            return None
        self.wait()
        if self._pins is not None:
            for line in self._said:
                events(line)
        return self._pins


def resolve_ahead(cfg: Config, target: Target, cache: Cache, refresh: bool, upgrade: bool, workspace: Workspace | None) -> Ahead | None:
    """Starts resolving while the app wheel builds, when pyproject.toml alone shows that the build will resolve:
    pyimage's lock is absent, records other requirements (``requires-digest``) or is being refreshed, and the
    dependencies are static (``static_requires``). Never for a requirements file, a team lock, a workspace or
    path sources (their packages are built first); a lock written before the digest was recorded is trusted."""
    if cfg.requirements or cfg.groups or workspace is not None:
        return None
    lock_path = cfg.project_dir / cfg.lock
    table = target_table(lock_path, target.platform) if lock_path.is_file() else {}
    recorded = table.get("requires-digest", "") if table else None  # None: no entry for this platform, nothing locked
    if recorded == "" and not refresh:
        return None  # a lock from before the digest was recorded: trusted (and no file read further)
    try:
        if detect_lock_input(cfg.project_dir, cfg.lock_input) is not None or _builds_sources(cfg.project_dir):
            return None
        requires = static_requires(cfg.project_dir, cfg.extras)
        if not requires:
            return None
        declared = declared_digest(requires, cfg.extras, target)
        if not declared or (recorded == declared and not refresh):
            return None
        lock = read_lock(lock_path, target)
        sources = read_uv_sources(cfg.project_dir)
    except PyimageError:
        return None  # said where the build meets it
    prefer = [] if upgrade or lock is None else _fitting(lock.pins, requires)
    return Ahead(declared, prefer, lambda said: _resolve(cfg.resolver, list(requires), target, cache, prefer, said, frozenset(), sources, cfg.extras))


def _what_changed(lock_path: Path, target: Target, declared: str, requires: Sequence[str], extras: Sequence[str]) -> str:
    """Why a lock's entry for this platform no longer fits, as far as the lock records it: another Python or libc
    (one entry per platform: a 3.11 and a 3.12 build of it take turns), the project's requirements, else an input
    it does not record (pip's configuration, a requirements file, index declarations)."""
    was = target_table(lock_path, target.platform).get("target", "")
    if was and was != target.describe():
        return f"resolved for {was}, this build is for {target.describe()}; the lock keeps one entry per platform"
    if declared and declared != declared_digest(requires, extras, target):
        return "the project's dependencies changed"
    return "dependencies, pip configuration or index settings changed"


def _builds_sources(project_dir: Path) -> bool:
    """Whether [tool.uv.sources] names a path, workspace member, git repository or URL (built before resolving)."""
    import tomllib

    try:
        sources = tomllib.loads((project_dir / "pyproject.toml").read_text()).get("tool", {}).get("uv", {}).get("sources", {})
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return True
    entries = [e for v in (sources.values() if isinstance(sources, dict) else [None]) for e in (v if isinstance(v, list) else [v])]
    return not all(isinstance(e, dict) and set(e) <= {"index", "marker", "extra", "group"} for e in entries)


_LOCAL_LINE = re.compile(r"^(?:(?:-e|--editable)(?:\s+|=)(?P<editable>\S+)|(?P<path>(?:\.{1,2}(?=/|$)|/|~|file:)\S*)|(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*@\s*(?P<url>file:\S+))")


def _refuse_local_lines(project_dir: Path, req_file: str, text: str) -> None:
    """A requirements line naming a directory of this machine (``-e ./libs/shared``, ``./libs/shared``,
    ``shared @ file:…``) cannot be locked or fetched: one error naming the line, with the declaration pyimage does
    build (a path dependency of the project, built into the ``workspace`` layer), before any work."""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        match = _LOCAL_LINE.match(line)
        if match is None:
            continue
        import urllib.parse  # only for a line that names a directory

        target = match.group("editable") or match.group("path") or match.group("url") or ""
        if "://" in target and not target.startswith("file:"):  # -e git+https://…: a VCS dependency, not a directory
            continue
        location = urllib.parse.unquote(urllib.parse.urlparse(target).path) if target.startswith("file:") else target
        where = project_dir / Path(location).expanduser()
        if where.is_file():  # a wheel or sdist of this machine: a lock naming it would work nowhere else
            archive = where.name
            name_version = archive.split("-")[:2] if archive.endswith(".whl") else archive.rsplit(".tar", 1)[0].rsplit(".zip", 1)[0].rsplit("-", 1)
            pin = f"{canonicalize_name(name_version[0])}=={name_version[1]}" if len(name_version) == 2 else "NAME==VERSION"
            raise ConfigError(
                f"{req_file}:{number}: {line!r} installs the file {location}, which a lock cannot name (it is on this machine only)",
                f"put {archive} in a find-links directory (PIP_FIND_LINKS, or [tool.uv] find-links) and write {pin} on this line instead",
            )
        if not where.is_dir():
            continue  # nothing there: the resolver says so
        if where.resolve() == project_dir.resolve():  # `-e .`: the project itself, which the image holds anyway
            raise ConfigError(
                f"{req_file}:{number}: {line!r} installs the project itself",
                "remove the line: the project's wheel is the image's app layer" if is_package(project_dir) else
                "remove the line: the project is not a package, and its files are copied to the image's workdir (/app) as they are; "
                "to install it as a package instead, add a [build-system] table to pyproject.toml",
            )
        name = match.group("name") or _project_name(project_dir / location) or Path(location.rstrip("/")).name or "NAME"
        rel = location if not Path(location).is_absolute() else os.path.relpath(location, project_dir)
        raise ConfigError(
            f"{req_file}:{number}: {line!r} installs the directory {location}, which pyimage cannot lock or fetch from a requirements file",
            f'declare it in pyproject.toml instead: add "{name}" to [project] dependencies and [tool.uv.sources] {name} = {{ path = "{rel}" }} '
            f"(pyimage builds it into the workspace layer, with its own dependencies), then remove this line",
        )


def _project_name(directory: Path) -> str:
    try:
        import tomllib

        name = tomllib.loads((directory / "pyproject.toml").read_text()).get("project", {}).get("name", "")
    except (OSError, ValueError, UnicodeDecodeError):
        return ""
    return canonicalize_name(name) if isinstance(name, str) and name else ""


def _local_request(local: Sequence[LocalPackage]) -> list[str]:
    """The local packages as resolver inputs: the built wheel, or for a ``name @ file:`` dependency that same
    URL (a resolver refuses two different URLs for one name), so their own dependencies are resolved too."""
    out = []
    for p in local:
        extras = f"[{','.join(p.source.extras)}]" if p.source.extras else ""
        out.append(f"{p.source.name}{extras} @ {p.source.url}" if p.source.url else f"{p.wheel}{extras}")
    return out


def _requirement_name(line: str) -> str:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return canonicalize_name(Requirement(line).name)
    except InvalidRequirement:
        return ""


def _fitting(prefer: list[Pin], requires: Sequence[str]) -> list[Pin]:
    """The old lock's pins that no requirement excludes. After a bump (``numpy==2.3.5`` where the lock has 2.4.6)
    the old pin as a constraint makes the first, preferring resolution fail, and the resolver runs twice (uv: ~0.4 s
    each); the bumped package is left free instead, every other package still prefers its locked version."""
    from packaging.requirements import InvalidRequirement, Requirement

    specifiers: dict[str, list[Any]] = {}
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        specifiers.setdefault(canonicalize_name(req.name), []).append(req.specifier)
    return [p for p in prefer if all(s.contains(p.version, prereleases=True) for s in specifiers.get(canonicalize_name(p.name), ()))]


def _resolve(
    resolver: str,
    request: list[str],
    target: Target,
    cache: Cache,
    prefer: list[Pin],
    events: Events,
    local: frozenset[str] = frozenset(),
    sources: UvSources = UvSources(),
    extras: Sequence[str] = (),
) -> list[Pin]:
    """uv for ``auto`` where it can serve (resolve/uv.py says when it cannot), else pip; ``uv`` and ``pip`` force one.
    A project pinning packages to uv indexes (resolve/uvsources.py) is never resolved by pip, which cannot honour them."""
    from pyimage.resolve import uv

    why_not = "" if resolver == "pip" else uv.why_not_uv(target)
    if resolver == "uv" and why_not:
        raise ConfigError(f"resolver = \"uv\" cannot serve this build: {why_not}", 'set resolver = "pip" (or "auto", which falls back to pip)')
    if sources.declared and (resolver == "pip" or why_not):
        raise refuse_pip(sources, why_not)
    if resolver != "pip" and not why_not:
        events(f"resolving dependencies for {target.describe()} with uv")
        return uv.resolve(request, target, cache, prefer=prefer, project=sources, extras=extras, local=local)
    events(f"resolving dependencies for {target.describe()} with pip" + (f" ({why_not})" if resolver == "auto" else ""))
    return resolve(request, target, cache, prefer=prefer, local=local)


def _migrate_lock(lock_path: Path, events: Events) -> None:
    """pyimage's lock was ``pylock.toml`` (``pylock.<platform>.toml``) before it took the name
    ``pylock.pyimage.toml``: such a file that pyimage wrote (it carries ``[tool.pyimage] inputs``) is renamed
    once; any other file by the old name belongs to another tool and is left alone."""
    if lock_path.exists() or not lock_path.name.startswith("pylock.pyimage."):
        return
    old = lock_path.with_name("pylock." + lock_path.name.removeprefix("pylock.pyimage."))
    if old.is_file() and is_pyimage_lock(old):
        os.replace(old, lock_path)
        events(f"{old.name} was pyimage's lock: renamed to {lock_path.name} (pyimage's lock no longer takes the name other tools write)")


def check_requirements_cover(requires: list[str], extras: Sequence[str], pins: list[Pin], target: Target, req_file: str) -> None:
    from packaging.requirements import Requirement

    by_name = {p.name: p for p in pins}
    env = {"python_version": target.python, "python_full_version": f"{target.python}.0", "sys_platform": "linux", "platform_system": "Linux", "platform_machine": target.machine, "implementation_name": "cpython", "platform_python_implementation": "CPython", "os_name": "posix"}
    from packaging.utils import canonicalize_name

    for line in requires:
        req = Requirement(line)
        if req.marker and not any(req.marker.evaluate(dict(env, extra=e)) for e in [*extras, ""]):
            continue
        pin = by_name.get(canonicalize_name(req.name))
        if pin is None or (req.specifier and not req.specifier.contains(pin.version, prereleases=True)):
            raise ConfigError(
                f"{req_file} does not satisfy the project's dependency {line!r}" + (f" (pins {pin.version})" if pin else ""),
                f"add a matching pin for {req.name} to {req_file}",
            )


def _no_groups_without_a_lock(groups: Sequence[str]) -> None:
    """``groups`` are taken from a team lock (uv.lock, poetry.lock, pylock.toml); without one they were silently
    left out, and the image failed at import in the container (a misspelt name too)."""
    if groups:
        raise ConfigError(
            f"groups = {list(groups)}: dependency groups are installed from the project's lock (uv.lock, poetry.lock, pylock.toml), and it has none",
            "run `uv lock` (or `poetry lock`) in the project so the groups are locked, or list those packages in [project] dependencies",
        )
