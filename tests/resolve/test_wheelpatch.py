"""A one-line change copies the edited file into the last wheel instead of starting the backend
(resolve/wheelpatch.py): for every backend it serves, the wheel is the one the backend itself builds from the
edited tree; everything it cannot prove goes to the backend. Real backends from PyPI, real builds."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from pyimage.cache import Cache
from pyimage.resolve.appwheel import build_app_wheel

_BACKENDS = {
    "hatchling": ('requires = ["hatchling"]\nbuild-backend = "hatchling.build"', ""),
    "flit": ('requires = ["flit_core>=3.9,<4"]\nbuild-backend = "flit_core.buildapi"', ""),
    "pdm": ('requires = ["pdm-backend"]\nbuild-backend = "pdm.backend"', ""),
    "poetry": ('requires = ["poetry-core>=2"]\nbuild-backend = "poetry.core.masonry.api"', '\n[tool.poetry]\npackages = [{ include = "demoapp", from = "src" }]\n'),
    "uv_build": ('requires = ["uv_build>=0.9,<0.14"]\nbuild-backend = "uv_build"', ""),
    "setuptools": ('requires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"', '\n[tool.setuptools.package-data]\ndemoapp = ["*.json"]\n'),
}


def _project(root: Path, backend: str, project_extra: str = "", tool_extra: str = "") -> Path:
    system, tool = _BACKENDS[backend]
    (root / "src" / "demoapp").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "demoapp"\nversion = "1.0"\ndescription = "a demo"\nrequires-python = ">=3.9"\n{project_extra}\n'
        f'[project.scripts]\ndemoapp = "demoapp.cli:main"\n\n[build-system]\n{system}\n{tool}{tool_extra}'
    )
    (root / "src" / "demoapp" / "__init__.py").write_text('"""demo"""\n')
    (root / "src" / "demoapp" / "cli.py").write_text("def main():\n    print('one')\n")
    (root / "src" / "demoapp" / "data.json").write_text('{"a": 1}\n')
    return root


def _build(project: Path, cache: Path, out: Path) -> tuple[dict[str, bytes], list[str]]:
    said: list[str] = []
    wheel = build_app_wheel(project, out, Cache(cache), 0, events=said.append)
    with zipfile.ZipFile(wheel) as zf:
        return {name: zf.read(name) for name in zf.namelist()}, said


def _patched(said: list[str]) -> bool:
    return any("copied into" in line for line in said)


@pytest.mark.parametrize("backend", sorted(_BACKENDS))
def test_an_edited_file_is_copied_into_the_last_wheel_exactly_as_the_backend_would_build_it(backend: str, tmp_path: Path) -> None:
    project = _project(tmp_path / "p", backend)
    _build(project, tmp_path / "cache", tmp_path / "o1")
    (project / "src" / "demoapp" / "cli.py").write_text("def main():\n    print('two, with a longer line')\n")
    (project / "src" / "demoapp" / "data.json").write_text('{"a": 2}\n')
    patched, said = _build(project, tmp_path / "cache", tmp_path / "o2")
    assert _patched(said), said
    # The backend itself, from nothing, on the edited tree: the same members with the same bytes, RECORD included.
    built, said_fresh = _build(project, tmp_path / "fresh-cache", tmp_path / "o3")
    assert not _patched(said_fresh)
    assert patched == built
    assert b"two, with a longer line" in patched["demoapp/cli.py"]
    # And again: a second edit patches the patched wheel.
    (project / "src" / "demoapp" / "cli.py").write_text("def main():\n    print('three')\n")
    again, said = _build(project, tmp_path / "cache", tmp_path / "o4")
    assert _patched(said) and again["demoapp/cli.py"] == b"def main():\n    print('three')\n"


@pytest.mark.parametrize(("backend", "version_file"), [("hatchling", "__about__.py"), ("hatchling", "__init__.py"), ("pdm", "__about__.py")])
def test_a_version_read_from_a_named_file_sends_only_that_file_to_the_backend(backend: str, version_file: str, tmp_path: Path) -> None:
    """``hatch new`` writes ``dynamic = ["version"]`` read from ``src/<pkg>/__about__.py`` (older layouts: from
    ``__init__.py``): an edit elsewhere is copied (the version cannot change), an edit of that file goes to the
    backend and the version follows it."""
    path = f"src/demoapp/{version_file}"
    tool = {
        "hatchling": f'\n[tool.hatch.version]\npath = "{path}"\n',
        "pdm": f'\n[tool.pdm.version]\nsource = "file"\npath = "{path}"\n',
    }[backend]
    project = _project(tmp_path / "p", backend, tool_extra=tool)
    text = (project / "pyproject.toml").read_text().replace('version = "1.0"\n', 'dynamic = ["version"]\n')
    (project / "pyproject.toml").write_text(text)
    (project / path).write_text('__version__ = "1.0"\n')
    _build(project, tmp_path / "cache", tmp_path / "o1")
    (project / "src" / "demoapp" / "cli.py").write_text("def main():\n    print('edited')\n")
    patched, said = _build(project, tmp_path / "cache", tmp_path / "o2")
    assert _patched(said), said
    assert patched == _build(project, tmp_path / "fresh", tmp_path / "o3")[0]
    (project / path).write_text('__version__ = "1.1"\n')
    bumped, said = _build(project, tmp_path / "cache", tmp_path / "o4")
    assert not _patched(said)
    assert "demoapp-1.1.dist-info/METADATA" in bumped


@pytest.mark.parametrize("change", ["new file", "removed file", "readme", "readme in the package", "not in the wheel", "mode", "hook", "pruned"])
def test_what_cannot_be_proven_a_copy_is_built_by_the_backend(change: str, tmp_path: Path) -> None:
    extra = {"readme": 'readme = "README.md"\n', "readme in the package": 'readme = "src/demoapp/README.md"\n'}.get(change, "")
    hook = "\n[tool.hatch.build.targets.wheel.hooks.custom]\n" if change == "hook" else ""
    project = _project(tmp_path / "p", "hatchling", project_extra=extra, tool_extra=hook)
    if change == "hook":  # a build hook that puts a digest of cli.py into the wheel: no copy can know that
        (project / "hatch_build.py").write_text(_HOOK)
    (project / "README.md").write_text("# demo\n")
    (project / "src" / "demoapp" / "README.md").write_text("# demo\n")  # a member of the wheel too (package data)
    (project / "tests").mkdir()
    (project / "tests" / "test_demo.py").write_text("def test(): pass\n")
    cache = tmp_path / "cache"
    _build(project, cache, tmp_path / "o1")
    cli = project / "src" / "demoapp" / "cli.py"
    cli.write_text("def main():\n    print('edited')\n")  # an edit that alone would be copied
    if change == "new file":
        (project / "src" / "demoapp" / "extra.py").write_text("X = 1\n")
    elif change == "removed file":
        (project / "src" / "demoapp" / "data.json").unlink()
    elif change == "readme":
        (project / "README.md").write_text("# demo, described anew\n")
    elif change == "readme in the package":  # copied into the package and into METADATA: a copy would leave it stale
        (project / "src" / "demoapp" / "README.md").write_text("# demo, described anew\n")
    elif change == "not in the wheel":
        (project / "tests" / "test_demo.py").write_text("def test(): assert True\n")
    elif change == "mode":
        cli.chmod(0o755)
    elif change == "pruned":
        for kept in (cache / "appwheels").iterdir():
            for wheel in kept.glob("*.whl"):
                wheel.unlink()
    members, said = _build(project, cache, tmp_path / "o2")
    assert not _patched(said), said
    built, _ = _build(project, tmp_path / "fresh-cache", tmp_path / "o3")
    assert members == built
    if change.startswith("readme"):
        assert b"described anew" in members["demoapp-1.0.dist-info/METADATA"]
    if change == "new file":
        assert "demoapp/extra.py" in members
    if change == "hook":
        assert members["demoapp/gen.txt"] == hashlib.sha256(cli.read_bytes()).hexdigest().encode()


_HOOK = """\
import hashlib, pathlib, tempfile
from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version, build_data):
        digest = hashlib.sha256(pathlib.Path(self.root, "src/demoapp/cli.py").read_bytes()).hexdigest()
        out = pathlib.Path(tempfile.mkdtemp(), "gen.txt")
        out.write_text(digest)
        build_data["force_include"][str(out)] = "demoapp/gen.txt"
"""


@pytest.mark.parametrize(
    "pyproject",
    [
        {"project": {"name": "x"}, "tool": {"hatch": {"metadata": "not a table"}}},
        {"project": {"name": "x"}, "tool": {"hatch": {"build": {"targets": ["wheel"]}}}},
        {"project": {"name": "x"}, "tool": "not a table"},
        {"project": "not a table"},
    ],
)
def test_an_odd_pyproject_is_left_to_the_backend_not_an_internal_error(pyproject: dict, tmp_path: Path) -> None:
    from pyimage.resolve.wheelpatch import patchable

    assert patchable(pyproject, "hatchling.build", tmp_path, set()) is False
    assert patchable({"project": {"name": "x"}}, "hatchling.build", tmp_path, set()) is True
