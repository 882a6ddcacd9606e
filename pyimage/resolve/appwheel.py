"""The project's own wheel, built with pypa/build in a build environment that is made once and reused.

A fresh isolated environment per build costs seconds (pip installing the backend each time); a code change
must cost well under one. One environment per ``build-system.requires`` and interpreter lives in the cache,
is marked ready only after its requirements installed, and is rebuilt if that mark is missing.

The interpreter is one of the target's minor version when this machine has one (``interpreters.find_python``),
so compiled extensions get the image's ABI. The wheel is reused only while its inputs are provably the same:
the content of every source file, the backend and its requirements, the interpreter, and for VCS-derived
versions the checked-out commit and the repository's tags (``vcs.vcs_state``). Files the backend itself writes
(a ``version-file``) are not inputs, and what setuptools leaves behind (``build/``, ``*.egg-info``) is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import venv
from pathlib import Path
from typing import Any, Callable, Iterable

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import parse_wheel_filename

import pyimage.tools as tools
from pyimage.cache import Cache
from pyimage.errors import BuildError, ConfigError
from pyimage.hashing import file_digest, hex_of
from pyimage.resolve.interpreters import find_python, host_version
from pyimage.resolve.target import Target
from pyimage.resolve import wheelpatch
from pyimage.resolve.vcs import maybe_tracked, vcs_state
from pyimage.resolve.wheelpatch import Source

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "build_app_wheel",
    "builder_python",
    "build_requires",
    "source_fingerprint",
    "backend_written_files",
    "check_requires_python",
    "check_wheel_fits",
    "project_table",
    "requires_python",
]

_DEFAULT_SYSTEM = {"requires": ["setuptools>=40.8.0"], "build-backend": "setuptools.build_meta:__legacy__"}
_ZIP_EPOCH = 315532800  # 1980-01-01T00:00:00Z, the earliest time a ZIP entry can carry
_FINGERPRINT_FORMAT = 2  # bump when what the fingerprint covers changes


def _pyproject(project_dir: Path) -> dict[str, Any]:
    path = project_dir / "pyproject.toml"
    if not path.is_file():
        return {}
    text = path.read_text()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        from pyimage.config import toml_error

        raise toml_error(path, text, exc) from None


def build_requires(project_dir: Path) -> tuple[list[str], str]:
    system = _pyproject(project_dir).get("build-system") or _DEFAULT_SYSTEM
    return sorted(system.get("requires", [])), str(system.get("build-backend", _DEFAULT_SYSTEM["build-backend"]))


def _install(env_python: Path, requirements: list[str]) -> None:
    """Installs the build requirements into the environment: with uv when it can take pip's configuration
    (resolve/uv.py; ~0.3 s against pip's 2–4 s for hatchling), else with pip."""
    if not requirements:
        return
    from pyimage.resolve.uv import pip_settings_for_uv, uv_binary

    uv = uv_binary()
    flags, uv_env, why_not = pip_settings_for_uv() if uv else ([], {}, "no uv")
    doing, hint = f"installing the build requirements {requirements}", "check [build-system] requires and your index settings"
    if uv and not why_not:
        proc = tools.run(
            # byte-compiled once here, as pip does by default: the backend starts every build of the app's wheel, and
            # without .pyc files (uv writes none by default; PYTHONDONTWRITEBYTECODE stops Python writing them) each
            # start compiles hatchling's ~30 modules again (+0.12 s on every one-line change)
            [uv, "pip", "install", "--quiet", "--no-config", "--compile-bytecode", "--python", str(env_python), "--index-strategy", "unsafe-best-match", *flags, *requirements],
            tool="uv",
            doing=doing,
            env=uv_env,
        )
        if proc.ok:
            return
        said = [l.strip().removeprefix("cause:").strip() for l in proc.stderr.splitlines() if l.strip() and not l.strip().startswith(("hint:", "help:"))]
        raise proc.error(hint, said=said[-1] if said else None)  # uv's innermost cause is its last line
    proc = tools.run([sys.executable, "-m", "pip", "--python", str(env_python), "install", "--quiet", *requirements], tool="pip", doing=doing)
    if not proc.ok:
        raise proc.error(hint)


def unmet(env_python: Path, requirements: Iterable[str]) -> list[str]:
    """The requirements the build environment of ``env_python`` does not satisfy, judged by what is installed in
    *that* environment (its site-packages' dist-info) and its Python version. (pypa/build's
    ``check_dependencies`` judges by the environment it runs in, pyimage's own: a backend's dynamic requirement
    pyimage happened to have was never installed for the backend, and one it lacked, such as the backend itself,
    was installed again at every change of pyproject.toml.)"""
    import importlib.metadata

    from packaging.markers import default_environment
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    lib = env_python.parent.parent / "lib"
    sites = sorted(str(p) for p in lib.glob("python3.*/site-packages")) if lib.is_dir() else []
    installed = {canonicalize_name(d.metadata["Name"] or ""): d.version for d in importlib.metadata.distributions(path=sites)}
    marker_env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    if len(sites) == 1:  # the environment's own Python version, for markers such as python_version < "3.12"
        version = Path(sites[0]).parent.name.removeprefix("python")
        if version != marker_env["python_version"]:
            marker_env["python_version"], marker_env["python_full_version"] = version, f"{version}.0"
    out = []
    for text in sorted(set(requirements)):
        try:
            req = Requirement(text)
        except InvalidRequirement:
            out.append(text)  # the installer says what is wrong with it
            continue
        if req.marker is not None and not req.marker.evaluate(dict(marker_env)):
            continue
        have = installed.get(canonicalize_name(req.name))
        if have is None or (req.specifier and not req.specifier.contains(have, prereleases=True)):
            out.append(text)
    return out


_CLEAR_TRIES = 40  # 0.25 s apart: ten seconds for a killed build's installer to finish


def _clear(env_dir: Path) -> None:
    """Removes an environment that was never finished. A build killed while making it (SIGKILL: a CI job's
    timeout) leaves its installer running, still writing into it, and a removal racing those writes fails with
    "Directory not empty": it is tried again while the installer finishes, then said as what it is."""
    import errno
    import time

    for _ in range(_CLEAR_TRIES):
        try:
            shutil.rmtree(env_dir)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            time.sleep(0.25)
    raise BuildError(
        f"the build environment {env_dir} is still being written by another process (the installer of a build that was killed?)",
        f"wait for it to finish and build again, or stop it and remove {env_dir}",
    )


def _env(cache: Cache, requires: list[str], python: str) -> Path:
    """A venv of ``python`` holding ``requires``, made once per (interpreter, requirements)."""
    key = hashlib.sha256(json.dumps([sys.version if python == sys.executable else python, requires]).encode()).hexdigest()[:24]
    env_dir = cache.build_env_dir(key)
    env_python = env_dir / "bin" / "python"
    ready = env_dir / ".pyimage-ready"
    with cache.lock(f"env-{key}"):
        cache.touch(env_dir)
        if not (ready.exists() and env_python.exists()):
            _clear(env_dir)
            if python == sys.executable:
                venv.create(env_dir, with_pip=False, symlinks=True)
            else:
                made = tools.run([python, "-m", "venv", "--without-pip", str(env_dir)], tool=python, doing="making the build environment")
                if not made.ok:
                    raise made.error("check that this interpreter has the venv module")
            _install(env_python, requires)
            ready.write_text(json.dumps([python, requires]))
    return env_python


# Directories that are never sources: VCS data, caches, tool state. Anywhere in the tree.
_SKIP_ANYWHERE = {".git", ".hg", ".svn", "__pycache__", ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".cache", "node_modules", ".venv", ".pdm-build"}
# Output directories, only at the project's top (a package may well be called ``build``).
_SKIP_TOP = {"dist", "build", "venv"}
# Lock files at the top: what a resolver pinned, never what a backend builds from
_LOCK_FILES = frozenset({"uv.lock", "poetry.lock", "pdm.lock", "Pipfile.lock"})


def backend_written_files(project_dir: Path) -> set[str]:
    """Paths (relative, posix) that the build backend writes into the tree as declared in pyproject.toml:
    setuptools-scm's ``version_file``/``write_to``, hatch-vcs' ``version-file``, pdm-backend's ``write_to``."""
    data = _pyproject(project_dir)
    tool = data.get("tool") or {}
    out: set[str] = set()

    def add(value: object, *roots: str) -> None:
        if isinstance(value, str) and value:
            for root in roots or (".",):
                out.add(os.path.normpath(os.path.join(root, value)).replace(os.sep, "/"))

    scm = tool.get("setuptools_scm") or {}
    if isinstance(scm, dict):
        root = scm.get("root", ".") if isinstance(scm.get("root", "."), str) else "."
        for key in ("version_file", "write_to"):
            add(scm.get(key), ".", root)
    hatch = tool.get("hatch") or {}
    if isinstance(hatch, dict):
        build = hatch.get("build") or {}
        hooks = [build.get("hooks") or {}]
        hooks += [(target or {}).get("hooks") or {} for target in (build.get("targets") or {}).values() if isinstance(target, dict)]
        for hook in hooks:
            if isinstance(hook, dict) and isinstance(hook.get("vcs"), dict):
                add(hook["vcs"].get("version-file"))
    pdm_version = ((tool.get("pdm") or {}).get("version") or {}) if isinstance(tool.get("pdm"), dict) else {}
    if isinstance(pdm_version, dict):
        add(pdm_version.get("write_to"), ".", "src")
    return out


def _tree_files(project_dir: Path) -> Iterable[tuple[str, os.DirEntry[str]]]:
    stack: list[tuple[Path, str]] = [(project_dir, "")]
    while stack:
        here, rel = stack.pop()
        with os.scandir(here) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                path = f"{rel}{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    if entry.name in _SKIP_ANYWHERE or entry.name.endswith(".egg-info"):
                        continue
                    if not rel and entry.name in _SKIP_TOP and not os.path.exists(os.path.join(entry.path, "__init__.py")):
                        continue
                    if os.path.exists(os.path.join(entry.path, "pyvenv.cfg")):
                        continue  # a virtual environment
                    if os.path.exists(os.path.join(entry.path, "oci-layout")):
                        continue  # an image pyimage (or skopeo) wrote, e.g. `-o oci:out`: an output, not a source
                    stack.append((Path(entry.path), path + "/"))
                else:
                    yield path, entry


def scan_sources(project_dir: Path) -> list[Source]:
    """Every file the build backend could read, in a stable order: regular files with their sha256, symlinks with
    their target. Files the backend declares it writes are left out; so are the lock files at the top (pyimage's
    own, an output of the build, and the team's ``uv.lock``, ``poetry.lock``, …: resolver state that no backend
    puts in a wheel, so a lock-only change does not start the backend), unless the version may come from the
    repository and git tracks them: a modified one is part of its dirty state (``_version_from_vcs``)."""
    written = backend_written_files(project_dir)
    entries = list(_tree_files(project_dir))
    locks = [rel for rel, _entry in entries if rel in _LOCK_FILES or ("/" not in rel and rel.startswith("pylock.") and rel.endswith(".toml"))]
    skipped = written | (set(locks) - set(maybe_tracked(project_dir, locks) if locks and _version_from_vcs(project_dir) else ()))
    found: list[Source] = []
    for rel, entry in entries:
        if rel in skipped:
            continue
        if entry.is_symlink():
            found.append(Source(rel, False, link=os.readlink(entry.path)))
        elif entry.is_file():
            found.append(Source(rel, entry.stat().st_mode & 0o111 != 0, hex_of(file_digest(entry.path))))
    return found


def _version_from_vcs(project_dir: Path) -> bool:
    """Whether the version may come from the repository's state (a dynamic version, or a setup.py project, inside a
    git or Mercurial work tree): setuptools-scm and hatch-vcs then call the tree dirty for a modified lock file too,
    so lock files are sources of the wheel, or the same checkout would get another version from a warm cache than
    from a cold one (a new-user trial)."""
    project = _pyproject(project_dir).get("project")
    dynamic = project.get("dynamic") if isinstance(project, dict) else None
    maybe = not isinstance(project, dict) or (isinstance(dynamic, list) and "version" in dynamic)
    return maybe and vcs_state(project_dir) is not None


def _fingerprint(sources: Iterable[Source], head: object) -> str:
    h = hashlib.sha256(json.dumps(head, sort_keys=True, default=str).encode())
    for s in sources:
        if s.link is not None:
            h.update(f"{s.rel}\0link\0{s.link}\n".encode("utf-8", "surrogateescape"))  # any file name, UTF-8 or not
        else:
            h.update(f"{s.rel}\0{s.executable}\0{s.digest}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def source_fingerprint(project_dir: Path, extra: object) -> str:
    """A hash of the content of every file the build backend could read, the VCS state, and ``extra``.

    Contents, not mtimes: a file rewritten with the same bytes (a ``version-file``, ``git checkout``) changes
    nothing, an edit within the same second does. Files the backend declares it writes are left out; so is
    pyimage's own lock file, an output of the build.
    """
    return _fingerprint(scan_sources(project_dir), [_FINGERPRINT_FORMAT, extra, vcs_state(project_dir)])


def project_table(project_dir: Path) -> dict[str, Any]:
    """pyproject.toml's ``[project]`` table, empty when there is none (a setup.py project)."""
    project = _pyproject(project_dir).get("project")
    return project if isinstance(project, dict) else {}


def requires_python(project_dir: Path) -> str | None:
    """``[project] requires-python`` when pyproject.toml states it (not dynamic)."""
    value = project_table(project_dir).get("requires-python")
    return value if isinstance(value, str) else None


def check_requires_python(spec: str | None, target: Target, where: str) -> None:
    """Refuses a project whose Requires-Python excludes the target's Python (any patch release of it)."""
    if not spec:
        return
    try:
        specifier = SpecifierSet(spec)
    except InvalidSpecifier as exc:
        raise ConfigError(f"{where}: requires-python {spec!r} is not a valid specifier ({exc})", "use a PEP 440 specifier such as \">=3.10\"") from exc
    if not any(specifier.contains(f"{target.python}.{patch}", prereleases=True) for patch in range(0, 40)):
        raise ConfigError(
            f"{where} requires Python {spec}, but the target is Python {target.python} (the base's interpreter, {target.describe()})",
            f"use a base with a Python that satisfies {spec} (or set python = \"X.Y\"), or relax requires-python",
        )


def check_wheel_fits(wheel: Path, target: Target, built_with: str) -> None:
    """Refuses an app wheel whose tags cannot run on the target (another CPython ABI, architecture or libc).

    ``built_with`` is the "X.Y" of the interpreter that built it, named in the error.
    """
    _name, _version, _build, tags = parse_wheel_filename(wheel.name)
    platforms = set(target.platform_tags()) | {"any"}
    nodot = target.python.replace(".", "")
    minor = int(target.python.split(".")[1])

    def fits(tag: Any) -> bool:
        interp_ok = tag.interpreter in (f"cp{nodot}", f"py{nodot}", "py3", f"py{nodot[0]}") or (
            tag.abi == "abi3" and tag.interpreter.startswith("cp3") and tag.interpreter[3:].isdigit() and int(tag.interpreter[3:]) <= minor
        )
        abi_ok = tag.abi in (f"cp{nodot}", "abi3", "none")
        return interp_ok and abi_ok and tag.platform in platforms

    if any(fits(tag) for tag in tags):
        if target.libc == "musl" and any(t.platform.startswith("linux_") for t in tags):
            raise BuildError(
                f"the project's wheel {wheel.name} has compiled code built here against this machine's glibc, but the base uses musl ({target.describe()})",
                "build on a musl machine (or a base with glibc), or make the project pure Python",
            )
        return
    tag_text = wheel.name[: -len(".whl")].split("-", 2)[-1]
    if built_with != target.python:
        raise BuildError(
            f"the project's wheel is for {tag_text} (built with this machine's Python {built_with}), but the image has Python {target.python}, and no Python {target.python} was found here",
            f"install Python {target.python} (pyenv install {target.python}, uv python install {target.python}, or python{target.python} from your distribution) so pyimage can build with it",
        )
    raise BuildError(
        f"the project's wheel is for {tag_text}, which does not run on {target.describe()}",
        "build for the target's architecture and libc (pick a base that matches this machine, or set platform)",
    )


def _debris(project_dir: Path) -> set[Path]:
    """What setuptools leaves in a tree: ``build/`` and ``*.egg-info`` (at the top or one level down, ``src/``)."""
    found = {p for p in (project_dir / "build",) if p.is_dir()}
    found |= set(project_dir.glob("*.egg-info")) | set(project_dir.glob("*/*.egg-info"))
    return found


def builder_python(wanted: str) -> tuple[str, str]:
    """The interpreter that builds the app wheel for a target of Python ``wanted`` (one of that version here,
    else this one) and the version it is."""
    python = find_python(wanted) or sys.executable
    return python, wanted if python != sys.executable or wanted == host_version() else host_version()


def build_app_wheel(
    project_dir: Path,
    out_dir: Path,
    cache: Cache,
    epoch: int,
    target: Target | None = None,
    events: Callable[[str], None] = lambda _: None,
    label: str = "the project's wheel",
    python_version: str | None = None,
) -> Path:
    """The project's wheel in ``out_dir`` (built with SOURCE_DATE_EPOCH=``epoch``); returns its path.

    Built with a Python of ``target``'s version when there is one here, else with this one (fine for a pure
    wheel; a compiled one is refused, naming both versions). With no ``target``, ``python_version`` chooses the
    interpreter and the caller checks the wheel against its target (``check_wheel_fits``). A wheel built from the same inputs (same
    fingerprint) is taken from the cache instead of running the backend: a no-change rebuild starts no
    subprocess at all.
    """
    requires, backend = build_requires(project_dir)
    python, built_with = builder_python(target.python if target is not None else python_version or host_version())
    sources = scan_sources(project_dir)
    head = [_FINGERPRINT_FORMAT, [requires, backend, epoch, python, built_with, sys.version if python == sys.executable else ""], vcs_state(project_dir)]
    fingerprint = _fingerprint(sources, head)
    kept = cache.app_wheel_dir(fingerprint)
    out_dir.mkdir(parents=True, exist_ok=True)
    for wheel in kept.glob("*.whl") if kept.is_dir() else ():
        events(f"{label}: reused (its sources are unchanged)")
        cache.touch(kept)
        dest = out_dir / wheel.name
        shutil.copyfile(wheel, dest)
        if target is not None:
            check_wheel_fits(dest, target, built_with)
        return dest
    copies = wheelpatch.patchable(_pyproject(project_dir), backend, project_dir, backend_written_files(project_dir))
    shape = wheelpatch.shape(sources, head) if copies else ""
    pyproject = project_dir / "pyproject.toml"
    text = pyproject.read_text(errors="replace") if copies and pyproject.is_file() else ""
    globs = wheelpatch.license_globs(_pyproject(project_dir)) if copies else []
    patched = wheelpatch.patch(cache, shape, project_dir, sources, out_dir, text, globs) if copies else None
    if patched is not None:
        built, count = patched
        events(f"{label}: {count} changed file(s) copied into its last build (the backend copies them as they are)")
    else:
        events(f"building {label}")
        before = _debris(project_dir)
        try:
            built = _build(project_dir, out_dir, cache, epoch, requires, python, label)
        finally:
            for path in _debris(project_dir) - before:
                shutil.rmtree(path, ignore_errors=True)
    if target is not None:
        check_wheel_fits(built, target, built_with)
    staging = cache.tmp_path("-appwheel")
    staging.mkdir()
    shutil.copyfile(built, staging / built.name)
    kept.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, kept)
    except OSError:  # another build of the same sources got there first
        shutil.rmtree(staging, ignore_errors=True)
    if copies:
        wheelpatch.remember(cache, shape, fingerprint, sources, built)
    return built


def _build(project_dir: Path, out_dir: Path, cache: Cache, epoch: int, requires: list[str], python: str, label: str = "the project's wheel") -> Path:
    from build import BuildBackendException, ProjectBuilder

    env_python = _env(cache, requires, python)

    def runner(cmd, cwd=None, extra_environ=None):  # type: ignore[no-untyped-def]
        # The build environment's bin first on PATH, as pypa/build's own isolated builds do: backends call tools
        # installed beside them (uv_build runs its `uv-build` binary, meson-python `ninja`).
        path = os.pathsep.join([str(env_python.parent), os.environ.get("PATH", os.defpath)])
        # ZIP cannot hold times before 1980 (some backends on older Pythons fail on SOURCE_DATE_EPOCH=0); the wheel's
        # own timestamps never reach the image, whose files carry the epoch, so the backend gets 1980 at the earliest.
        env = dict(SOURCE_DATE_EPOCH=str(max(epoch, _ZIP_EPOCH)), PATH=path, **(extra_environ or {}))
        proc = tools.run(cmd, tool="the build backend", doing=f"building {label}", cwd=cwd, env=env, missing_hint="the build environment's Python is gone: build again to remake it")
        if not proc.ok:
            raise backend_failure(proc.output, label=label)

    builder = ProjectBuilder(project_dir, python_executable=str(env_python), runner=runner)
    # The backend's dynamic build requirements are asked once per environment and build configuration, not per build.
    checked = env_python.parent.parent / f".deps-{_requires_stamp(project_dir / 'pyproject.toml')}"
    try:
        if not checked.exists():
            missing = unmet(env_python, builder.get_requires_for_build("wheel"))
            if missing:
                _install(env_python, missing)
            checked.touch()
        return Path(builder.build("wheel", out_dir))
    except BuildBackendException as exc:
        inner = getattr(exc, "exception", None)
        raise (inner if isinstance(inner, BuildError) else backend_failure(str(exc), label=label)) from None


def _requires_stamp(pyproject: Path) -> str:
    """What a backend's dynamic build requirements (``get_requires_for_build_wheel``) can depend on: pyproject.toml
    without its ``[project]`` table, which names no build requirement (a renamed project, a bumped dependency, a
    new version ask the backend nothing new: 0.27 s of hatchling here), unless hatch is told to put the runtime
    dependencies into its build environment (``require-runtime-dependencies``/``-features``)."""
    raw = pyproject.read_bytes() if pyproject.is_file() else b""
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "1-" + hashlib.sha256(raw).hexdigest()[:16]
    if b"require-runtime-" not in raw:
        data.pop("project", None)
    return "1-" + hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def backend_failure(output: str, keep: int = 10, label: str = "the project's wheel") -> BuildError:
    """The backend's own words, without Python traceback frames. The error line is the exception a traceback ends
    with (``ValueError: …``; a message of several lines goes on below it and is shown as context), else what the
    backend printed last; the lines around it are shown above as context."""
    lines: list[str] = []
    in_traceback = False
    raised = -1  # index in ``lines`` of the line that ends the last traceback: the exception
    for line in output.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            in_traceback = True
            continue
        if in_traceback and (line.startswith(" ") or not line.strip()):
            continue  # a frame ("  File …", its source line) of the traceback
        if in_traceback and line.strip():
            raised = len(lines)
        in_traceback = False
        if line.strip():
            lines.append(line.rstrip())
    if raised < 0:
        raised = len(lines) - 1
    last = lines[raised].strip() if lines else "the build backend failed without a message"
    context = [*lines[:raised], *lines[raised + 1 :]] if lines else []
    return BuildError(
        f"building {label} failed: {last[:300]}",
        "fix the error above in the project, or run `python -m build --wheel` there to see the full output",
        tuple(l[:300] for l in context[-keep:]),
    )
