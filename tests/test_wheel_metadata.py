"""The app wheel's metadata (wheels.read_metadata): the same answers the standard readers give, email.parser for
METADATA and pypa/installer for entry_points.txt, on real wheels and on awkward hand-made ones."""

from __future__ import annotations

import re
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from installer.utils import parse_entrypoints
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pyimage.wheels import read_metadata
from wheels_fixture import make_wheel, real_wheels  # noqa: F401  (real_wheels: a session fixture)


def _reference(wheel: Path) -> tuple[str, list[str], list[str], str | None, frozenset[str]]:
    with zipfile.ZipFile(wheel) as zf:
        dist_info = next(n.split("/")[0] for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(f"{dist_info}/METADATA").decode())
        try:
            eps = zf.read(f"{dist_info}/entry_points.txt").decode()
        except KeyError:
            eps = ""
    scripts = sorted({name for name, _m, _a, section in parse_entrypoints(eps) if section == "console"})
    requires = meta.get_all("Requires-Dist") or []
    extras = set(meta.get_all("Provides-Extra") or [])
    for line in requires:
        marker = Requirement(line).marker
        extras |= set(re.findall(r'extra == "([^"]+)"', str(marker))) if marker else set()
    return meta["Name"], requires, scripts, meta.get("Requires-Python"), frozenset(canonicalize_name(e) for e in extras)


def test_real_wheels_read_as_the_standard_readers_read_them(real_wheels: dict[str, Path]) -> None:
    for wheel in real_wheels.values():
        assert read_metadata(wheel) == _reference(wheel)
    assert read_metadata(real_wheels["wheel"])[2] == ["wheel"]  # the one with a console script


def test_awkward_metadata_and_entry_points(tmp_path: Path) -> None:
    entry_points = (
        "# a comment\n"
        "[gui_scripts]\nwindow = app.gui:main\n\n"
        "[console_scripts]\n"
        "  serve = app.cli:serve [extra]\n"
        "; another comment\n"
        "migrate=app.cli:migrate\n"
        "[app.plugins]\nplugin = app.plugins:one\n"
    )
    wheel = make_wheel(tmp_path, "app", "2.0", {"app/__init__.py": b""}, entry_points=entry_points, requires_python=">=3.10", requires=("django>=5", 'uvicorn[standard]; python_version >= "3.11"'))
    # A folded header and a description body that looks like headers must not change the answers.
    with zipfile.ZipFile(wheel) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    meta = members["app-2.0.dist-info/METADATA"].decode()
    meta += "Summary: a summary\n  folded onto a second line\nRequires-Dist: rich\nProvides-Extra: Fancy_UI\nRequires-Dist: pytest; extra == 'test'\n\nName: not-this\nRequires-Dist: not-this-either\nProvides-Extra: not-this\n"
    members["app-2.0.dist-info/METADATA"] = meta.encode()
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    got = read_metadata(wheel)
    assert got == _reference(wheel)
    assert got == ("app", ["django>=5", 'uvicorn[standard]; python_version >= "3.11"', "rich", "pytest; extra == 'test'"], ["migrate", "serve"], ">=3.10", frozenset({"fancy-ui", "test"}))


APP_CLI = b"""
import sys
from importlib import metadata as md

try:
    import tomllib as toml
except ImportError:
    toml = None

def main():
    pass

class Tool:
    def run(self): ...

run = Tool().run
if sys.platform == "linux":
    def serve():
        pass
"""


@pytest.mark.parametrize(
    "target, said",
    [
        ("app.cli:main", ""), ("app.cli:Tool.run", ""), ("app.cli:run", ""), ("app.cli:serve", ""), ("app.cli:toml", ""), ("app.cli:md", ""),
        ("app:go", ""),  # app/__init__.py has a star import: not judged
        ("other.mod:main", ""),  # a module this wheel does not hold: another wheel's
        ("app.cli:mian", "app.cli defines no 'mian'"), ("app.cli:Tol.run", "did you mean app.cli:Tool?"),
    ],
)
def test_the_console_script_the_image_runs_names_an_object_its_module_defines(target: str, said: str, tmp_path: Path) -> None:
    """A new-user trial's ``stats-cli = "stats_cli.main:mian"`` built and failed in the container with an ImportError."""
    from pyimage.errors import ConfigError
    from pyimage.runconfig import check_script_object
    from pyimage.wheels import script_source

    files = {"app/__init__.py": b"from app.helpers import *\n", "app/cli.py": APP_CLI}
    wheel = make_wheel(tmp_path, "app", "1.0", files, entry_points=f"[console_scripts]\napp = {target}\n")
    if not said:
        check_script_object("app", script_source(wheel, "app"))
        return
    with pytest.raises(ConfigError) as err:
        check_script_object("app", script_source(wheel, "app"))
    assert said in f"{err.value} {err.value.hint}"


def test_a_console_script_naming_a_submodule_of_its_package_is_not_refused(tmp_path: Path) -> None:
    """pip's script runs ``from pkg import sub``, which imports the submodule though ``pkg/__init__.py`` never does."""
    from pyimage.errors import ConfigError
    from pyimage.runconfig import check_script_object
    from pyimage.wheels import script_source

    files = {"pkg/__init__.py": b"", "pkg/sub.py": b"def main(): pass\n", "pkg/tool/__init__.py": b""}
    for target in ("pkg:sub", "pkg:tool"):
        wheel = make_wheel(tmp_path / target.replace(":", "-"), "pkg", "1.0", files, entry_points=f"[console_scripts]\npkg = {target}\n")
        check_script_object("pkg", script_source(wheel, "pkg"))
    wheel = make_wheel(tmp_path / "typo", "pkg", "1.0", files, entry_points="[console_scripts]\npkg = pkg:sbu\n")
    with pytest.raises(ConfigError):
        check_script_object("pkg", script_source(wheel, "pkg"))
