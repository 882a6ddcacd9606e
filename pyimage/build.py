"""``pyimage build`` as a library: Config -> resolve -> plan -> layers -> Image -> outputs.

Each stage is a function of the previous one's value; the CLI only renders what this returns. ``Events``
receives progress lines for people; nothing here prints.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from packaging.utils import canonicalize_name

from pyimage.cache import Cache
from pyimage.config import Config
from pyimage.errors import BuildError, ConfigError
from pyimage.layers.build import LayerContext, build_custom_layer, build_layer
from pyimage.layers.bytecode import can_compile
from pyimage.layers.paths import InstallPaths
from pyimage.layers.interpreter import Interpreter, choose_base_python, standalone_interpreter, venv_filler
from pyimage.layers.native import check_libraries
from pyimage.layers.plan import LayerPlan, plan_layers
from pyimage.layers.ignore import DockerIgnore, read_dockerignore, secret_like
from pyimage.layers.runtime import ProjectFile, RuntimeUser, collect_files, files_filler, files_parts, runtime_filler, runtime_parts, runtime_user
from pyimage.base import load_base, scan_base
from pyimage.oci.engine import Loaded
from pyimage.oci.layout import split_layout_ref
from pyimage.oci.model import MEDIA_OCI_INDEX, Image, ImageIndex, Layer
from pyimage.publish import RegistrySettings
from pyimage.resolve import hashedreqs
from pyimage.resolve.appsource import DEFAULT_WORKDIR, AppSource, app_source, entrypoint_guess, is_package, tree_entries
from pyimage.resolve.appwheel import build_app_wheel, check_requires_python, requires_python
from pyimage.resolve.lock import inputs_key, read_lock, write_lock
from pyimage.resolve.lockinput import detect as detect_lock_input, is_pyimage_lock, locked_pins, target_environment
from pyimage.resolve.pip import Pin, fetch_wheels, resolve, sdist_wheel
from pyimage.resolve.target import Target
from pyimage.resolve.uvsources import UvSources, prefetch as prefetch_from_uv_indexes, read as read_uv_sources, refuse_pip
from pyimage.resolve.workspace import LocalPackage, LocalSource, Workspace, check_buildable, collect as collect_local, find_workspace, member_dir, relative_path
from pyimage.runconfig import bytecode_notes, check_entrypoint, check_program, entrypoint, image_config
from pyimage.wheels import Wheel, read_wheel

__all__ = ["Prepared", "BuildResult", "prepare", "prepare_platforms", "build_image", "build_images", "lock_only", "workspace_member", "unpackaged_app"]

Events = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Prepared:
    """Everything decided before layer work: the base, interpreter, wheels and the plan."""

    config: Config
    cache: Cache
    base: Image
    base_source: str
    interpreter: Interpreter
    target: Target
    app: Wheel | None  # None for a project that is not a package: ``app_files`` is its app layer
    wheels: tuple[Wheel, ...]
    plan: LayerPlan
    paths: InstallPaths
    notes: tuple[str, ...] = ()
    workdir: Path | None = None
    pins: tuple[Pin, ...] = ()
    console_scripts: tuple[str, ...] = ()  # the app wheel's console and legacy scripts, read once with its Requires-Dist
    files: tuple[ProjectFile, ...] = ()  # the `files` layer's content, checked before any work
    user: RuntimeUser | None = None  # the runtime user (created in the `runtime` layer when the base lacks it)
    workspace: tuple[Wheel, ...] = ()  # first-party packages built from local paths (the `workspace` layer)
    app_files: tuple[ProjectFile, ...] = ()  # a project that is not a package: its source tree, the `app` layer
    source: AppSource | None = None  # and its name, version and dependencies (no wheel metadata to read them from)

    @property
    def name(self) -> str:
        return self.app.name if self.app is not None else self.source.name if self.source is not None else ""

    @property
    def version(self) -> str:
        return self.app.version if self.app is not None else self.source.version if self.source is not None else ""

    @property
    def workdir_in_image(self) -> str | None:
        """The image's WorkingDir: ``workdir``, else ``/app`` where a project that is not a package is copied."""
        return self.config.workdir or (None if self.app is not None else DEFAULT_WORKDIR)

    @property
    def has_runtime_layer(self) -> bool:
        return (self.user is not None and self.user.created) or bool(self.config.writable)

    def cleanup(self) -> None:
        """Removes the scratch directory holding the app wheel (call once the image is written)."""
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass(frozen=True)
class BuildResult:
    image: Image
    prepared: Prepared
    outputs: tuple[str, ...] = ()
    pushed: tuple[dict[str, Any], ...] = ()
    notes: tuple[str, ...] = field(default=())
    loaded: tuple[Loaded, ...] = ()
    index: ImageIndex | None = None  # several platforms: ``image``/``prepared`` are the first one's
    platforms: tuple[tuple[Prepared, Image], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` report. With several platforms, ``image`` is the index (its digest is what the tag
        names) and ``platforms`` lists each platform's manifest and layers; ``layers`` are the first one's."""
        image: dict[str, Any] = {"digest": self.image.digest, "config_digest": self.image.config_descriptor().digest, "platform": str(self.image.platform), "size": self.image.size}
        if self.index is not None:
            image = {"digest": self.index.digest, "platform": ",".join(str(i.platform) for i in self.index.images), "size": self.index.size, "media_type": MEDIA_OCI_INDEX}
        out: dict[str, Any] = {
            "image": image,
            "base": self.prepared.base_source,
            "layers": _layers_json(self.image),
            "outputs": list(self.outputs),
            "pushed": list(self.pushed),
            "loaded": [item.to_json() for item in self.loaded],
            "notes": list(self.notes),
        }
        if self.platforms:
            out["platforms"] = [
                {"platform": str(image.platform), "digest": image.digest, "base": prep.base_source, "layers": _layers_json(image)}
                for prep, image in self.platforms
            ]
        return out


def _layers_json(image: Image) -> list[dict[str, Any]]:
    return [
        {
            "name": layer.name,
            "digest": layer.digest,
            "diff_id": layer.diff_id,
            "size": layer.size,
            "uncompressed_size": layer.uncompressed_size,
            "packages": list(layer.packages),
            "cached": layer.cached,
            "remote": layer.remote,
        }
        for layer in image.layers
    ]


def _requires_dist(app: Path) -> tuple[str, list[str], list[str], str | None]:
    """(name, Requires-Dist lines, script names, Requires-Python) from the app wheel's metadata. The scripts are its
    console scripts and the legacy scripts it carries in ``NAME.data/scripts/`` (setup.py's ``scripts=['hg']``):
    both land in the venv's bin, so either can be the image's entrypoint."""
    from email.parser import Parser

    from installer.utils import parse_entrypoints

    with zipfile.ZipFile(app) as zf:
        dist_info = next(n.split("/")[0] for n in zf.namelist() if n.split("/")[0].endswith(".dist-info"))
        meta = Parser().parsestr(zf.read(f"{dist_info}/METADATA").decode("utf-8"))
        scripts: list[str] = []
        with contextlib.suppress(KeyError):
            eps = zf.read(f"{dist_info}/entry_points.txt").decode("utf-8")
            scripts = [name for name, _m, _a, section in parse_entrypoints(eps) if section == "console"]
        data = dist_info[: -len(".dist-info")] + ".data/scripts/"
        scripts += [n[len(data) :] for n in zf.namelist() if n.startswith(data) and "/" not in n[len(data) :] and n[len(data) :]]
    return meta["Name"], meta.get_all("Requires-Dist") or [], sorted(set(scripts)), meta.get("Requires-Python")


def _interpreter(cfg: Config, base: Image, cache: Cache) -> tuple[Interpreter, Target]:
    facts = scan_base(base, cache)
    if cfg.interpreter == "base":
        interp = choose_base_python(facts.pythons, cfg.python, cfg.base)
    else:
        interp = standalone_interpreter(cfg.interpreter, cfg.interpreter_sha256, cache)
        if cfg.python and cfg.python != interp.version:
            raise ConfigError(f"python = {cfg.python!r} but the interpreter is Python {interp.version}", "drop python, or point interpreter at a matching CPython")
    target = Target(interp.version, cfg.platform, facts.libc or "glibc", facts.libc_version or "2.28")
    base_arch = base.config.get("architecture") if not cfg.base.startswith("rootfs:") and base.layers else None
    if base_arch and (base_arch, base.config.get("os", "linux")) != (target.platform.architecture, target.platform.os):
        raise ConfigError(
            f"base {cfg.base} is for {base.config.get('os', 'linux')}/{base_arch}, but the target platform is {target.platform}",
            f"use a base built for {target.platform}, or set platform = \"{base.config.get('os', 'linux')}/{base_arch}\"",
        )
    if facts.machine and facts.machine != target.machine:
        raise ConfigError(
            f"base {cfg.base} holds {facts.machine} binaries (its libc), but the target platform is {target.platform} ({target.machine})",
            "use a base made for the target architecture, or set platform to match the base",
        )
    return interp, target


def unpackaged_app(start: Path) -> tuple[str, list[str]] | None:
    """For ``pyimage init``: (a project name, a likely entrypoint) when ``start`` is not a package (no
    ``[build-system]``, setup.py or setup.cfg; resolve/appsource.py), None when it builds into a wheel."""
    if is_package(start):
        return None
    source = app_source(start, ())
    return source.name, entrypoint_guess(start, source.requires)


def workspace_member(start: Path, package: str) -> Path:
    """``--package NAME``: the directory of that member of the uv workspace ``start`` is in (resolve/workspace.py)."""
    return member_dir(start, package)


def _local_packages(
    cfg: Config, workspace: Workspace | None, app_name: str, requires: list[str], target: Target, cache: Cache, workdir: Path, events: Events
) -> list[LocalPackage]:
    """The first-party packages the app depends on by path (resolve/workspace.py), each built into a wheel in
    ``workdir`` as the app's is: reused while its sources are unchanged, checked against the target."""

    def build_one(source: LocalSource) -> tuple[Path, list[str]]:
        check_requires_python(requires_python(source.directory), target, str(source.directory / "pyproject.toml"))
        label = f"the wheel of {source.name} ({source.kind})"
        wheel = build_app_wheel(source.directory, workdir / "local" / source.name, cache, cfg.epoch, target, events, label=label)
        name, reqs, _scripts, wheel_requires_python = _requires_dist(wheel)
        if canonicalize_name(name) != source.name:
            raise ConfigError(f"{source.declared} names {source.name}, but the project at {source.directory} is {name}", f"point {source.name}'s source at its own directory")
        check_requires_python(wheel_requires_python, target, f"{source.name} (its wheel's metadata)")
        return wheel, reqs

    return collect_local(requires, cfg.extras, cfg.project_dir, app_name, workspace, target_environment(target), build_one)


def _local_material(local: Sequence[LocalPackage], start: Path) -> list[str]:
    """What the local packages add to resolution (their names, places and Requires-Dist), without machine paths."""
    return sorted(f"local {p.source.name} at {relative_path(p.source.directory, start)}: {r}" for p in local for r in (*p.requires, ""))


def _pins(
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
) -> list[Pin]:
    req_file = cfg.requirements
    if req_file and not (cfg.project_dir / req_file).is_file():
        raise ConfigError(f"requirements file {req_file} not found in {cfg.project_dir}", "fix [tool.pyimage] requirements")
    req_text = (cfg.project_dir / req_file).read_text() if req_file else ""
    app_name = app.name if isinstance(app, AppSource) else app.name.split("-")[0].replace("_", "-").lower()
    local_names = frozenset(p.source.name for p in local)
    if req_file and hashedreqs.is_hashed(req_text):  # every requirement pinned and hashed: a lock, installed as it is
        if refresh:
            raise ConfigError(f"{req_file} pins and hashes every requirement; pyimage does not rewrite it", hashedreqs.FIX)
        pins = [p for p in hashedreqs.locked_pins(cfg.project_dir / req_file, target, cache, events) if p.name != app_name]
        _check_requirements_cover(requires, cfg.extras, pins, target, req_file)
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
    uv_sources = UvSources() if req_file else read_uv_sources(cfg.project_dir)
    lock_path = cfg.project_dir / cfg.lock
    key = inputs_key([*requires, *_local_material(local, lock_path.parent)], cfg.extras, req_text, target, uv_sources.fingerprint())
    _migrate_lock(lock_path, events)
    lock = read_lock(lock_path, target)
    local_entries = [(p.source.name, relative_path(p.source.directory, lock_path.parent)) for p in local]
    if lock is not None and lock.inputs == key and not refresh:
        if lock.legacy:  # pyimage's lock of the old single-platform form: rewritten once with per-platform entries
            write_lock(lock_path, lock.pins, key, target, local_entries)
        prefetch_from_uv_indexes(lock.pins, uv_sources, cache)
        return lock.pins
    if lock is not None and lock.inputs != key:
        events(f"{lock_path.name} is stale (dependencies, pip configuration or target changed): resolving again")
    prefer = [] if upgrade or lock is None else lock.pins
    extras = f"[{','.join(cfg.extras)}]" if cfg.extras else ""
    if req_file:
        request = ["-r", str(cfg.project_dir / req_file)]
    elif isinstance(app, AppSource):  # no wheel: its dependencies themselves (the extras' already among them)
        request = [*(r for r in requires if _requirement_name(r) not in local_names), *_local_request(local)]
    else:
        request = [f"{app}{extras}", *_local_request(local)]
    pins = _resolve(cfg.resolver, request, target, cache, prefer, events, local_names, uv_sources, cfg.extras) if request else []
    if req_file:
        _check_requirements_cover([r for r in requires if _requirement_name(r) not in local_names], cfg.extras, pins, target, req_file)
    pins = [p for p in pins if p.name != app_name and p.name not in local_names]
    prefetch_from_uv_indexes(pins, uv_sources, cache)
    write_lock(lock_path, pins, key, target, local_entries)
    return pins


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


def _check_requirements_cover(requires: list[str], extras: Sequence[str], pins: list[Pin], target: Target, req_file: str) -> None:
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


_CONFLICTS_FORMAT = 2  # bump when the rules below change, so a cached verdict of the old rules is not reused


def _interpreter_paths(paths: InstallPaths) -> tuple[list[str], list[str]]:
    """(files, directories) the ``interpreter`` layer writes (``venv_filler``), as wheel file maps name paths."""
    venv = paths.venv.strip("/")
    files = [f"{venv}/pyvenv.cfg", f"{paths.bin}/python", f"{paths.bin}/python3", f"{paths.bin}/python{paths.python}"]
    return files, [venv, paths.bin, f"{venv}/include", paths.site_packages]


def _check_conflicts(wheels: Sequence[Wheel], paths: InstallPaths, cache: Cache) -> list[str]:
    """Every path every layer above the base writes, checked against every other: two wheels writing the same
    file with different content, a wheel writing a file where the interpreter layer has one (``bin/python``,
    ``pyvenv.cfg``), or a file where another layer has a directory, is an error; identical copies are fine.

    The one exception is an ``__init__.py`` that is namespace boilerplate in every wheel shipping it (empty,
    ``pkgutil.extend_path`` or ``pkg_resources.declare_namespace``): that is how pre-PEP 420 namespace packages
    (old ``zope.*``, ``google.*``) split across wheels, and pip lets the last one win; one copy wins here too,
    and the returned notes say so. An ``__init__.py`` with any other code is a conflict like any file.
    """
    material = "|".join(sorted(w.sha256 for w in wheels) + [paths.venv, paths.python, str(_CONFLICTS_FORMAT)])
    set_key = "conflicts-" + hashlib.sha256(material.encode()).hexdigest()[:32]
    known = cache.get_meta(set_key)
    if isinstance(known, list):
        return known
    interp_files, interp_dirs = _interpreter_paths(paths)
    owners: dict[str, tuple[str, str, bool]] = {f: ("the interpreter layer", "interpreter", False) for f in interp_files}
    dirs: dict[str, str] = {d: "the interpreter layer" for d in interp_dirs}
    notes: list[str] = []
    for wheel in wheels:
        files, namespace = _wheel_files(wheel, paths, cache)
        for path, digest in sorted(files.items()):
            if posixpath.basename(posixpath.dirname(path)).endswith(".dist-info") and path.endswith(("/RECORD", "/INSTALLER")):
                continue  # written per wheel by the installer, in the wheel's own dist-info
            if path in dirs:
                raise BuildError(
                    f"{wheel.filename} installs a file at /{path}, where {dirs[path]} has a directory",
                    "drop one of the two packages, or pin versions that do not collide",
                )
            prev = owners.get(path)
            is_ns = path in namespace
            if prev and (prev[1] != digest or not digest):
                if path.endswith("/__init__.py") and is_ns and prev[2]:
                    notes.append(f"/{path} comes from both {prev[0]} and {wheel.filename} (namespace package boilerplate); one copy wins, as with pip")
                    continue
                raise BuildError(
                    f"{wheel.filename} and {prev[0]} both install /{path} with different content",
                    "drop one of the two packages, or pin versions that do not collide",
                )
            owners[path] = (wheel.filename, digest, is_ns)
            parent = posixpath.dirname(path)
            while parent and parent not in dirs:
                if parent in owners:
                    raise BuildError(
                        f"{wheel.filename} installs /{path} inside /{parent}, which {owners[parent][0]} installs as a file",
                        "drop one of the two packages, or pin versions that do not collide",
                    )
                dirs[parent] = wheel.filename
                parent = posixpath.dirname(parent)
    cache.put_meta(set_key, notes)
    return notes


def _wheel_files(wheel: Wheel, paths: InstallPaths, cache: Cache) -> tuple[dict[str, str], set[str]]:
    """A wheel's file map and its namespace-boilerplate ``__init__.py`` paths, cached by the wheel's content, so a
    new app sharing torch reads none of torch's bytes here."""
    key = _files_key(wheel.sha256, paths)
    facts = cache.get_meta(key)
    if not (isinstance(facts, dict) and isinstance(facts.get("files"), dict) and isinstance(facts.get("namespace"), list)):
        from pyimage.layers.install import namespace_inits, wheel_file_map

        if wheel.path is None:  # the facts are gone but the wheel was not fetched: a damaged cache
            raise BuildError(f"{wheel.filename}: its file list is missing from the cache", "run `pyimage cache verify`, then build again")
        facts = {"files": wheel_file_map(wheel.path, paths), "namespace": namespace_inits(wheel.path, paths)}
        cache.put_meta(key, facts)
    return facts["files"], set(facts["namespace"])


def _files_key(sha256: str, paths: InstallPaths) -> str:
    return f"files2-{sha256}-" + hashlib.sha256(f"{paths.venv}|{paths.python}".encode()).hexdigest()[:12]


def _wheel_values(pins: Sequence[Pin], target: Target, cache: Cache, paths: InstallPaths) -> list[Wheel]:
    """``Wheel`` values for the pins. A wheel whose facts (installed size, file map) the cache already holds by
    its sha256 is neither downloaded nor read here; a layer that misses the cache fetches it (``_fetcher``).
    An sdist pin stands for the wheel built from it for this target (kept in the cache, or built now)."""
    pins = [_built_pin(pin, target, cache) if pin.is_sdist else pin for pin in pins]
    known: dict[str, Wheel] = {}
    need: list[Pin] = []
    for pin in pins:
        size = cache.get_meta(f"wheel-{pin.sha256}")
        if size is not None and cache.get_meta(_files_key(pin.sha256, paths)) is not None:
            path = cache.cached_wheel(pin.sha256, pin.filename)
            known[pin.name] = Wheel(pin.name, pin.version, pin.filename, pin.sha256, path, size)  # type: ignore[arg-type]
        else:
            need.append(pin)
    fetched = fetch_wheels(need, target, cache) if need else {}
    out = []
    for pin in pins:
        wheel = known.get(pin.name)
        if wheel is None:
            wheel = read_wheel(fetched[pin.name], sha256=pin.sha256)
            cache.put_meta(f"wheel-{pin.sha256}", wheel.installed_size)
        out.append(wheel)
    return out


def _built_pin(pin: Pin, target: Target, cache: Cache) -> Pin:
    path, sha = sdist_wheel(pin, target, cache)
    return Pin(pin.name, pin.version, path.name, "", sha)


def _fetcher(pins: Sequence[Pin], target: Target, cache: Cache) -> Callable[[tuple[Wheel, ...]], tuple[Wheel, ...]]:
    """Gives wheels their files, downloading only those not in the cache: called by layers that must be built."""
    by_name = {pin.name: pin for pin in pins}

    def fetch(wheels: tuple[Wheel, ...]) -> tuple[Wheel, ...]:
        missing = [by_name[w.name] for w in wheels if (w.path is None or not w.path.exists()) and w.name in by_name]
        if not missing:
            return wheels
        got = fetch_wheels(missing, target, cache)
        return tuple(replace(w, path=got[w.name]) if w.name in got else w for w in wheels)

    return fetch


def prepare(
    cfg: Config,
    cache: Cache,
    events: Events = _quiet,
    *,
    refresh_lock: bool = False,
    upgrade: bool = False,
    registry: RegistrySettings | None = None,
    remote: Callable[[str], bool] | None = None,
) -> Prepared:
    """Resolves and plans; no layer is built. The app wheel lives in ``Prepared.workdir`` until cleanup.
    ``remote`` (push-only builds, see ``build_image``) lets base blobs the push targets hold stay undownloaded."""
    files = collect_files(cfg.project_dir, cfg.files, skip=_output_paths(cfg))  # a bad entry is an error before any work
    package = is_package(cfg.project_dir)
    source = None if package else app_source(cfg.project_dir, cfg.extras)
    app_files = () if package else _app_tree(cfg)
    requirements = cfg.project_dir / cfg.requirements if cfg.requirements else None
    if requirements is not None and requirements.is_file() and hashedreqs.is_hashed(requirements.read_text()):
        hashedreqs.parse(requirements)  # a partly hashed or unpinned file too
    workspace = find_workspace(cfg.project_dir)
    check_buildable(cfg.project_dir, workspace)  # a virtual workspace root: name its members, before the entrypoint check
    check_entrypoint(cfg, source)
    base, base_source = load_base(cfg.base, cfg.platform, cache, cfg.compression, registry or RegistrySettings(), remote=remote)
    events(f"base: {base_source}" + (" (pin it: base = this reference)" if "@sha256:" in base_source and "@" not in cfg.base else ""))
    interp, target = _interpreter(cfg, base, cache)
    facts = scan_base(base, cache)  # a cache hit: _interpreter scanned it
    user = runtime_user(cfg.user, facts.passwd, facts.group)
    paths = InstallPaths(cfg.venv, interp.version)
    venv = "/" + cfg.venv.strip("/")
    if posixpath.commonpath([venv, interp.executable]) == venv:
        raise ConfigError(f"venv = {venv!r} holds the base's interpreter {interp.executable}; the venv would replace it", 'set venv to a directory of its own, e.g. "/opt/venv"')
    workdir = cache.tmp_path("-appwheel")
    workdir.mkdir()
    try:
        check_requires_python(requires_python(cfg.project_dir), target, str(cfg.pyproject))
        app: Wheel | None = None
        scripts: list[str] = []
        app_input: Path | AppSource
        if source is not None:  # not a package: no wheel; its dependencies come from pyproject.toml
            app_name, requires, app_input = source.name, list(source.requires), source
        else:
            app_path = build_app_wheel(cfg.project_dir, workdir, cache, cfg.epoch, target, events)
            app = read_wheel(app_path)
            app_name, requires, scripts, wheel_requires_python = _requires_dist(app_path)
            check_requires_python(wheel_requires_python, target, f"{cfg.project_dir.name} (its wheel's metadata)")
            entrypoint(cfg, scripts, paths.bin)  # no or several scripts: said before resolving and building layers
            app_input = app_path
        local = _local_packages(cfg, workspace, app_name, requires, target, cache, workdir, events)
        local_wheels = [(read_wheel(p.wheel), f"built from {relative_path(p.source.directory, cfg.project_dir)} ({p.source.kind})") for p in local]
        pins = _pins(cfg, app_input, requires, target, cache, events, refresh_lock, upgrade, local, workspace)
        wheels = _wheel_values(pins, target, cache, paths)
        checked = [*wheels, *(w for w, _ in local_wheels), *([app] if app else [])]
        conflict_notes = _check_conflicts(checked, paths, cache)
        check_program(cfg, scripts, base, facts, interp, paths, (p for w in checked for p in _wheel_files(w, paths, cache)[0]), [*files, *app_files])
        if not refresh_lock:  # `pyimage lock` pins versions; whether the base can run them is the image's question
            check_libraries(  # an extension needing a library the image lacks: said now, not at import in the container
                checked, cache, _fetcher(pins, target, cache), base_libraries=facts.libraries, libc=facts.libc,
                machine=target.machine, allow=cfg.allow_missing_libraries, base=base_source,
            )
        threshold = cfg.heavy_threshold or None
        extra = int(bool(files)) + int((user is not None and user.created) or bool(cfg.writable)) + int(bool(app_files))
        plan = plan_layers(wheels, app, cfg.heavy, threshold, cfg.max_layers, fixed_layers=len(base.layers) + 1 + extra, workspace=local_wheels)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    notes = list(plan.notes) + conflict_notes + _files_notes([*files, *app_files]) + bytecode_notes(cfg, user)
    if cfg.compile_bytecode and not can_compile(interp.version):
        notes.append(f"compile-bytecode skipped: pyimage runs on Python {'.'.join(map(str, __import__('sys').version_info[:2]))}, the image has {interp.version}")
    return Prepared(
        cfg, cache, base, base_source, interp, target, app, tuple(wheels), plan, paths, tuple(notes), workdir, tuple(pins), tuple(scripts), tuple(files), user,
        tuple(w for w, _ in local_wheels), tuple(app_files), source,
    )


def _app_tree(cfg: Config) -> list[ProjectFile]:
    """The ``app`` layer of a project that is not a package: its tree at the workdir (``COPY . /app``), less
    what is never meant for an image (resolve/appsource.py) and the build's own outputs; checked before any work
    like ``files`` (nothing may point outside the project)."""
    workdir = posixpath.normpath(cfg.workdir or DEFAULT_WORKDIR)
    venv = "/" + cfg.venv.strip("/")
    if workdir == "/" or posixpath.commonpath([workdir, venv]) in (workdir, venv):
        raise ConfigError(
            f"workdir = {workdir!r}: the project is not a package, so its files are copied there, and that would " + ("fill the image's root" if workdir == "/" else f"mix them with the venv {venv}"),
            f'set [tool.pyimage] workdir to a directory of its own (default "{DEFAULT_WORKDIR}")',
        )
    outputs = _output_paths(cfg)
    # tree_entries names each top-level path, and collect_files takes a named path as named: the project's
    # .dockerignore must drop those names here (`.env`, `node_modules`), as it drops what the walk finds below them
    ignore = read_dockerignore(cfg.project_dir)
    entries = [e for e in tree_entries(cfg.project_dir, workdir, outputs) if not _top_ignored(e["src"], cfg.project_dir, ignore)]
    files = collect_files(cfg.project_dir, entries, skip=outputs)
    if not files:
        raise ConfigError(f"{cfg.project_dir}: the project is not a package and has no files to copy into the image", "add the app's code, or run pyimage in the app's directory")
    return files


def _top_ignored(src: str, project_dir: Path, ignore: DockerIgnore) -> bool:
    name = re.sub(r"\[(.)\]", r"\1", src)  # a top-level name with glob characters comes glob.escape()d
    path = project_dir / name
    return ignore.prunes(name) if path.is_dir() and not path.is_symlink() else ignore.excluded(name)


def _output_paths(cfg: Config) -> list[Path]:
    """The image paths this build writes (a layout directory, an archive): never part of the ``files`` layer,
    even before the first build made them recognisable. No output configured: the CLI's default, dist/image."""
    out = []
    for spec in cfg.output or ["oci:dist/image"]:
        kind, _, rest = spec.partition(":")
        if kind == "oci" and rest:
            path = split_layout_ref(rest)[0]
        elif kind == "docker-archive" and rest:
            path = Path(rest.partition(":")[0])
        else:
            continue
        out.append(path if path.is_absolute() else cfg.project_dir / path)
    return out


def _files_notes(files: Sequence[ProjectFile]) -> list[str]:
    """A note naming files in the ``files`` layer (or a non-package app's tree) that look like secrets: anyone who can pull the image reads them."""
    found = secret_like(f.dest for f in files)
    if not found:
        return []
    shown = ", ".join("/" + d for d in found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    return [f"the image holds what looks like secrets: {shown}; anyone who can pull the image can read them "
            "(leave them out with a .dockerignore line or the files entry's exclude, and pass secrets at run time)"]


def build_image(prep: Prepared, events: Events = _quiet, jobs: int = 2, remote: Callable[[str], bool] | None = None) -> Image:
    """Builds (or finds in the cache) every layer of the plan and assembles the image. ``remote`` (push-only
    builds) says whether the push targets hold a blob: a layer built before whose blob was pruned is then
    taken from the registry instead of being built again (``TargetBlobs``)."""
    cfg = prep.config
    ctx = LayerContext(
        cache=prep.cache,
        paths=prep.paths,
        owner=cfg.owner,
        epoch=cfg.epoch,
        compression=cfg.compression,
        compile_bytecode=cfg.compile_bytecode and can_compile(prep.interpreter.version),
        fetch=_fetcher(prep.pins, prep.target, prep.cache),
        remote=remote,
    )
    interp = prep.interpreter
    with prep.cache.lock("cache", shared=True):
        parts = {"exe": interp.executable, "version": interp.version, "source": interp.source_id}
        interp_layer = build_custom_layer("interpreter", parts, venv_filler(interp, prep.paths), ctx)
        specs = list(prep.plan.layers)
        # Biggest first so the long pole starts at once; results keep the plan's order.
        order = sorted(range(len(specs)), key=lambda i: -specs[i].installed_size)
        built: dict[int, Layer] = {}
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(build_layer, specs[i], ctx): i for i in order}
            for future in as_completed(futures):  # reported as each finishes, so a long torch layer is not silent
                i = futures[future]
                built[i] = future.result()
                events(f"layer {built[i].name}: {_status(built[i])} {built[i].digest[:19]}")
        extra: list[Layer] = []
        if prep.app_files:  # a project that is not a package: its tree, keyed by every file's path, mode and sha256
            extra.append(build_custom_layer("app", {"tree": files_parts(prep.app_files)}, files_filler(prep.app_files), ctx))
        if prep.has_runtime_layer:
            extra.append(build_custom_layer("runtime", runtime_parts(prep.user, cfg.writable), runtime_filler(prep.user, cfg.writable), ctx))
        if prep.files:
            extra.append(build_custom_layer("files", files_parts(prep.files), files_filler(prep.files), ctx))
        for layer in extra:
            events(f"layer {layer.name}: {_status(layer)} {layer.digest[:19]}")
    layers = [*prep.base.layers, interp_layer, *(built[i] for i in range(len(specs))), *extra]
    return Image(config=image_config(cfg, prep.base, prep.paths, prep.console_scripts, prep.user, prep.workdir_in_image, layers), layers=tuple(layers), annotations=dict(cfg.annotations))


def _status(layer: Layer) -> str:
    return "in registry" if layer.remote else "cached" if layer.cached else "built"


def prepare_platforms(
    cfg: Config, cache: Cache, events: Events = _quiet, *, registry: RegistrySettings | None = None, remote: Callable[[str], bool] | None = None
) -> list[Prepared]:
    """``prepare`` for each target platform (per-platform tables resolved), every decision made before any
    layer work; progress lines name the platform when there are several."""
    preps: list[Prepared] = []
    try:
        for platform in cfg.platforms:
            say = events if len(cfg.platforms) == 1 else (lambda line, p=platform: events(f"{p}: {line}"))
            preps.append(prepare(cfg.for_platform(platform), cache, say, registry=registry, remote=remote))
    except BaseException:
        for prep in preps:
            prep.cleanup()
        raise
    return preps


def build_images(preps: Sequence[Prepared], events: Events = _quiet, jobs: int = 2, remote: Callable[[str], bool] | None = None) -> tuple[Image, ...]:
    """Each platform's image; layers that are the same for several platforms (pure-Python wheels) are built
    once and found in the cache by the others."""
    if len(preps) == 1:
        return (build_image(preps[0], events, jobs=jobs, remote=remote),)

    def named(platform: object) -> Events:
        return lambda line: events(f"{platform}: {line}")

    return tuple(build_image(prep, named(prep.target.platform), jobs=jobs, remote=remote) for prep in preps)


def lock_only(cfg: Config, cache: Cache, events: Events = _quiet, upgrade: bool = False) -> Prepared:
    """Resolves again and rewrites the lock; without ``upgrade`` the locked versions are kept where they fit."""
    return prepare(cfg, cache, events, refresh_lock=True, upgrade=upgrade)
