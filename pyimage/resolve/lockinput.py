"""The team's lock as the input of a build: ``uv.lock`` or a PEP 751 ``pylock.toml``, installed as locked.

Nothing is resolved again. A ``uv.lock`` is turned into PEP 751 by ``uv export --locked --format pylock.toml``
(uv walks its own graph for the configured extras and groups, and refuses a lock that is out of date with
pyproject.toml); a ``pylock.toml`` (``uv export``, ``pip lock``, …) is read as it is. From the PEP 751 lock,
``packaging.pylock`` picks, for the target's Python, platform and libc, the one wheel of each package whose
marker holds there; a package that has wheels but none for the target is an error, never a quiet build from
its sdist. Wheels are fetched by their URL (or path beside the lock) and checked against the lock's sha256.
The lock file itself is only read.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from packaging.utils import canonicalize_name

import pyimage.tools as tools
from pyimage.cache import Cache
from pyimage.errors import BuildError, ConfigError
from pyimage.resolve import indexfiles
from pyimage.resolve.pip import Pin
from pyimage.resolve.target import Target

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["detect", "is_pyimage_lock", "locked_pins", "target_environment", "target_tags"]

def is_pyimage_lock(path: Path) -> bool:
    """Whether ``path`` is a lock pyimage wrote (``[tool.pyimage] inputs``, or ``targets`` since one file holds every platform)."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    tool = data.get("tool", {}).get("pyimage") if isinstance(data.get("tool"), dict) else None
    return isinstance(tool, dict) and ("inputs" in tool or "targets" in tool)


def detect(project_dir: Path, configured: str | None) -> Path | None:
    """The lock to build from: ``lock-input`` when set (``"none"``: no lock input), else ``uv.lock``, else
    ``poetry.lock``, else a ``pylock.toml`` another tool wrote; None when pyimage resolves by itself."""
    if configured is not None:
        if configured == "none":
            return None
        path = project_dir / configured
        if not path.is_file():
            raise ConfigError(f"lock-input {configured} not found in {project_dir}", 'fix [tool.pyimage] lock-input, or set it to "none" to let pyimage resolve')
        if path.name not in ("uv.lock", "poetry.lock") and not (path.name.startswith("pylock.") and path.name.endswith(".toml")):
            raise ConfigError(
                f"lock-input {configured}: pyimage reads uv.lock, poetry.lock and PEP 751 pylock.toml / pylock.<name>.toml files",
                "export the lock as PEP 751 (`uv export --format pylock.toml`, `pip lock`, `pdm export -f pylock`) and point lock-input at it",
            )
        return path
    for name in ("uv.lock", "poetry.lock", "pylock.toml"):
        path = project_dir / name
        if path.is_file() and not is_pyimage_lock(path):
            return path
    if (project_dir / "pdm.lock").is_file():  # resolving anew would ship other versions than the team locked
        raise ConfigError(f"{project_dir / 'pdm.lock'}: pyimage does not read pdm.lock, and resolving anew would not give the versions it locks", _PDM_FIX)
    return None


_PDM_FIX = (
    "export it: `pdm export -f requirements --prod -o requirements.lock.txt` and set requirements = \"requirements.lock.txt\" "
    "(or `pdm export -f pylock -o pylock.toml` with PDM >= 2.24); or set lock-input = \"none\" to let pyimage resolve"
)


def target_environment(target: Target) -> dict[str, str]:
    """PEP 508 marker variables of the image's interpreter."""
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{target.python}.0",
        "os_name": "posix",
        "platform_machine": target.machine,
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{target.python}.0",
        "platform_python_implementation": "CPython",
        "python_version": target.python,
        "sys_platform": "linux",
    }


def target_tags(target: Target) -> list[Any]:
    """Every wheel tag the target's interpreter accepts, most specific first."""
    version = tuple(int(p) for p in target.python.split(".")[:2])
    platforms = target.platform_tags()
    from packaging import tags  # only installing from a team's lock needs them

    return [*tags.cpython_tags(version, [f"cp{version[0]}{version[1]}"], platforms), *tags.compatible_tags(version, f"cp{version[0]}{version[1]}", platforms)]


def _uv() -> str | None:
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin  # the `uv` wheel from PyPI, installed beside pyimage
    except ImportError:
        return None
    try:
        return find_uv_bin()
    except FileNotFoundError:
        return None


def _export_uv(lock: Path, extras: Sequence[str], groups: Sequence[str], cwd: Path | None = None) -> str:
    """``uv export`` of ``lock`` as PEP 751 text, for the configured extras and groups, without the project.
    Run in ``cwd`` (a workspace member's directory: uv exports that member, its directory entries relative to it)."""
    uv = _uv()
    if uv is None:
        raise ConfigError(
            f"{lock} is the project's lock, and reading it needs uv, which is not on PATH",
            'install uv (its PyPI wheel: `pipx install uv`), or set [tool.pyimage] lock-input = "none" to let pyimage resolve',
        )
    args = [uv, "export", "--locked", "--format", "pylock.toml", "--no-emit-project", "--no-header", "--no-default-groups", "--quiet"]
    args += [a for e in extras for a in ("--extra", e)] + [a for g in groups for a in ("--group", g)]
    done = tools.run(args, tool="uv", doing=f"reading {lock} (uv export)", cwd=cwd or lock.parent)
    if not done.ok:
        message = " ".join(line.strip() for line in done.stderr.splitlines() if line.strip()).removeprefix("error: ")
        if "needs to be updated" in message or "--locked" in message:
            raise ConfigError(f"{lock} is out of date with pyproject.toml", "run `uv lock` and commit uv.lock")
        if message.startswith("No solution found"):  # pyproject.toml changed, and no lock can satisfy it (a typo'd name)
            cause = re.split(r"\s(?:cause:|╰─▶)\s*", message, maxsplit=1)[-1].strip()
            raise ConfigError(
                f"{lock} is out of date with pyproject.toml, which uv cannot lock again: {cause[:300]}",
                "fix the dependency in pyproject.toml, then run `uv lock` and commit uv.lock",
            )
        raise done.error("run `uv lock --check` in the project to see uv's full message", f"`uv export` cannot read {lock}", message[:300])
    return done.stdout


# How each tool that writes a pylock.toml writes it again (its `created-by`)
_REGENERATE = {
    "pdm": "pdm export -f pylock -o pylock.toml",
    "uv": "uv export --format pylock.toml -o pylock.toml",
    "pip": "pip lock -o pylock.toml",
}


def locked_pins(
    lock: Path,
    app_name: str,
    requires: Sequence[str],
    extras: Sequence[str],
    groups: Sequence[str],
    target: Target,
    cache: Cache,
    events: Callable[[str], None],
    local: Mapping[str, Path] = {},
    project_dir: Path | None = None,
) -> list[Pin]:
    """The pins ``lock`` selects for ``target``: one wheel (or, for a package without any, its sdist) each,
    fetched into the cache and hash-checked. Raises in the user's terms for a stale lock, a package without a
    wheel for the target, a local path dependency pyproject.toml does not declare.

    ``local`` maps the local packages pyproject.toml declares (built from their directories, not pinned) to
    their directories; the lock's directory entries must name the same ones (compared as paths, never opened).
    ``project_dir`` is where the app lives when it is a workspace member and the lock is the root's."""
    from packaging.pylock import PackageDirectory, PackageSdist, PackageWheel, Pylock, PylockSelectError, PylockValidationError

    if lock.name == "poetry.lock":
        from pyimage.resolve import poetrylock

        from_poetry = poetrylock.locked_pins(lock, app_name, extras, groups, target, cache, events)
        _check_covers(requires, extras, from_poetry, target, lock.name, poetrylock.FIX)
        return sorted(from_poetry, key=lambda p: p.name)
    is_uv = lock.name == "uv.lock"
    fix = "uv lock" if is_uv else "uv export --format pylock.toml (or pip lock)"
    events(f"installing from {lock.name} as locked (no resolution)")
    text = _export_uv(lock, extras, groups, project_dir) if is_uv else lock.read_text()
    try:
        data = tomllib.loads(text)
        pylock = Pylock.from_dict(data)
    except (tomllib.TOMLDecodeError, PylockValidationError) as exc:
        raise ConfigError(f"{lock}: not a PEP 751 lock file pyimage can read ({exc})", f"re-create it (`{fix}`)") from exc
    writer = str(data.get("created-by") or "").split()
    if not is_uv and writer:  # the tool that wrote it says how to write it again
        fix = _REGENERATE.get(writer[0].lower(), fix)
    env = target_environment(target)
    try:
        chosen = list(
            pylock.select(
                environment=env,  # type: ignore[arg-type]
                tags=target_tags(target),
                extras=[] if is_uv else list(extras),  # uv export has applied them already
                # PEP 751: the lock's default-groups are what is installed by default (PDM marks every runtime
                # package `"default" in dependency_groups`); the configured groups come on top of them
                dependency_groups=[] if is_uv else [*(pylock.default_groups or []), *groups],
            )
        )
    except PylockSelectError as exc:
        raise _select_error(str(exc), pylock, lock.name, target, fix) from exc
    pins: list[Pin] = []
    relative_to = project_dir if is_uv and project_dir is not None else lock.parent
    seen_local: set[str] = set()
    configured = functools.cache(indexfiles.configured_sources)  # pip's configuration: read once, if a download needs it
    for package, dist in chosen:
        name = canonicalize_name(package.name)
        if name == canonicalize_name(app_name):
            continue
        if isinstance(dist, PackageDirectory) and name in local:
            if os.path.normpath(os.path.join(os.path.abspath(relative_to), dist.path)) != os.path.normpath(local[name]):  # text only: never opened
                raise ConfigError(f"{lock.name} takes {name} from {dist.path}, but pyproject.toml says {local[name]}", f"update the lock: `{fix}`")
            seen_local.add(name)
            continue
        if isinstance(dist, PackageSdist) and package.wheels:
            raise BuildError(
                f"{name} {package.version}: {lock.name} lists no wheel for {target.describe()}",
                f"choose a version of {name} with a wheel for this platform, or add it to the lock's environments (`{fix}`)",
            )
        if isinstance(dist, PackageDirectory):
            raise ConfigError(
                f"{name} is a local path dependency in {lock.name} ({dist.path}) that pyproject.toml does not declare for {target.describe()}",
                f"declare it ([tool.uv.sources] {name} = {{ path = \"…\" }} or {{ workspace = true }}), then `{fix}`",
            )
        if not isinstance(dist, (PackageWheel, PackageSdist)):
            kind = "direct (VCS or archive)"
            raise BuildError(
                f"{name} is a {kind} dependency in {lock.name}: pyimage installs published wheels and sdists",
                f"publish {name} to an index and depend on it by name and version, then `{fix}`",
            )
        sha256 = (dist.hashes or {}).get("sha256")
        if not sha256:
            raise ConfigError(f"{name} {package.version}: {lock.name} gives no sha256 for {dist.name or dist.url}", f"re-create the lock (`{fix}`)")
        filename = dist.name or urllib.parse.unquote(urllib.parse.urlparse(dist.url or dist.path or "").path.rsplit("/", 1)[-1])
        if not filename or "/" in filename or "\\" in filename or filename.startswith("."):
            raise ConfigError(f"{name}: {lock.name} names the file {filename!r}, which is not a file name", f"re-create the lock (`{fix}`)")
        pin = Pin(name, str(package.version or ""), filename, dist.url or "", sha256, dist.size)
        if isinstance(dist, PackageWheel):
            _fetch(pin, dist.path, lock.parent, cache, lock.name, configured)
        pins.append(pin)
    unlocked = sorted(set(local) - seen_local)
    if unlocked:
        raise ConfigError(f"{lock.name} is out of date with pyproject.toml: it lacks the local package {unlocked[0]} ({local[unlocked[0]]})", f"update the lock: `{fix}`")
    _check_covers([r for r in requires if not _names_local(r, local)], extras, pins, target, lock.name, fix)
    return sorted(pins, key=lambda p: p.name)


def _names_local(line: str, local: Mapping[str, Path]) -> bool:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return canonicalize_name(Requirement(line).name) in local
    except InvalidRequirement:
        return False


def _select_error(message: str, pylock: object, lock_name: str, target: Target, fix: str) -> BuildError:
    """packaging's selection failure in the user's terms: which package (or the whole lock) misses the target."""
    missing = re.search(r"package '([^']+)'", message)
    if missing and "wheel" in message:
        name = canonicalize_name(missing.group(1))
        versions = {str(p.version) for p in getattr(pylock, "packages", []) if canonicalize_name(p.name) == name and p.version}
        version = f" {sorted(versions)[0]}" if len(versions) == 1 else ""
        return BuildError(
            f"{name}{version}: {lock_name} lists no wheel for {target.describe()}",
            f"lock for this platform too (`{fix}`; uv: include it in [tool.uv] environments / required-environments), or choose a {name} with a wheel for it",
        )
    environments = getattr(pylock, "environments", None)
    if environments:
        return BuildError(
            f"{lock_name} does not cover {target.describe()}: it is locked for {' or '.join(str(e) for e in environments)}",
            f"add the target to the lock's environments ([tool.uv] environments), then `{fix}`",
        )
    return BuildError(f"{lock_name} cannot be installed on {target.describe()}: {message}", f"update the lock for this target (`{fix}`)")


def _fetch(pin: Pin, path: str | None, lock_dir: Path, cache: Cache, lock_name: str = "the lock", sources: Callable[[], indexfiles.Sources] = indexfiles.configured_sources) -> None:
    """Puts ``pin``'s wheel in the cache (from its URL, or its path beside the lock), checking its sha256; a
    download carries the credentials pip's configuration has for its host (``sources``)."""
    if cache.cached_wheel(pin.sha256, pin.filename) is not None:
        return
    if path:
        local = (lock_dir / path).resolve()
        if not local.is_file():
            raise BuildError(f"{pin.name}: the lock's wheel {path} is not there", "restore it, or re-create the lock")
        cache.add_wheel(local, pin.sha256)
        return
    if urllib.parse.urlparse(pin.url).scheme not in ("https", "http", "file"):
        raise BuildError(f"{pin.name}: the lock gives neither a URL nor a path for {pin.filename}", "re-create the lock")
    indexfiles.fetch(pin, sources(), cache, lock_name)  # hashed as it arrives, linked into the cache unread


def _check_covers(requires: Sequence[str], extras: Sequence[str], pins: Sequence[Pin], target: Target, lock_name: str, fix: str) -> None:
    """Every dependency of the project (for the target and its extras) is in the lock at a version it allows:
    a lock out of date with pyproject.toml is one error, not an image without the new dependency."""
    by_name = {p.name: p for p in pins}
    env = target_environment(target)
    for line in requires:
        from packaging.requirements import Requirement

        req = Requirement(line)
        if req.marker and not any(req.marker.evaluate(dict(env, extra=e)) for e in [*extras, ""]):
            continue
        if req.url:
            continue
        pin = by_name.get(canonicalize_name(req.name))
        if pin is None or (req.specifier and not req.specifier.contains(pin.version, prereleases=True)):
            found = f" (it has {pin.version})" if pin else " (it lacks it)"
            raise ConfigError(f"{lock_name} is out of date with pyproject.toml: the project needs {line!r}{found} for {target.describe()}", f"update the lock: `{fix}`")


