"""How the image runs: its entrypoint, command, user, working directory, environment and labels.

Checked before any layer work (``check_entrypoint`` before the wheel is built where pyproject.toml decides;
``check_program`` once the wheel set is known: the program must be one the image will hold), then written into
the image config (``image_config``) after the layers are built.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import json
import posixpath
import sys
from typing import Any, Iterable, Sequence

from pyimage.base import BaseFacts
from pyimage.config import Config
from pyimage.errors import ConfigError
from pyimage.layers.interpreter import STANDALONE_HOME, Interpreter
from pyimage.layers.paths import InstallPaths
from pyimage.layers.runtime import ProjectFile, RuntimeUser
from pyimage.oci.model import Image, Layer
from pyimage.resolve.appsource import DEFAULT_WORKDIR, AppSource, entrypoint_guess
from pyimage.resolve.appwheel import project_table

__all__ = ["DEFAULT_PATH", "bytecode_notes", "check_entrypoint", "check_program", "check_script_object", "declared_scripts", "entrypoint", "image_config", "run_settings"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # what runtimes use when the image sets none


def bytecode_notes(cfg: Config, user: RuntimeUser | None) -> list[str]:
    """A non-root user cannot write ``__pycache__`` in the root-owned venv, so every start compiles again."""
    if cfg.compile_bytecode or user is None or user.uid == 0:
        return []
    return [f"user {cfg.user!r} cannot write .pyc files into the venv, so each start compiles the app's modules again; "
            "set compile-bytecode = true to ship them compiled"]


def declared_scripts(cfg: Config) -> list[str] | None:
    """The console scripts pyproject.toml declares statically, or None when the backend decides them (``scripts`` in
    ``dynamic``, no ``[project]`` table, setup.py): lets an ambiguous entrypoint fail before the wheel is built."""
    project = project_table(cfg.project_dir)
    if not project or "scripts" in (project.get("dynamic") or []):
        return None
    scripts = project.get("scripts") or {}
    return sorted(scripts) if isinstance(scripts, dict) else None


def check_entrypoint(cfg: Config, source: AppSource | None = None) -> None:
    """Before any work: several console scripts declared in pyproject.toml and no ``entrypoint`` is ambiguous; a
    project that is not a package has no console script at all, so it must say what runs."""
    if source is not None:
        if cfg.entrypoint is None and not cfg.command:  # an empty command is an image with nothing to run
            guess = entrypoint_guess(cfg.project_dir, source.requires, source.name) or ["python", "-m", "yourapp"]
            if cfg.command is not None:
                raise ConfigError(
                    "command = []: it is empty and the project is not a package (no console script), so the image would have nothing to run",
                    f"name the program, e.g. command = {json.dumps(guess)} (run in {cfg.workdir or DEFAULT_WORKDIR})",
                )
            from pyimage.resolve.workspace import find_workspace, relative_path

            workspace = find_workspace(cfg.project_dir)
            members = [(n, d) for n, d in (workspace.members if workspace is not None else ()) if d.resolve() != cfg.project_dir.resolve()]
            if workspace is not None and workspace.root == cfg.project_dir.resolve() and members:  # `uv init` roots have a [project]
                names = ", ".join(f"{n} ({relative_path(d, workspace.root)})" for n, d in members)
                raise ConfigError(
                    f"{cfg.pyproject}: the root of a uv workspace, not a package (no [build-system]): nothing of its own to run",
                    f"build a member: `pyimage build --package NAME` here, or in its directory (members: {names}); or set [tool.pyimage] command to run the root's own files",
                )
            if project_table(cfg.project_dir).get("scripts"):  # meant as a package: say what makes it one
                raise ConfigError(
                    f"{cfg.pyproject}: [project.scripts] is declared, but without a [build-system] table the project is not built as a package (as with uv), so there is no console script",
                    'add a [build-system] table (e.g. requires = ["hatchling"], build-backend = "hatchling.build"), or set [tool.pyimage] entrypoint',
                )
            raise ConfigError(
                f"{cfg.pyproject}: the project is not a package (no [build-system]), so there is no console script to run; its files go to {cfg.workdir or DEFAULT_WORKDIR}",
                f"set [tool.pyimage] command (what a Dockerfile's CMD runs), e.g. command = {json.dumps(guess)} (run in {cfg.workdir or DEFAULT_WORKDIR}), or add a [build-system] table to build it as a package",
            )
        return
    scripts = declared_scripts(cfg)
    if cfg.entrypoint is None and scripts is not None and len(scripts) > 1:
        entrypoint(cfg, tuple(scripts), "bin")


def _command_as_arguments(command: Sequence[str], default: Sequence[str], venv_files: Iterable[str], paths: InstallPaths, facts: BaseFacts) -> list[str]:
    """A note when ``command`` (the image's Cmd) starts with a program the image holds while the console script is
    the entrypoint: Docker passes the Cmd to the entrypoint as its arguments, so ``command = ["uvicorn", …]``, a
    Dockerfile's CMD habit, runs ``/opt/venv/bin/app uvicorn …``. ``command = ["serve"]`` (a subcommand) is quiet."""
    program = command[0]
    venv_bin = "/" + paths.bin.strip("/")
    names = _bin_names({"/" + p for p in venv_files}, venv_bin) | {"python", "python3"}
    if not (program in names or (program.startswith("/") and facts.has_program(program)) or any(facts.has_program(posixpath.join(d, program)) for d in DEFAULT_PATH.split(":") if "/" not in program)):
        return []
    return [
        f"command = {json.dumps(list(command))} is passed to the entrypoint, {default[0]}, as its arguments (as a Dockerfile's CMD after ENTRYPOINT): "
        f"the container runs {' '.join([*default, *command])}; to run {program} itself, set entrypoint = {json.dumps(list(command))} instead"
    ]


def check_program(
    cfg: Config, scripts: Sequence[str], base: Image, facts: BaseFacts, interp: Interpreter, paths: InstallPaths,
    venv_files: Iterable[str], files: Sequence[ProjectFile], workdir: str | None = None,
) -> list[str]:
    """Once the wheel set is known, before layer work: the program an explicit ``entrypoint`` names (or
    ``command``, when nothing else is the entrypoint) is one the image will hold, else exit 127 at run time.
    A bare name is looked up on the image's PATH (the venv's bin: every wheel's scripts and ``python``; then the
    base's PATH directories, from its scan); an absolute path must be in the venv, the ``files`` layer or the base.
    When the program is the venv's python, what it runs is checked too (``_check_python_target``): ``FILE.py``
    relative to ``workdir`` (the WorkingDir pyimage sets, None when the base's is kept), ``-m MOD``."""
    base_run = base.config.get("config") or {}
    if cfg.entrypoint is not None:
        key, argv = "entrypoint", list(cfg.entrypoint)
    elif (default := entrypoint(cfg, scripts, paths.bin)) is None and cfg.command and not base_run.get("Entrypoint"):
        key, argv = "command", list(cfg.command)
    else:
        if default is not None and cfg.command:
            return _command_as_arguments(cfg.command, default, venv_files, paths, facts)
        return []
    if not argv or ("/" in argv[0] and not argv[0].startswith("/")):
        return []  # relative to the working directory: not knowable here
    program = argv[0]
    venv_bin = "/" + paths.bin.strip("/")
    in_venv = {"/" + p for p in venv_files}
    pythons = {posixpath.join(venv_bin, n) for n in ("python", "python3", f"python{interp.version}")}
    in_venv |= {posixpath.join(venv_bin, n) for n in ("python", "python3", f"python{interp.version}")}
    in_files = {"/" + f.dest for f in files}
    standalone = interp.source is not None

    def exists(path: str) -> bool:
        if path in in_venv or path in in_files or facts.has_program(path):
            return True
        return standalone and posixpath.commonpath([path, STANDALONE_HOME]) == STANDALONE_HOME  # not enumerated: trusted

    env = {k: v for k, v in (item.partition("=")[::2] for item in base_run.get("Env") or [])}
    check_target = functools.partial(
        _check_python_target, key, argv, in_venv, in_files, facts, paths, workdir, "PYTHONPATH" in {**env, **cfg.env}, str(base_run.get("WorkingDir") or "/")
    )
    if program.startswith("/"):
        if exists(posixpath.normpath(program)):
            if posixpath.normpath(program) in pythons or posixpath.normpath(program) == interp.executable:
                check_target()
            return []
        raise ConfigError(
            f"{key} = {json.dumps(argv)}: {program} is in neither the venv, the files layer nor the base image",
            f"use a path the image holds, or a bare name found on its PATH (the venv's scripts: {', '.join(sorted(_bin_names(in_venv, venv_bin))[:8])})",
        )
    path_dirs = [venv_bin, *(env.get("PATH") or DEFAULT_PATH).split(":")]
    if "PATH" in cfg.env:
        path_dirs = cfg.env["PATH"].split(":")  # replaces the whole PATH in the image config
    found = next((d for d in path_dirs if d and exists(posixpath.join(d, program))), None)
    if found is not None:
        if posixpath.join(found, program) in pythons:
            check_target()
        return []
    ours = _bin_names(in_venv, venv_bin)
    theirs = {n for d in path_dirs if d and d != venv_bin for n in facts.programs_in(d)}
    close = difflib.get_close_matches(program, sorted(ours), n=1, cutoff=0.6) or difflib.get_close_matches(program, sorted(theirs), n=1, cutoff=0.6)
    listed = sorted(ours - {"python", "python3", f"python{interp.version}"})
    scripts_list = ", ".join(listed[:10]) + (f" and {len(listed) - 10} more" if len(listed) > 10 else "") if listed else "none"
    raise ConfigError(
        f"{key} = {json.dumps(argv)}: {program!r} is no script in the venv (its scripts: {scripts_list}) and no program on the image's PATH",
        (f'did you mean "{close[0]}"? ' if close else "") + f"fix {key} in [tool.pyimage] (or --set), or add the package that provides {program!r} to the dependencies",
    )


_PYTHON_FLAGS = frozenset("bBdEhiIOPqsSuvVx")  # single-letter options of CPython that take no argument


def _python_target(args: Sequence[str]) -> tuple[str, str] | None:
    """What ``python ARGS`` runs: ("script", PATH) or ("module", NAME); None for ``-c``, stdin, ``--version`` and
    anything this reading of CPython's command line does not know (then nothing is checked)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return ("script", args[i + 1]) if i + 1 < len(args) else None
        if arg == "--check-hash-based-pycs":
            i += 2
            continue
        if arg == "-" or arg.startswith("--"):
            return None
        if not arg.startswith("-"):
            return "script", arg
        for j, letter in enumerate(arg[1:], start=1):
            rest = arg[j + 1 :]
            if letter == "c":
                return None
            if letter == "m":
                name = rest or (args[i + 1] if i + 1 < len(args) else "")
                return ("module", name) if name else None
            if letter in "XW":
                i += 0 if rest else 1  # its value is the rest of this word, or the next word
                break
            if letter not in _PYTHON_FLAGS:
                return None
        i += 1
    return None


def _check_python_target(
    key: str, argv: list[str], in_venv: set[str], in_files: set[str], facts: BaseFacts, paths: InstallPaths, workdir: str | None, pythonpath: bool,
    base_workdir: str = "/",
) -> None:
    """``python FILE.py`` / ``python -m MOD`` with the venv's python: the file (relative to ``workdir``) or module
    (the standard library, the venv's site-packages, or the working directory, which ``-m`` puts first on
    sys.path) must be one the image holds, and a package run with ``-m`` must have a ``__main__`` module, else
    the container stops at "can't open file" / "No module named". Only what can be known is checked: an
    absolute script, a working directory the base's files decide (the base's own, unless it is / and the scan
    knows the names there; or pyimage's, where the base already has files), or a PYTHONPATH in the env leave
    it unchecked."""
    target = _python_target(argv[1:])
    if target is None:
        return
    kind, name = target
    wd = posixpath.normpath(workdir) if workdir else None
    if wd is not None and any(posixpath.commonpath([p, wd]) == wd for p in (*facts.executables, *facts.links)):
        wd = None  # the base ships files there: not all of them are known
    site = "/" + paths.site_packages.strip("/")
    if kind == "script":
        if name.startswith("/") or wd is None:
            return
        path = posixpath.normpath(posixpath.join(wd, name))
        if path in in_files or path in in_venv or facts.has_program(path):
            return
        raise ConfigError(
            f"{key} = {json.dumps(argv)}: {name} is not in the image: the app's files at {wd} hold no {posixpath.relpath(path, wd)}",
            _runnable_hint(key, in_files, wd),
        )
    if not name or pythonpath or name.split(".")[0] in sys.stdlib_module_names:
        return
    present = in_files | in_venv
    roots = [site] + ([wd] if wd is not None else [])
    for root in roots:
        if _holds_module(root, name, present):
            package = posixpath.join(root, *name.split("."))
            if any(p.startswith(package + "/") for p in present) and not _holds_module(root, name + ".__main__", present) and not _holds_module(root, name, present, packages=False):
                raise ConfigError(
                    f"{key} = {json.dumps(argv)}: {name} is a package with no __main__.py, which `python -m` needs to run it",
                    f"name the module that runs the app (e.g. {json.dumps(argv[:-1] + [name + '.cli'])}), or add {name.replace('.', '/')}/__main__.py",
                )
            return
    if wd is None and (posixpath.normpath(workdir or base_workdir) != "/" or facts.root is None or _at_root(name, facts.root)):
        return  # sys.path[0] is a working directory whose files are not all known here
    where = f"the app's files at {wd}" if wd is not None else "the working directory / (the base's, which pyimage keeps)"
    close = difflib.get_close_matches(name, sorted(_modules(site, in_venv)), n=1, cutoff=0.6)
    hint = _runnable_hint(key, in_files, wd) if wd is not None else f"fix {key} in [tool.pyimage] (or --set)"
    raise ConfigError(
        f"{key} = {json.dumps(argv)}: no module {name!r} in the image: neither the venv's site-packages nor {where} hold it",
        (f"did you mean {close[0]!r}? " if close else "") + hint + f", or add the package that provides {name!r} to the dependencies",
    )


def _at_root(module: str, names: frozenset[str]) -> bool:
    """Whether the base has something at / that ``import module`` could find (a package, a .py or an extension)."""
    top = module.split(".")[0]
    return top in names or f"{top}.py" in names or any(n.startswith(top + ".") and ".so" in n for n in names)


def _modules(site: str, present: set[str]) -> set[str]:
    """The dotted names of the modules under ``site`` (for a did-you-mean)."""
    found = set()
    for p in present:
        if p.startswith(site + "/") and p.endswith(".py"):
            parts = p[len(site) + 1 : -3].split("/")
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts and all(part.isidentifier() for part in parts):
                found.add(".".join(parts))
    return found


def _holds_module(root: str, module: str, present: set[str], packages: bool = True) -> bool:
    """Whether ``root`` (a sys.path entry) holds ``module``: its .py file, its package directory (namespace
    packages included; not with ``packages=False``) or an extension module."""
    base = posixpath.join(root, *module.split("."))
    parent, last = posixpath.split(base)
    for p in present:
        if p in (base + ".py", base + ".pyc") or (packages and p.startswith(base + "/")):
            return True
        if posixpath.dirname(p) == parent and posixpath.basename(p).startswith(last + ".") and p.endswith(".so"):
            return True
    return False


def _runnable_hint(key: str, in_files: set[str], wd: str) -> str:
    """What the app's files at ``wd`` could run: its top-level scripts and packages with ``__main__.py``."""
    scripts = sorted(posixpath.relpath(p, wd) for p in in_files if posixpath.dirname(p) == wd and p.endswith(".py"))
    packages = sorted(posixpath.basename(posixpath.dirname(p)) for p in in_files if posixpath.dirname(posixpath.dirname(p)) == wd and p.endswith("/__main__.py"))
    choices = [json.dumps(["python", "-m", pkg]) for pkg in packages] + [json.dumps(["python", s]) for s in scripts]
    if not choices:
        return f"fix {key} in [tool.pyimage] (or --set): the path is relative to the working directory {wd}"
    return f"fix {key} in [tool.pyimage] (or --set), e.g. {key} = {choices[0]}" + (f" (or {', '.join(choices[1:4])})" if len(choices) > 1 else "")


def check_script_object(script: str, found: tuple[str, str, str] | None) -> None:
    """The app's console script ``script`` that the image runs names an object its module defines
    (``app.cli:main``), else the container stops at an ImportError. ``found`` is what ``wheels.script_source``
    read from the app wheel (None: not judged). Read from the module's source (nothing is imported): a def,
    class, assignment or import at the top level; a module with ``__getattr__`` or a star import is not judged."""
    import ast

    if found is None:
        return
    target, name, source = found
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return  # the module's own error, met at import: not this check's to say
    defined: set[str] = set()
    for node in tree.body:
        defined |= _top_names(node)
    if name in defined or "__getattr__" in defined or "*" in defined:
        return
    module = target.split(":")[0]
    functions = sorted(n for n in defined if not n.startswith("_"))
    close = difflib.get_close_matches(name, functions, n=1, cutoff=0.6)
    raise ConfigError(
        f"[project.scripts] {script} = {target!r}: {module} defines no {name!r} (the container would stop at an ImportError)",
        (f"did you mean {module}:{close[0]}? " if close else "") + f"fix the entry in pyproject.toml to name a function {module} defines",
    )


def _top_names(node: Any) -> set[str]:
    """The names a module-level statement binds (``if``/``try`` blocks looked into)."""
    import ast

    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    if isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)) or type(node).__name__ in ("TryStar", "Match"):
        names: set[str] = set()
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            for child in getattr(node, field, []) or []:
                names |= _top_names(child)  # an except handler or match case: every name stored in it (below)
        if isinstance(node, (ast.For, ast.With)):
            names |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        return names
    if isinstance(node, (ast.Expr, ast.Global, ast.Nonlocal)):
        return set()
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}  # walrus, del, …


def _bin_names(in_venv: set[str], venv_bin: str) -> set[str]:
    return {posixpath.basename(p) for p in in_venv if posixpath.dirname(p) == venv_bin}


def entrypoint(cfg: Config, scripts: Sequence[str], bin_dir: str) -> list[str] | None:
    if cfg.entrypoint is not None:
        return list(cfg.entrypoint)
    if len(scripts) == 1:
        return [posixpath.join("/", bin_dir, scripts[0])]
    if not scripts:
        if cfg.command:  # the image's Cmd runs (an empty one would leave nothing to run)
            return None
        raise ConfigError(
            f"{cfg.pyproject}: the project defines no console script, so there is no default entrypoint",
            'set [tool.pyimage] entrypoint = ["python", "-m", "yourapp"], or add a [project.scripts] entry',
        )
    raise ConfigError(
        f"{cfg.pyproject}: the project has several console scripts ({', '.join(scripts)}); which one runs is ambiguous",
        f'set [tool.pyimage] entrypoint = ["{scripts[0]}"] (or another of them)',
    )


def run_settings(cfg: Config, scripts: Sequence[str], paths: InstallPaths, user: RuntimeUser | None, workdir: str | None) -> dict[str, Any]:
    """What pyimage sets in the image's run config (the base's value stays where this has none): the one
    decision ``pyimage plan`` shows and ``image_config`` writes."""
    out: dict[str, Any] = {}
    argv = entrypoint(cfg, scripts, paths.bin)
    if argv is not None:
        out["Entrypoint"] = argv
    if cfg.command is not None:
        out["Cmd"] = list(cfg.command)
    if user is not None and user.created:
        out["User"] = user.config_user  # numeric: runtimes can check it is not root
    elif cfg.user:
        out["User"] = cfg.user
    if workdir:
        out["WorkingDir"] = workdir
    return out


def image_config(
    cfg: Config, base_image: Image, paths: InstallPaths, scripts: Sequence[str], user: RuntimeUser | None, workdir: str | None, layers: Sequence[Layer]
) -> dict[str, Any]:
    """The image's config: the base's, with the venv on PATH, the entrypoint, user, workdir, labels, the
    ``created`` time of the epoch, and one history entry per layer above the base."""
    base = base_image.config
    config = {k: v for k, v in base.items() if k not in ("container", "container_config", "docker_version", "id", "parent")}
    run = dict(base.get("config") or {})
    env = {}
    for item in run.get("Env") or []:
        k, _, v = item.partition("=")
        env[k] = v
    venv_bin = posixpath.join("/", paths.bin)
    env["PATH"] = venv_bin + ":" + env.get("PATH", DEFAULT_PATH)
    env["VIRTUAL_ENV"] = "/" + paths.venv.strip("/")
    env.update(cfg.env)
    run["Env"] = [f"{k}={v}" for k, v in env.items()]
    ours = run_settings(cfg, scripts, paths, user, workdir)
    if "Entrypoint" in ours:
        run.pop("Cmd", None)  # the base's Cmd was arguments for the base's entrypoint
    run.update(ours)
    labels = dict(run.get("Labels") or {})
    labels.update(cfg.labels)
    if labels:
        run["Labels"] = labels
    if cfg.ports:
        run["ExposedPorts"] = {**(run.get("ExposedPorts") or {}), **{port: {} for port in cfg.ports}}
    config["config"] = run
    created = dt.datetime.fromtimestamp(cfg.epoch, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    config["created"] = created
    config["architecture"] = cfg.platform.architecture
    config["os"] = cfg.platform.os
    if cfg.platform.variant:
        config["variant"] = cfg.platform.variant
    config["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
    history = [h for h in base.get("history") or []]
    history += [{"created": created, "created_by": layer.history, "comment": "pyimage"} for layer in layers[len(base_image.layers):]]
    config["history"] = history
    return config
