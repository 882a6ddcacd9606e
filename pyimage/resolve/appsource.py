"""A project that is not a package: the usual Docker layout (``manage.py``, ``mysite/``, ``templates/``,
``requirements.txt``) or what ``uv init --app`` writes. There is no wheel to build; the image gets the project's
source tree (as ``COPY . /app`` does) and its dependencies from ``[project].dependencies`` (or the lock, or the
``requirements`` file).

What counts as "not a package" follows uv, the tool most such projects come from: no ``[build-system]`` table
and no ``setup.py``/``setup.cfg`` (uv calls it virtual and never builds it), or ``[tool.uv] package = false``;
``package = true`` there makes it a package again (built by setuptools' legacy backend, as uv and pip do).

Everything here reads pyproject.toml and names in the project directory only; no file content is executed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Sequence

from packaging.utils import canonicalize_name

from pyimage.errors import ConfigError
from pyimage.resolve.appwheel import _pyproject

__all__ = ["AppSource", "is_package", "app_source", "static_requires", "entrypoint_guess", "DEFAULT_WORKDIR", "tree_entries"]

DEFAULT_WORKDIR = "/app"  # where Dockerfiles of such apps put them (`WORKDIR /app`, `COPY . /app`)

# Never part of an app's image: VCS data, virtual environments, tool caches, and what pyimage itself writes into
# the project (its default output under dist/, its lock). Top-level directories are left out whole (so a .venv's
# symlinks to the host's Python are never even looked at); the patterns apply inside every other directory.
_SKIP_TOP = frozenset({".git", ".hg", ".svn", ".venv", ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", "__pycache__", "dist"})
_SKIP_FILES = ("pylock.pyimage.toml",)
TREE_EXCLUDES = ("*__pycache__/*", "*.pyc", "*/.git/*")


@dataclass(frozen=True)
class AppSource:
    """What a project that is not a package contributes: its name and version (image naming, the lock) and its
    dependencies as requirement lines, the selected extras' included (with no wheel, there is no ``extra``
    marker to evaluate later)."""

    name: str
    version: str
    requires: tuple[str, ...]


def _tool_table(data: dict[str, Any], *path: str) -> dict[str, Any]:
    for part in path:
        data = data.get(part) if isinstance(data, dict) else None  # type: ignore[assignment]
    return data if isinstance(data, dict) else {}


def is_package(project_dir: Path) -> bool:
    """Whether the project builds into a wheel (see the module docstring for the rule)."""
    data = _pyproject(project_dir)
    declared = _tool_table(data, "tool", "uv").get("package")
    if isinstance(declared, bool):
        return declared
    if any((project_dir / name).is_file() for name in ("setup.py", "setup.cfg")):
        return True
    return isinstance(data.get("build-system"), dict)


def _name(project: dict[str, Any], project_dir: Path) -> str:
    name = project.get("name")
    if isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", name):
        return canonicalize_name(name)
    return directory_name(project_dir)


def directory_name(project_dir: Path) -> str:
    """A valid project name from the directory's name (``My Site`` -> ``my-site``; ``app`` when nothing is left)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", project_dir.resolve().name).strip("-._")
    return canonicalize_name(cleaned) if cleaned else "app"


def _requirements(lines: Any, where: str, pyproject: Path) -> list[str]:
    from packaging.requirements import InvalidRequirement, Requirement  # ~6 ms; a packaged app's build never needs it

    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise ConfigError(f"{pyproject}: {where} must be a list of requirement strings", 'e.g. dependencies = ["django>=5", "gunicorn"]')
    for line in lines:
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            raise ConfigError(f"{pyproject}: {where}: {line!r} is not a valid requirement ({exc})", "write it as PEP 508 says, e.g. \"django>=5\"") from None
    return list(lines)


def app_source(project_dir: Path, extras: Sequence[str]) -> AppSource:
    """Name, version and dependencies of a project that is not a package, read from pyproject.toml (all of
    them optional: a pyproject.toml holding only ``[tool.pyimage]`` and ``requirements`` is enough)."""
    pyproject = project_dir / "pyproject.toml"
    project = _tool_table(_pyproject(project_dir), "project")
    dynamic = project.get("dynamic") or []
    if isinstance(dynamic, list) and ("dependencies" in dynamic or ("optional-dependencies" in dynamic and extras)):
        raise ConfigError(
            f"{pyproject}: the project is not a package (no [build-system]), yet its dependencies are dynamic; with no build backend nothing can compute them",
            "list them in [project] dependencies, or add a [build-system] table to build the project as a package",
        )
    requires = _requirements(project.get("dependencies", []), "[project] dependencies", pyproject)
    optional = project.get("optional-dependencies") or {}
    if not isinstance(optional, dict):
        raise ConfigError(f"{pyproject}: [project] optional-dependencies must be a table of lists", 'e.g. [project.optional-dependencies] postgres = ["psycopg"]')
    by_extra = {canonicalize_name(k): v for k, v in optional.items()}
    for extra in extras:
        if canonicalize_name(extra) not in by_extra:
            known = ", ".join(sorted(optional)) or "none"
            raise ConfigError(f"extras: the project has no extra {extra!r} (it has: {known})", "fix [tool.pyimage] extras")
        requires += _requirements(by_extra[canonicalize_name(extra)], f"[project.optional-dependencies] {extra}", pyproject)
    version = project.get("version")
    return AppSource(_name(project, project_dir), version if isinstance(version, str) and version else "0", tuple(dict.fromkeys(requires)))


def static_requires(project_dir: Path, extras: Sequence[str]) -> tuple[str, ...] | None:
    """A package's dependencies as its pyproject.toml declares them, the selected extras' included, when a backend
    must copy them into the wheel as written (PEP 621: not ``dynamic``); None when they are dynamic, name the
    project itself or a direct reference (a path dependency, built first), or are not valid: then only the built
    wheel says. Never raises: a broken table is reported where the wheel is built."""
    try:
        project = _tool_table(_pyproject(project_dir), "project")
        dynamic = project.get("dynamic") or []
        if not project or not isinstance(dynamic, list) or "dependencies" in dynamic or ("optional-dependencies" in dynamic and extras):
            return None
        pyproject = project_dir / "pyproject.toml"
        requires = _requirements(project.get("dependencies", []), "[project] dependencies", pyproject)
        optional = project.get("optional-dependencies") or {}
        by_extra = {canonicalize_name(k): v for k, v in optional.items()} if isinstance(optional, dict) else {}
        for extra in extras:
            if canonicalize_name(extra) not in by_extra:
                return None
            requires += _requirements(by_extra[canonicalize_name(extra)], f"[project.optional-dependencies] {extra}", pyproject)
    except (ConfigError, OSError, ValueError, AttributeError, TypeError):
        return None
    name = project.get("name")
    own = canonicalize_name(name) if isinstance(name, str) else ""
    if any(own == _line_name(line) or "@" in line.split(";")[0] for line in requires):
        return None
    return tuple(dict.fromkeys(requires))


def _line_name(line: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    return canonicalize_name(match.group(1)) if match else ""


def _requirement_names(project_dir: Path, path: Path, seen: set[Path] | None = None) -> set[str]:
    """The project names a requirements file lists, following its ``-r``/``--requirement`` includes (Django's
    ``requirements/prod.txt``) within the project; by name only, for a guess."""
    seen = set() if seen is None else seen
    try:
        real = path.resolve()
        if real in seen or not real.is_relative_to(project_dir.resolve()) or not real.is_file() or len(seen) > 50:
            return set()
        seen.add(real)
        text = real.read_text(errors="replace")
    except OSError:
        return set()
    names = set()
    for line in text.splitlines():
        include = re.match(r"\s*(?:-r|--requirement)(?:\s+|=)(\S+)", line)
        if include:
            names |= _requirement_names(project_dir, real.parent / include.group(1), seen)
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match:
            names.add(canonicalize_name(match.group(1)))
    return names


def entrypoint_guess(project_dir: Path, requires: Sequence[str] = (), name: str = "") -> list[str] | None:
    """A likely entrypoint from the project's files (by name only, nothing is imported): ``gunicorn X.wsgi`` for a
    Django project that depends on gunicorn, ``python manage.py runserver`` for one that does not, ``python -m PKG``
    for a top-level package with ``__main__.py`` (the one named like the project first), a web app's server
    (``_served_app``: gunicorn, uvicorn or ``flask run`` for ``app = Flask(…)`` in app.py), else ``python`` with the
    first of ``main.py``, ``app.py``, ``run.py``, ``server.py``, ``wsgi.py``, ``__main__.py``, or of the other
    ``*.py`` found; None when the project has no Python file to run (a guess is never a file that is not there)."""
    from packaging.requirements import InvalidRequirement, Requirement

    names: set[str] = set()
    for line in requires:
        try:
            names.add(canonicalize_name(Requirement(line).name))
        except InvalidRequirement:
            continue
    names |= _requirement_names(project_dir, project_dir / "requirements.txt")
    if (project_dir / "manage.py").is_file():
        wsgi = sorted(p.parent.name for p in project_dir.glob("*/wsgi.py"))
        if wsgi and "gunicorn" in names:
            return ["gunicorn", "--bind", "0.0.0.0:8000", f"{wsgi[0]}.wsgi"]
        return ["python", "manage.py", "runserver", "0.0.0.0:8000"]
    own = canonicalize_name(name or project_dir.name).replace("-", "_")
    runnable = sorted(
        (p.parent.name for p in project_dir.glob("*/__main__.py") if p.parent.name.isidentifier() and p.parent.name not in ("test", "tests", "docs")),
        key=lambda pkg: (pkg.lower() != own, pkg),
    )
    if runnable:
        return ["python", "-m", runnable[0]]
    served = _served_app(project_dir, names)
    if served is not None:
        return served
    for candidate in ("main.py", "app.py", "run.py", "server.py", "wsgi.py", "__main__.py"):
        if (project_dir / candidate).is_file():
            return ["python", candidate]
    scripts = sorted(p.name for p in project_dir.glob("*.py") if p.is_file())
    return ["python", scripts[0]] if scripts else None


_APP_FILES = ("app.py", "wsgi.py", "asgi.py", "main.py", "server.py", "application.py")
_APP_VARIABLE_RE = re.compile(r"^(app|application|api)\s*(?::[^=\n]*)?=\s*(?:\w+\.)*(Flask|FastAPI|Starlette|Quart|Litestar|create_app)\(", re.M)
_ASGI = ("FastAPI", "Starlette", "Quart", "Litestar")


def _served_app(project_dir: Path, names: Collection[str]) -> list[str] | None:
    """A web app served the way its dependencies say: a module-level ``app = Flask(…)`` (or FastAPI, …) in one of
    ``_APP_FILES``, run by gunicorn (WSGI) or uvicorn (ASGI) when the project depends on it, else by ``flask run``
    for a Flask app with no ``__main__`` block (``python app.py`` would import it and exit at once)."""
    for candidate in _APP_FILES:
        path = project_dir / candidate
        if not path.is_file() or path.stat().st_size > 1 << 20:
            continue
        text = path.read_text(errors="replace")
        match = _APP_VARIABLE_RE.search(text)
        if match is None:
            continue
        target = f"{candidate[:-3]}:{match.group(1)}"
        asgi = match.group(2) in _ASGI
        if asgi and "uvicorn" in names:
            return ["uvicorn", "--host", "0.0.0.0", "--port", "8000", target]
        if not asgi and "gunicorn" in names:
            return ["gunicorn", "--bind", "0.0.0.0:8000", target]
        if "__main__" in text:
            return ["python", candidate]
        if match.group(2) == "Flask" and "flask" in names:
            return ["flask", "--app", target, "run", "--host", "0.0.0.0", "--port", "8000"]
        return None
    return None


def tree_entries(project_dir: Path, workdir: str, skip: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """``files`` entries (layers/runtime.py's ``collect_files`` takes them) that copy the project's tree to
    ``workdir``, as ``COPY . /app`` does, one entry per top-level name: what is never meant for the image
    (``_SKIP_TOP``, any virtual environment or OCI layout, the paths in ``skip`` such as the build's own
    outputs) is left out before anything under it is read."""
    import glob

    root = project_dir.resolve()
    inside = [p.resolve().relative_to(root).parts for p in skip if p.resolve().is_relative_to(root) and p.resolve() != root]
    entries: list[dict[str, Any]] = []
    for name in sorted(p.name for p in root.iterdir()):
        path = root / name
        if name in _SKIP_TOP or name in _SKIP_FILES or (name,) in inside:
            continue
        if path.is_dir() and not path.is_symlink() and ((path / "pyvenv.cfg").exists() or (path / "oci-layout").exists()):
            continue
        # outputs deeper down: excluded by their path below this entry (a layout directory, or an archive file)
        deeper = tuple(p for parts in inside if len(parts) > 1 and parts[0] == name for p in ("/".join(parts[1:]), "/".join(parts[1:]) + "/*"))
        exclude = TREE_EXCLUDES + deeper
        if any(c in name for c in "*?["):  # a literal name glob would read as a pattern: escaped, copied under workdir
            entries.append({"src": glob.escape(name), "dest": workdir.rstrip("/") + "/", "mode": None, "exclude": tuple(f"{name}/{x}" for x in exclude) + exclude})
        else:
            dest = f"{workdir.rstrip('/')}/{name}" + ("/" if path.is_dir() else "")
            entries.append({"src": name, "dest": dest, "mode": None, "exclude": exclude})
    return entries
