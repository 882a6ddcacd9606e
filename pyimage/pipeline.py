"""``pyimage build`` as a library, its stages in order: ``plan`` -> ``fetch`` -> ``build`` -> outputs (``run``).

``plan`` makes every decision that can fail before layer work (base, interpreter, pins, wheel set, conflicts,
native libraries, layer plan, run config) and is what ``pyimage plan`` prints (``plan_document``); ``fetch`` is
the one step that downloads the wheels the layers to build will read (``layers.build.wheels_to_read``);
``build`` does the layer work; ``run`` is the whole command under one cache lock. The CLI only renders what
this returns; ``Events`` receives progress lines for people; nothing here prints.
"""

from __future__ import annotations

import posixpath
import re
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from packaging.utils import canonicalize_name

from pyimage.cache import Cache, Meta, count
from pyimage.config import Config
from pyimage.errors import BuildError, ConfigError, PyimageError
from pyimage.layers.build import LayerContext, build_custom_layer, build_layer, layer_key, wheels_to_read
from pyimage.layers.conflicts import cached_files, check_conflicts, wheel_files
from pyimage.layers.bytecode import can_compile
from pyimage.layers.paths import InstallPaths
from pyimage.layers.interpreter import Interpreter, choose_base_python, standalone_interpreter, venv_filler
from pyimage.layers.native import check_libraries, natives_checked, unscanned
from pyimage.layers.plan import LayerPlan, LayerSpec, plan_layers
from pyimage.layers.tar import TarWriter
from pyimage.layers.worker import build_in_child, worth_a_process
from pyimage.layers.ignore import DockerIgnore, database_like, read_dockerignore, secret_like
from pyimage.layers.runtime import ProjectFile, RuntimeUser, collect_files, files_filler, files_parts, runtime_filler, runtime_parts, runtime_user
from pyimage.base import BaseFacts, load_base, scan_base
from pyimage.oci.engine import Loaded
from pyimage.oci.model import Image, ImageIndex, Layer
from pyimage.outputs import written_paths
from pyimage.publish import RegistrySettings
from pyimage.resolve import hashedreqs
from pyimage.resolve.appsource import DEFAULT_WORKDIR, AppSource, app_source, entrypoint_guess, is_package, tree_entries
from pyimage.resolve.appwheel import build_app_wheel, builder_python, check_requires_python, check_wheel_fits, requires_python
from pyimage.resolve.lock import locked_python
from pyimage.resolve.lockinput import target_environment
from pyimage.resolve.pins import Ahead, choose_pins, resolve_ahead
from pyimage.resolve.pip import Pin, fetch_wheels, sdist_wheel
from pyimage.resolve.target import Target
from pyimage.resolve.workspace import LocalPackage, LocalSource, Workspace, check_buildable, collect as collect_local, find_workspace, member_dir, relative_path
from pyimage.runconfig import bytecode_notes, check_entrypoint, check_program, check_script_object, entrypoint, image_config
from pyimage.wheels import Wheel, read_metadata, read_wheel, script_source

__all__ = ["Plan", "BuildResult", "plan", "plan_platforms", "fetch", "build", "build_all", "run", "plan_only", "lock_only", "workspace_member", "unpackaged_app"]

Events = Callable[[str], None]
WHEEL_SIZE: Meta[int] = Meta("wheel-size", count)  # installed bytes of a wheel, by its sha256


def _package_lists(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict) or not all(isinstance(v, list) and all(isinstance(p, str) for p in v) for v in value.values()):
        raise TypeError("not a table of package lists")
    return {str(k): list(v) for k, v in value.items()}


# By the project's directory and the platform: what each wheel layer of its last build held
LAST_LAYERS: Meta[dict[str, list[str]]] = Meta("last-layers", _package_lists)


def _changes(before: Sequence[str] | None, after: Sequence[str]) -> str:
    """What a rebuilt layer's packages changed since the project's last build (``starlette 1.10.0 → 1.9.0, +sniffio
    1.3.1, -idna``), so a dependency bump says what moved; "" when nothing is known or nothing changed."""
    if before is None:
        return ""
    old = dict(p.partition("==")[::2] for p in before)
    new = dict(p.partition("==")[::2] for p in after)
    parts = [f"{n} {old[n]} → {v}" for n, v in new.items() if n in old and old[n] != v]
    parts += [f"+{n} {v}" for n, v in new.items() if n not in old]
    parts += [f"-{n}" for n in old if n not in new]
    return ", ".join(parts[:6]) + (f" and {len(parts) - 6} more" if len(parts) > 6 else "")


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Plan:
    """Everything decided before layer work: the base, interpreter, wheels and the plan."""

    config: Config
    cache: Cache
    base: Image
    base_source: str
    interpreter: Interpreter
    target: Target
    app: Wheel | None  # None for a project that is not a package: ``app_files`` is its app layer
    wheels: tuple[Wheel, ...]
    layer_plan: LayerPlan
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
    natives_after: tuple[Wheel, ...] = ()  # the wheels whose native-library check waits for the layer pass (``build``)
    early: dict[str, "Future[Layer]"] = field(default_factory=dict)  # layer key -> a build started during the plan

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
    prepared: Plan
    outputs: tuple[str, ...] = ()
    pushed: tuple[dict[str, Any], ...] = ()
    notes: tuple[str, ...] = field(default=())
    loaded: tuple[Loaded, ...] = ()
    index: ImageIndex | None = None  # several platforms: ``image``/``prepared`` are the first one's
    platforms: tuple[tuple[Plan, Image], ...] = ()


def _interpreter(cfg: Config, base: Image, cache: Cache) -> tuple[Interpreter, Target]:
    facts = scan_base(base, cache)
    if cfg.interpreter == "base":
        interp = choose_base_python(facts.pythons, cfg.python, cfg.base)
    else:
        interp = standalone_interpreter(cfg.interpreter, cfg.interpreter_sha256, cache, cfg.env)
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


def unpackaged_app(start: Path) -> tuple[str, list[str] | None] | None:
    """For ``pyimage init``: (a project name, a likely entrypoint or None when no file suggests one) when
    ``start`` is not a package (no ``[build-system]``, setup.py or setup.cfg; resolve/appsource.py), None when it
    builds into a wheel."""
    if is_package(start):
        return None
    source = app_source(start, ())
    return source.name, entrypoint_guess(start, source.requires, source.name)


def workspace_root_note(project: Path) -> str | None:
    """``pyimage init`` at the root of a uv workspace: a virtual root (no [project]) has nothing to image, so init
    stops and names the members to run it in; a root that is a package too gets a note naming them."""
    workspace = find_workspace(project)
    if workspace is None or workspace.root != project.resolve() or not workspace.members:
        return None
    members = ", ".join(f"{name} ({relative_path(directory, project.resolve())})" for name, directory in workspace.members)
    try:
        check_buildable(project, workspace)
    except ConfigError:
        raise ConfigError(
            f"{project} is the root of a uv workspace and has no [project] of its own to make an image of",
            f"run `pyimage init -C DIR` with the directory of the member to ship (members: {members}); its builds use this root's uv.lock",
        ) from None
    return f"this is also the root of a uv workspace (members: {members}); to make an image of a member, run `pyimage init -C DIR` with its directory, then `pyimage build --package NAME` here (or `pyimage build` there)"


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
        name, reqs, _scripts, wheel_requires_python, _extras = read_metadata(wheel)
        if canonicalize_name(name) != source.name:
            raise ConfigError(f"{source.declared} names {source.name}, but the project at {source.directory} is {name}", f"point {source.name}'s source at its own directory")
        check_requires_python(wheel_requires_python, target, f"{source.name} (its wheel's metadata)")
        return wheel, reqs

    return collect_local(requires, cfg.extras, cfg.project_dir, app_name, workspace, target_environment(target), build_one)



def _wheel_values(pins: Sequence[Pin], target: Target, cache: Cache, paths: InstallPaths, events: Events = _quiet) -> list[Wheel]:
    """``Wheel`` values for the pins. A wheel whose facts (installed size, file map) the cache already holds by
    its sha256 is neither downloaded nor read here; a layer that must be built has it fetched by ``fetch``.
    An sdist pin stands for the wheel built from it for this target (kept in the cache, or built now)."""
    pins = [_built_pin(pin, target, cache, events) if pin.is_sdist else pin for pin in pins]
    known: dict[str, Wheel] = {}
    need: list[Pin] = []
    for pin in pins:
        size = cache.get_meta(WHEEL_SIZE, pin.sha256)
        if size is not None and cached_files(pin.sha256, paths, cache) is not None:
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
            cache.put_meta(WHEEL_SIZE, wheel.installed_size, pin.sha256)
        out.append(wheel)
    return out


def _built_pin(pin: Pin, target: Target, cache: Cache, events: Events = _quiet) -> Pin:
    path, sha = sdist_wheel(pin, target, cache, events)
    return Pin(pin.name, pin.version, path.name, "", sha)


def plan(
    cfg: Config,
    cache: Cache,
    events: Events = _quiet,
    *,
    refresh_lock: bool = False,
    upgrade: bool = False,
    registry: RegistrySettings | None = None,
    remote: Callable[[str], bool] | None = None,
    defer_natives: bool = False,
    start_early: bool = False,
) -> Plan:
    """Resolves and plans; no layer is built. The app wheel lives in ``Plan.workdir`` until cleanup.
    ``remote`` (push-only builds, see ``build``) lets base blobs the push targets hold stay undownloaded.
    ``defer_natives`` (``pyimage build``): wheels never scanned for their native libraries are checked after
    the layer pass, which gathers their ELF facts from the bytes it inflates anyway (a cold torch build read
    libtorch_cpu.so's 400 MB twice); every other check, and this one for scanned wheels, is made here.
    ``start_early`` (``pyimage build``): the biggest one-wheel layer to build starts on a thread of its own as
    soon as the wheels are known (``_start_early``), while the plan reads file maps and checks conflicts."""
    files = collect_files(cfg.project_dir, cfg.files, skip=written_paths(cfg.output, cfg.project_dir))  # a bad entry is an error before any work
    package = is_package(cfg.project_dir)
    source = None if package else app_source(cfg.project_dir, cfg.extras)
    app_files = () if package else _app_tree(cfg)
    requirements = cfg.project_dir / cfg.requirements if cfg.requirements else None
    if requirements is not None and requirements.is_file() and hashedreqs.is_hashed(requirements.read_text()):
        hashedreqs.parse(requirements)  # a partly hashed or unpinned file too
    workspace = find_workspace(cfg.project_dir)
    check_buildable(cfg.project_dir, workspace)  # a virtual workspace root: name its members, before the entrypoint check
    check_entrypoint(cfg, source)
    workdir = cache.tmp_path("-appwheel")
    workdir.mkdir()
    early: dict[str, Future[Layer]] = {}
    ahead: Ahead | None = None
    python_ahead = _python_ahead(cfg) if package else None
    wheel_ahead = _WheelAhead(cfg, cache, workdir / "ahead", python_ahead) if python_ahead else None  # while the base loads
    try:
        base, base_source = load_base(cfg.base, cfg.platform, cache, cfg.compression, registry or RegistrySettings(), remote=remote)
        events(f"base: {base_source}" + (" (pin it: base = this reference)" if "@sha256:" in base_source and "@" not in cfg.base else ""))
        interp, target = _interpreter(cfg, base, cache)
        facts = scan_base(base, cache)  # a cache hit: _interpreter scanned it
        user = runtime_user(cfg.user, facts.passwd, facts.group)
        paths = InstallPaths(cfg.venv, interp.version)
        venv = "/" + cfg.venv.strip("/")
        occupied = sorted(p for p in facts.pythons if p != interp.executable and posixpath.commonpath([venv, p]) == venv)
        if occupied:  # a base that is itself a venv image (pyimage's, or a Dockerfile's): two package sets in one venv
            raise ConfigError(
                f"base {cfg.base}: it already has a Python environment at {venv} ({occupied[0]}); this image's venv would be laid over it and mix the two sets of packages",
                f'set venv to another directory (e.g. venv = "{venv.rstrip("/")}-app"), or build on the base that image was built from',
            )
        if posixpath.commonpath([venv, interp.executable]) == venv:
            raise ConfigError(f"venv = {venv!r} holds the base's interpreter {interp.executable}; the venv would replace it", 'set venv to a directory of its own, e.g. "/opt/venv"')
        check_requires_python(requires_python(cfg.project_dir), target, str(cfg.pyproject))
        app: Wheel | None = None
        scripts: list[str] = []
        app_input: Path | AppSource
        if source is not None:  # not a package: no wheel; its dependencies come from pyproject.toml
            app_name, requires, app_input = source.name, list(source.requires), source
        else:
            ahead = resolve_ahead(cfg, target, cache, refresh_lock, upgrade, workspace)
            app_path = (wheel_ahead and wheel_ahead.take(target, events)) or build_app_wheel(cfg.project_dir, workdir, cache, cfg.epoch, target, events)
            app = read_wheel(app_path)
            app_name, requires, scripts, wheel_requires_python, provided = read_metadata(app_path)
            unknown = [e for e in cfg.extras if canonicalize_name(e) not in provided]
            if unknown:  # else pip and uv resolve past it with a warning, and the image lacks what it was to add
                import difflib

                near = difflib.get_close_matches(canonicalize_name(unknown[0]), sorted(provided), n=1, cutoff=0.6)
                raise ConfigError(
                    f"extras: {app_name} has no extra {unknown[0]!r} (it has: {', '.join(sorted(provided)) or 'none'})",
                    (f"did you mean {near[0]!r}? " if near else "") + "fix [tool.pyimage] extras (or --set extras=…) to name one of [project.optional-dependencies]",
                )
            check_requires_python(wheel_requires_python, target, f"{cfg.project_dir.name} (its wheel's metadata)")
            runs = entrypoint(cfg, scripts, paths.bin)  # no or several scripts: said before resolving and building layers
            if runs and posixpath.basename(runs[0]) in scripts and runs[0] in (posixpath.basename(runs[0]), posixpath.join("/", paths.bin, posixpath.basename(runs[0]))):
                check_script_object(posixpath.basename(runs[0]), script_source(app_path, posixpath.basename(runs[0])))
            app_input = app_path
        local = _local_packages(cfg, workspace, app_name, requires, target, cache, workdir, events)
        local_wheels = [(read_wheel(p.wheel), f"built from {relative_path(p.source.directory, cfg.project_dir)} ({p.source.kind})") for p in local]
        pins = choose_pins(cfg, app_input, requires, target, cache, events, refresh_lock, upgrade, local, workspace, ahead)
        if ahead is not None:
            ahead.wait()  # not taken: its uv ends before the build goes on
        wheels = _wheel_values(pins, target, cache, paths, events)
        threshold = cfg.heavy_threshold or None
        extra = int(bool(files)) + int((user is not None and user.created) or bool(cfg.writable)) + int(bool(app_files))
        if start_early and remote is None:
            early = _start_early(wheels, app, cfg, threshold, len(base.layers) + 1 + extra, local_wheels, layer_context(cfg, cache, paths, interp))
        checked = [*wheels, *(w for w, _ in local_wheels), *([app] if app else [])]
        conflict_notes = check_conflicts(checked, paths, cache)
        program_notes = check_program(
            cfg, scripts, base, facts, interp, paths, (p for w in checked for p in wheel_files(w, paths, cache)[0]), [*files, *app_files],
            cfg.workdir or (DEFAULT_WORKDIR if source is not None else None),
        )
        natives_after: tuple[Wheel, ...] = ()
        if refresh_lock:
            pass  # `pyimage lock` pins versions; whether the base can run them is the image's question
        elif defer_natives and unscanned(checked, cache) and not natives_checked(checked, cache, facts.libraries, facts.libc, target.machine, cfg.allow_missing_libraries):
            natives_after = tuple(checked)
        else:
            placed = _fetch_pinned(unscanned(checked, cache), pins, target, cache, events)  # only wheels never scanned
            wheels, checked = [placed.get(w.sha256, w) for w in wheels], [placed.get(w.sha256, w) for w in checked]
            _check_natives(cfg, checked, cache, facts, target, base_source)
        layer_plan = plan_layers(wheels, app, cfg.heavy, threshold, cfg.max_layers, fixed_layers=len(base.layers) + 1 + extra, workspace=local_wheels)
    except BaseException as exc:
        for pending in (ahead, wheel_ahead):
            if pending is not None and not isinstance(exc, KeyboardInterrupt):
                pending.wait()  # no resolver or backend outlives the build (on Ctrl-C their temp files are left to the cache's sweep)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    notes = list(layer_plan.notes) + conflict_notes + program_notes + _dirty_version_note(app) + _files_notes([*files, *app_files], app_files) + bytecode_notes(cfg, user) + _root_settings_note(cfg, workspace)
    if cfg.compile_bytecode and not can_compile(interp.version):
        notes.append(f"compile-bytecode skipped: pyimage runs on Python {'.'.join(map(str, __import__('sys').version_info[:2]))}, the image has {interp.version}")
    return Plan(
        cfg, cache, base, base_source, interp, target, app, tuple(wheels), layer_plan, paths, tuple(notes), workdir, tuple(pins), tuple(scripts), tuple(files), user,
        tuple(w for w, _ in local_wheels), tuple(app_files), source, natives_after, early,
    )


def _python_ahead(cfg: Config) -> str | None:
    """The Python the app wheel will be built for, known before the base is loaded: the lock's, for this
    platform (what the last resolution was for), or ``python`` naming one version; None when only the base says."""
    if cfg.interpreter == "base" and cfg.python and re.fullmatch(r"\d+\.\d+", cfg.python):
        return cfg.python
    return locked_python(cfg.project_dir / cfg.lock, cfg.platform)


class _WheelAhead:
    """The app wheel, built on a thread for the Python ``_python_ahead`` expects while the base is pulled or
    ingested (a cold build's first second: compressing a rootfs on both cores, then the backend on one). Taken
    when the base's Python is that one: its progress lines said then, its error raised as the build's own;
    otherwise left, and the wheel built again for the Python there is."""

    def __init__(self, cfg: Config, cache: Cache, out: Path, python: str) -> None:
        self.python = python
        self._said: list[str] = []
        self._built: Path | None = None
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, args=(cfg, cache, out), name="pyimage-wheel-ahead", daemon=True)
        self._thread.start()

    def _run(self, cfg: Config, cache: Cache, out: Path) -> None:
        try:
            self._built = build_app_wheel(cfg.project_dir, out, cache, cfg.epoch, None, self._said.append, python_version=self.python)
        except Exception as exc:  # raised where the build would have met it, if this wheel is the one taken
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def take(self, target: Target, events: Events) -> Path | None:
        self.wait()
        if target.python != self.python:
            return None
        for line in self._said:
            events(line)
        if self._error is not None:
            raise self._error
        assert self._built is not None
        check_wheel_fits(self._built, target, builder_python(target.python)[1])
        return self._built


# A layer worth a thread of its own ahead of the rest of the plan: torch's is 700 MB of tar, numpy's 57 MB.
_EARLY_MIN = 32 << 20


def _start_early(
    wheels: Sequence[Wheel], app: Wheel | None, cfg: Config, threshold: int | None, fixed: int, workspace: Sequence[tuple[Wheel, str]], ctx: LayerContext
) -> dict[str, "Future[Layer]"]:
    """Starts the biggest one-wheel layer the cache lacks, on a thread of its own, as soon as the wheels are
    known: a cold build's long pole (torch's layer, 2.6 s here) then overlaps the rest of the plan (file maps,
    conflicts, the entrypoint check: half a second mostly on one core). Its bytes are what ``build`` would
    write (the same function, spec and context); a check that fails later still fails the build, and leaves
    only a correct layer in the cache. Several-wheel layers wait: their first part is written from the file maps
    the conflict check records. Returns {layer key: the build's future} ({} when nothing is worth it)."""
    try:
        layers = plan_layers(wheels, app, cfg.heavy, threshold, cfg.max_layers, fixed_layers=fixed, workspace=workspace).layers
    except PyimageError:
        return {}  # said where the plan makes it for good, in its order
    single = [spec for spec in layers if len(spec.wheels) == 1 and spec.wheels[0].path is not None and spec.installed_size >= _EARLY_MIN]
    if not single:
        return {}
    spec = max(single, key=lambda one: one.installed_size)
    if not wheels_to_read([spec], ctx) or not spec.wheels[0].path.is_file():  # type: ignore[union-attr]
        return {}  # held by the cache already, or its wheel is not here
    done: Future[Layer] = Future()

    def run() -> None:
        if not done.set_running_or_notify_cancel():
            return
        try:
            done.set_result(_build_apart(spec, ctx))
        except BaseException as exc:  # handed to ``build``, which raises it in its place
            done.set_exception(exc)

    # A daemon: a plan that fails after this started ends the process without waiting for the layer.
    threading.Thread(target=run, name="pyimage-early-layer", daemon=True).start()
    return {layer_key(spec, ctx): done}


def _build_apart(spec: LayerSpec, ctx: LayerContext) -> Layer:
    """``spec``'s layer, built in a process of its own when it is big enough to be worth one (``layers/worker.py``:
    a GIL of its own, so its Python work and the rest of the build's run on both cores at once)."""
    reading = wheels_to_read([spec], ctx)  # the wheels' bytes decide it, not cached fragments being joined
    if not reading or not worth_a_process(sum(w.installed_size for w in reading)):
        return build_layer(spec, ctx)
    built = build_in_child(spec, ctx)
    layer = build_layer(spec, ctx)  # read from the cache when the child built it
    return replace(layer, cached=False) if built else layer


def layer_context(cfg: Config, cache: Cache, paths: InstallPaths, interp: Interpreter, remote: Callable[[str], bool] | None = None) -> LayerContext:
    """How the layers of this build are written (and keyed): one place, so a layer started early is the one
    ``build`` asks for."""
    return LayerContext(
        cache=cache,
        paths=paths,
        owner=cfg.owner,
        epoch=cfg.epoch,
        compression=cfg.compression,
        compile_bytecode=cfg.compile_bytecode and can_compile(interp.version),
        remote=remote,
    )


def _root_settings_note(cfg: Config, workspace: Workspace | None) -> list[str]:
    """A member of a uv workspace is configured by its own [tool.pyimage] alone: when it has none and the root has
    one, say so (a new-user trial expected the root's to apply, as uv's settings do)."""
    if workspace is None or workspace.root == cfg.project_dir.resolve():
        return []
    import tomllib

    def has_section(pyproject: Path) -> bool:
        try:
            return isinstance(tomllib.loads(pyproject.read_text()).get("tool", {}).get("pyimage"), dict)
        except (OSError, ValueError, UnicodeDecodeError):
            return False

    if has_section(cfg.pyproject) or not has_section(workspace.root / "pyproject.toml"):
        return []
    return [f"{workspace.root / 'pyproject.toml'} has a [tool.pyimage] table, which a member's build does not read: copy the keys it needs into {cfg.pyproject}"]


def _check_natives(cfg: Config, wheels: Sequence[Wheel], cache: Cache, facts: BaseFacts, target: Target, base_source: str) -> None:
    """An extension needing a library the image lacks: said before the image is written, not at import in the
    container."""
    check_libraries(
        wheels, cache, base_libraries=facts.libraries, libc=facts.libc,
        machine=target.machine, allow=cfg.allow_missing_libraries, base=base_source,
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
    outputs = written_paths(cfg.output, cfg.project_dir)
    # tree_entries names each top-level path, and collect_files takes a named path as named: the project's
    # .dockerignore must drop those names here (`.env`, `node_modules`), as it drops what the walk finds below them
    ignore = read_dockerignore(cfg.project_dir)
    entries = [e for e in tree_entries(cfg.project_dir, workdir, outputs) if not _top_ignored(e["src"], cfg.project_dir, ignore)]
    files = collect_files(cfg.project_dir, entries, skip=outputs, app_tree=workdir)
    if not files:
        raise ConfigError(f"{cfg.project_dir}: the project is not a package and has no files to copy into the image", "add the app's code, or run pyimage in the app's directory")
    return files


def _top_ignored(src: str, project_dir: Path, ignore: DockerIgnore) -> bool:
    name = re.sub(r"\[(.)\]", r"\1", src)  # a top-level name with glob characters comes glob.escape()d
    path = project_dir / name
    return ignore.prunes(name) if path.is_dir() and not path.is_symlink() else ignore.excluded(name)


# setuptools-scm's "node-and-date" local version (hatch-vcs and pdm's scm source use it too): +g<hash>.d<date>
_DIRTY_VERSION = re.compile(r"\+g[0-9a-f]{6,}\.d\d{8}$")


def _dirty_version_note(app: Wheel | None) -> list[str]:
    """A version a VCS plugin made from a working tree with uncommitted changes (a new-user trial tagged a release,
    ran `pyimage init`, and got 1.4.3.dev0+g….d19800101 for the tag's 1.4.2 with no word why)."""
    if app is None or not _DIRTY_VERSION.search(app.version):
        return []
    return [f"the project's version {app.version} is a development version: its VCS plugin (setuptools-scm, hatch-vcs, …) saw uncommitted changes "
            "(`git status`); a tag's own version needs a clean checkout of the tag (the date in it is source-date-epoch's)"]


def _files_notes(files: Sequence[ProjectFile], tree: Sequence[ProjectFile] = ()) -> list[str]:
    """Notes naming files in the ``files`` layer (or a non-package app's tree) that look like secrets (anyone who
    can pull the image reads them), and in the app's tree, a local SQLite database (every container starts from it)."""
    def shown(found: list[str]) -> str:
        return ", ".join("/" + d for d in found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")

    notes = []
    secrets = secret_like(f.dest for f in files)
    if secrets:
        notes.append(f"the image holds what looks like secrets: {shown(secrets)}; anyone who can pull the image can read them "
                     "(leave them out with a .dockerignore line or the files entry's exclude, and pass secrets at run time)")
    databases = database_like(f.dest for f in tree)
    if databases:
        notes.append(f"the image holds what looks like a local database: {shown(databases)}; every container starts from this copy "
                     "(leave it out with a .dockerignore line and create it at run time, e.g. `python manage.py migrate`, or on a volume)")
    return notes


def build(prep: Plan, events: Events = _quiet, jobs: int = 2, remote: Callable[[str], bool] | None = None) -> Image:
    """Builds (or finds in the cache) every layer of the plan and assembles the image. ``remote`` (push-only
    builds) says whether the push targets hold a blob: a layer built before whose blob was pruned is then
    taken from the registry instead of being built again (``TargetBlobs``)."""
    cfg = prep.config
    ctx = layer_context(cfg, prep.cache, prep.paths, prep.interpreter, remote)
    interp = prep.interpreter
    with prep.cache.lock("cache", shared=True):
        specs = fetch(prep, wheels_to_read(prep.layer_plan.layers, ctx), events)  # the one step that downloads
        parts = {"exe": interp.executable, "version": interp.version, "source": interp.source_id}
        interp_layer = build_custom_layer("interpreter", parts, venv_filler(interp, prep.paths), ctx)
        # Biggest first so the long pole starts at once; results keep the plan's order.
        order = sorted(range(len(specs)), key=lambda i: -specs[i].installed_size)
        built: dict[int, Layer] = {}
        last_key = (str(cfg.project_dir.resolve()), str(prep.target.platform))
        last = prep.cache.get_meta(LAST_LAYERS, *last_key) or {}
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(_layer_of, specs[i], ctx, prep.early, jobs > 1 and remote is None): i for i in order}
            for future in as_completed(futures):  # reported as each finishes, so a long torch layer is not silent
                i = futures[future]
                built[i] = future.result()
                changed = "" if built[i].cached else _changes(last.get(built[i].name), built[i].packages)
                events(f"layer {built[i].name}: {_status(built[i])} {built[i].digest[:19]}" + (f" ({changed})" if changed else ""))
        now = {layer.name: list(layer.packages) for layer in built.values()}
        if now != last:
            prep.cache.put_meta(LAST_LAYERS, now, *last_key)
        extra: list[Layer] = []
        if prep.app_files:  # a project that is not a package: its tree, keyed by every file's path, mode and sha256
            extra.append(build_custom_layer("app", _app_tree_parts(prep.app_files, ctx), _app_tree_filler(prep.app_files, ctx), ctx))
        if prep.has_runtime_layer:
            extra.append(build_custom_layer("runtime", runtime_parts(prep.user, cfg.writable), runtime_filler(prep.user, cfg.writable), ctx))
        if prep.files:
            extra.append(build_custom_layer("files", files_parts(prep.files), files_filler(prep.files), ctx))
        for layer in extra:
            events(f"layer {layer.name}: {_status(layer)} {layer.digest[:19]}")
        if prep.natives_after:  # deferred by plan: the layer pass recorded the facts of every wheel it read
            placed = _fetch_pinned(unscanned(prep.natives_after, prep.cache), prep.pins, prep.target, prep.cache, events)
            _check_natives(cfg, [placed.get(w.sha256, w) for w in prep.natives_after], prep.cache, scan_base(prep.base, prep.cache), prep.target, prep.base_source)
    layers = [*prep.base.layers, interp_layer, *(built[i] for i in range(len(specs))), *extra]
    return Image(config=image_config(cfg, prep.base, prep.paths, prep.console_scripts, prep.user, prep.workdir_in_image, layers), layers=tuple(layers), annotations=dict(cfg.annotations))


def _app_tree_parts(files: Sequence[ProjectFile], ctx: LayerContext) -> dict[str, Any]:
    parts: dict[str, Any] = {"tree": files_parts(files)}
    if ctx.compile_bytecode:
        parts["pyc"] = 1  # the tree's modules compiled too (an older cache's layer under this key had none)
    return parts


def _app_tree_filler(files: Sequence[ProjectFile], ctx: LayerContext) -> Callable[[TarWriter], None]:
    """The project's tree (an app that is not a package) at its workdir and, with ``compile-bytecode``, its
    modules' ``__pycache__`` as the wheels get them: /app is root's, so a non-root user's Python could never write
    them and compiled every module at each start."""
    fill = files_filler(files)

    def filler(tw: TarWriter) -> None:
        fill(tw)
        if ctx.compile_bytecode:
            from pyimage.layers.bytecode import compile_captured

            compile_captured(tw, ctx.paths)

    return filler


def _layer_of(spec: LayerSpec, ctx: LayerContext, early: dict[str, "Future[Layer]"], apart: bool) -> Layer:
    """``spec``'s layer: the build the plan started for it, or one made now (``apart``: a big one in a process of
    its own)."""
    started = early.get(layer_key(spec, ctx)) if early else None
    if started is not None:
        return started.result()
    return _build_apart(spec, ctx) if apart else build_layer(spec, ctx)


def _status(layer: Layer) -> str:
    return "in registry" if layer.remote else "cached" if layer.cached else "built"


def fetch(prep: Plan, wheels: Sequence[Wheel], events: Events = _quiet) -> list[LayerSpec]:
    """The plan's layer specs with ``wheels`` (what ``wheels_to_read`` says the layer stage will open) given
    their files: those not in the cache are downloaded here, in one batch; nothing else is."""
    placed = _fetch_pinned(wheels, prep.pins, prep.target, prep.cache, events)
    return [replace(spec, wheels=tuple(placed.get(w.sha256, w) for w in spec.wheels)) for spec in prep.layer_plan.layers]


def _fetch_pinned(wheels: Sequence[Wheel], pins: Sequence[Pin], target: Target, cache: Cache, events: Events) -> dict[str, Wheel]:
    """``wheels`` without a file here downloaded by their pins in one batch, by sha256 (the app's and local
    packages' wheels are built into the plan's workdir and always have one)."""
    missing = [w for w in wheels if w.path is None or not w.path.is_file()]
    if not missing:
        return {}
    by_name = {pin.name: pin for pin in pins}
    unknown = [w.filename for w in missing if w.name not in by_name]
    if unknown:
        raise BuildError(f"internal error: {', '.join(unknown)} has no file and no pin to fetch it by", "this is a bug in pyimage; run again with --debug and report it")
    events(f"fetching {len(missing)} wheel(s)")
    got = fetch_wheels([by_name[w.name] for w in missing], target, cache)
    return {w.sha256: replace(w, path=got[w.name]) for w in missing}


def plan_platforms(
    cfg: Config, cache: Cache, events: Events = _quiet, *, registry: RegistrySettings | None = None, remote: Callable[[str], bool] | None = None,
    building: bool = False,
    early: bool = True,
) -> list[Plan]:
    """``plan`` for each target platform (per-platform tables resolved), every decision made before any
    layer work; progress lines name the platform when there are several. ``building``: for ``pyimage build``
    (``plan``'s ``defer_natives``, and ``start_early`` unless ``early`` is off: ``--jobs 1`` builds one layer at a time)."""
    preps: list[Plan] = []
    try:
        for platform in cfg.platforms:
            say = events if len(cfg.platforms) == 1 else (lambda line, p=platform: events(f"{p}: {line}"))
            preps.append(plan(cfg.for_platform(platform), cache, say, registry=registry, remote=remote, defer_natives=building, start_early=building and early))
    except BaseException:
        for prep in preps:
            prep.cleanup()
        raise
    return preps


def build_all(preps: Sequence[Plan], events: Events = _quiet, jobs: int = 2, remote: Callable[[str], bool] | None = None) -> tuple[Image, ...]:
    """Each platform's image; layers that are the same for several platforms (pure-Python wheels) are built
    once and found in the cache by the others."""
    if len(preps) == 1:
        return (build(preps[0], events, jobs=jobs, remote=remote),)

    def named(platform: object) -> Events:
        return lambda line: events(f"{platform}: {line}")

    return tuple(build(prep, named(prep.target.platform), jobs=jobs, remote=remote) for prep in preps)


def lock_only(cfg: Config, cache: Cache, events: Events = _quiet, upgrade: bool = False) -> Plan:
    """``pyimage lock``: resolves again and rewrites the lock (without ``upgrade`` the locked versions are kept
    where they fit), under the shared cache lock; the plan's scratch directory is gone when this returns."""
    with cache.lock("cache", shared=True):  # a `cache prune` waits, as for a build
        done = plan(cfg, cache, events, refresh_lock=True, upgrade=upgrade)
        done.cleanup()
    return done


def plan_only(cfg: Config, cache: Cache, events: Events = _quiet) -> list[Plan]:
    """``pyimage plan``: every platform planned under the shared cache lock, no layer built; the plans' scratch
    directories are gone when this returns (what they hold is for ``build``)."""
    with cache.lock("cache", shared=True):  # a `cache prune` waits, as for a build
        plans = plan_platforms(cfg, cache, events)
        for one in plans:
            one.cleanup()
    return plans


def run(
    cfg: Config,
    cache_root: Path,
    events: Events = _quiet,
    *,
    tags: Sequence[str] = (),
    push: Sequence[str] = (),
    registry: RegistrySettings | None = None,
    jobs: int = 2,
    written: Callable[[str], None] = lambda _w: None,
) -> BuildResult:
    """``pyimage build``: the outputs chosen and checked (the config's, else the default layout unless the build
    only pushes) before the cache at ``cache_root`` is opened, then plan, fetch, layers and every output, all
    under one shared cache lock (``cache prune`` waits for the whole build); the plan's scratch directories are
    removed however it ends. ``written`` hears each output as soon as it is complete (a progress line says so too),
    so a caller interrupted later can say which outputs were kept."""
    from pyimage.oci.model import ImageIndex
    from pyimage.outputs import Naming, RegistryOutput, check_outputs, default_output, parse_output, write_outputs
    from pyimage.publish import push_targets

    registry = registry or RegistrySettings()
    chosen = list(cfg.output) or ([] if push or cfg.repository else [parse_output(default_output(cfg.project_dir), cfg.project_dir)])
    outputs = list(check_outputs(chosen, len(cfg.platforms)))  # every output checked before any work
    if push or cfg.repository:
        outputs.append(RegistryOutput("--push", tuple(push), cfg.repository, cfg.tags, registry, events))
    cache = Cache(cache_root)
    remote = None
    if not chosen and push_targets(list(push), cfg.repository):
        from pyimage.publish import TargetBlobs  # push-only: layers the targets hold need no blob here

        remote = TargetBlobs(push_targets(list(push), cfg.repository), registry, cache)
    with cache.lock("cache", shared=True):  # the whole build: `cache prune` waits instead of pulling files from under it
        cache.sweep()
        preps = plan_platforms(cfg, cache, events, registry=registry, remote=remote, building=True, early=jobs > 1)
        try:
            images = build_all(preps, events, jobs=jobs, remote=remote)
            index = ImageIndex(images, dict(cfg.annotations)) if len(images) > 1 else None
            def done(what: str) -> None:
                written(what)  # first: once the line is shown, an interrupt names it as kept
                events(f"output written: {what}")

            result = write_outputs(index or images[0], outputs, Naming(preps[0].name, preps[0].version, cache, tuple(tags)), done)
        finally:
            if remote is not None:
                remote.close()
            for one in preps:
                one.cleanup()
    notes = tuple(dict.fromkeys(note for one in preps for note in one.notes))
    return BuildResult(images[0], preps[0], result.outputs, result.pushed, notes, result.loaded, index, tuple(zip(preps, images)) if index else ())
