"""The app wheel's metadata (wheels.read_metadata): the same answers the standard readers give, email.parser for
METADATA and pypa/installer for entry_points.txt, on real wheels and on awkward hand-made ones."""

from __future__ import annotations

import re
import zipfile
from email.parser import Parser
from pathlib import Path

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
