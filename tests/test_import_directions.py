"""The package map stays true: imports only point down the data flow (docs/architecture.md, "Import directions").

Every ``import``/``from … import`` of a ``pyimage`` module counts, lazy ones inside functions included, since a
lazy import is still a dependency (it only hides a cycle). Units are the top-level modules and the subpackages
(``pyimage.oci``, ``pyimage.layers``, ``pyimage.resolve``); imports inside a unit are free.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pyimage"

# What each unit may import. Leaves first; a unit absent from a set must not be imported by it.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "console": set(),  # what is shown (streams, tables, sizes, --json): a leaf every stage may use
    "atomic": set(),  # atomic file writes (stage, rename): a leaf every writer uses
    "tools": {"errors"},  # running pip, uv, build backends: environment, capture, one-line failures, Ctrl-C, redaction
    "hashing": set(),  # whole files and streams hashed for identity or verification: a leaf every stage may use
    "oci": {"errors", "atomic", "tools", "pyimage"},  # serializes and transports images: nothing of the pipeline (pyimage: __version__; tools: credential helpers, podman)
    "layers": {"errors", "atomic", "console", "hashing", "oci", "cache", "wheels"},
    "wheels": {"errors", "hashing"},
    "cache": {"errors", "atomic", "hashing", "oci"},  # oci.model's digest helpers
    "config": {"errors", "oci", "layers", "outputs"},  # the value types it parses into (outputs: Output)
    "resolve": {"errors", "atomic", "hashing", "tools", "oci", "cache", "config"},
    "publish": {"errors", "oci", "cache"},
    "base": {"errors", "hashing", "oci", "cache", "layers", "publish"},
    "templates": {"errors", "oci"},
    "merge": {"errors", "oci", "cache", "publish", "base"},
    "outputs": {"errors", "atomic", "oci", "cache", "publish"},
    "runconfig": {"errors", "oci", "config", "layers", "resolve", "base"},
    "pipeline": {"errors", "console", "runconfig", "oci", "cache", "config", "layers", "resolve", "wheels", "publish", "base", "outputs"},
    "report": {"oci", "pipeline", "runconfig"},  # the --json documents of a build and a plan (data; console renders)
    "cli": {"pyimage", "console", "errors", "runconfig", "oci", "cache", "config", "pipeline", "report", "publish", "merge", "templates", "base", "outputs"},
    "__main__": {"cli"},
}
# Where a lower unit reaches into a higher one for one shared chore, only that module may be used.
# (none now: the file hashing wheels and cache took from layers.compress lives in the hashing leaf)
NARROW: dict[tuple[str, str], set[str]] = {}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "pyimage"


def _imports(package: Path = PACKAGE) -> list[tuple[str, str, str]]:
    """(file, importing unit, imported module) for every pyimage import in the package."""
    found = []
    for path in sorted(package.rglob("*.py")):
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            found += [(str(path.relative_to(package.parent)), _unit(module), name) for name in names if name.split(".")[0] == "pyimage"]
    return found


def test_every_unit_is_in_the_map() -> None:
    units = {_unit(unit) for _f, unit, _m in _imports()} | {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert units - {"__init__", "pyimage"} <= set(ALLOWED), f"add these to ALLOWED with the units they may import: {sorted(units - set(ALLOWED) - {'__init__', 'pyimage'})}"


def _wrong_imports(package: Path = PACKAGE) -> list[str]:
    wrong = []
    for path, unit, imported in _imports(package):
        target = _unit(imported)
        if target == unit:
            continue
        if target not in ALLOWED.get(unit, set()):
            wrong.append(f"{path}: {unit} imports {imported}")
        elif (unit, target) in NARROW and not any(imported == m or imported.startswith(m + ".") for m in NARROW[unit, target]):
            wrong.append(f"{path}: {unit} may use only {sorted(NARROW[unit, target])} of {target}, not {imported}")
    return wrong


def test_imports_only_point_down_the_data_flow() -> None:
    wrong = _wrong_imports()
    assert not wrong, "\n".join(wrong)


def test_the_allowed_graph_has_no_cycle() -> None:
    """The map itself is a DAG once the narrow exceptions are set aside (they are single shared helpers)."""
    graph = {unit: {t for t in targets if (unit, t) not in NARROW and t != "pyimage"} for unit, targets in ALLOWED.items()}
    seen: dict[str, int] = {}

    def visit(unit: str, stack: tuple[str, ...]) -> None:
        if seen.get(unit) == 2:
            return
        assert seen.get(unit) != 1, f"cycle: {' -> '.join((*stack, unit))}"
        seen[unit] = 1
        for target in graph.get(unit, set()):
            visit(target, (*stack, unit))
        seen[unit] = 2

    for unit in graph:
        visit(unit, ())


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    """The scanner is not blind: in a copy of the package where oci/ lazily imports the cache (the kind of cycle a
    function-level import hides) and wheels reaches up into layers, both are reported."""
    import shutil

    copy = tmp_path / "pyimage"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert _wrong_imports(copy) == []
    (copy / "oci" / "sneaky.py").write_text("def f():\n    from pyimage.cache import Cache\n    return Cache\n")
    (copy / "wheels.py").write_text((copy / "wheels.py").read_text() + "\nfrom pyimage.layers.tar import TarWriter\n")
    assert _wrong_imports(copy) == [
        "pyimage/oci/sneaky.py: oci imports pyimage.cache",
        "pyimage/wheels.py: wheels imports pyimage.layers.tar",
    ]


# Modules that still join paths under the cache root themselves (none now: Cache.build_env_dir, app_wheel_dir,
# sdist_wheel_dir, interpreter_archive, blobs_dir and tmp_dir serve them): an entry here is a debt; the test fails
# when a new one appears, and when one is paid but still listed.
CACHE_PATH_DEBT: set[str] = set()


def test_only_the_cache_joins_paths_under_its_root() -> None:
    joining = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE.parent))
        if rel != "pyimage/cache.py" and "cache.root /" in path.read_text():
            joining.add(rel)
    assert joining == CACHE_PATH_DEBT, f"paths under the cache root belong to cache.py (add a Cache method): {sorted(joining - CACHE_PATH_DEBT)}; paid: {sorted(CACHE_PATH_DEBT - joining)}"
