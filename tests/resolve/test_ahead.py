"""The resolution started from pyproject.toml while the app wheel builds (``pins.resolve_ahead``): started only
when the lock is stale by pyproject.toml alone, its pins taken only when the wheel asks the same, and nothing it
does can change what the build installs or says. Real uv runs against a find-links directory of real wheels."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyimage.cache import Cache
from pyimage.config import load_config
from pyimage.errors import BuildError
from pyimage.oci.model import Platform
from pyimage.resolve import uv as uv_backend
from pyimage.resolve.appsource import static_requires
from pyimage.resolve.pins import choose_pins, declared_digest, resolve_ahead
from pyimage.resolve.target import Target
from wheels_fixture import make_wheel

TARGET = Target("3.11", Platform.parse("linux/amd64"), "glibc", "2.36")


def _project(tmp_path: Path, dependencies: str, extra: str = "") -> Path:
    project = tmp_path / "proj"
    project.mkdir(parents=True, exist_ok=True)
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        f'[project]\nname = "app"\nversion = "1.0"\ndependencies = {dependencies}\n{extra}'
    )
    return project


@pytest.fixture
def resolutions(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The requests uv was run with (the real uv runs)."""
    seen: list[list[str]] = []
    real = uv_backend.resolve

    def counted(requirements, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(list(requirements))
        return real(requirements, *args, **kwargs)

    monkeypatch.setattr(uv_backend, "resolve", counted)
    return seen


def _pins(project: Path, wheel_requires: tuple[str, ...], cache: Cache, ahead_too: bool = True, extras: tuple[str, ...] = ()) -> tuple[dict[str, str], list[str]]:
    """A build's choice of pins with the app wheel a backend would write (Requires-Dist ``wheel_requires``)."""
    cfg = load_config(project, {"extras": list(extras)} if extras else None)
    ahead = resolve_ahead(cfg, TARGET, cache, False, False, None) if ahead_too else None
    wheel = make_wheel(project / "dist", "app", "1.0", requires=wheel_requires)
    said: list[str] = []
    pins = choose_pins(cfg, wheel, list(wheel_requires), TARGET, cache, said.append, False, False, (), None, ahead)
    if ahead is not None:
        ahead.wait()
    return {p.name: p.version for p in pins}, said


def test_a_new_projects_dependencies_are_resolved_once_while_its_wheel_builds(links: Path, tmp_path: Path, resolutions: list[list[str]]) -> None:
    project = _project(tmp_path, '["left", "six >= 1.0"]')
    pins, said = _pins(project, ("left", "six>=1.0"), Cache(tmp_path / "cache"))  # the backend's own spelling
    assert pins == {"left": "1.0", "six": "1.16.0"}
    assert resolutions == [["left", "six >= 1.0"]]  # pyproject.toml's lines, before the wheel existed; not again
    assert any("resolving dependencies" in line for line in said)
    assert "requires-digest = " in (project / "pylock.pyimage.toml").read_text()


def test_an_unchanged_project_starts_nothing_and_a_bump_starts_it_again(links: Path, tmp_path: Path, resolutions: list[list[str]]) -> None:
    cache = Cache(tmp_path / "cache")
    project = _project(tmp_path, '["six"]')
    _pins(project, ("six",), cache)
    cfg = load_config(project)
    assert resolve_ahead(cfg, TARGET, cache, False, False, None) is None  # the lock records what pyproject.toml asks
    assert _pins(project, ("six",), cache)[0] == {"six": "1.17.0"} and len(resolutions) == 1  # the lock, no resolver
    _project(tmp_path, '["six==1.16.0"]')
    pins, _ = _pins(project, ("six==1.16.0",), cache)
    assert pins == {"six": "1.16.0"} and resolutions[1:] == [["six==1.16.0"]]


def test_a_wheel_asking_otherwise_than_pyproject_is_resolved_from_the_wheel(links: Path, tmp_path: Path, resolutions: list[list[str]]) -> None:
    """A backend that does not copy the static dependencies (PEP 621 says it must): the wheel decides."""
    project = _project(tmp_path, '["six==1.16.0"]')
    pins, said = _pins(project, ("six==1.17.0",), Cache(tmp_path / "cache"))
    assert pins == {"six": "1.17.0"}
    assert sorted(r[0] for r in resolutions) == sorted(["six==1.16.0", str(project / "dist" / "app-1.0-py3-none-any.whl")])
    assert sum("resolving dependencies" in line for line in said) == 1  # the one that was used


def test_selected_extras_are_asked_as_the_wheel_asks_them(links: Path, tmp_path: Path, resolutions: list[list[str]]) -> None:
    project = _project(tmp_path, '["six"]', '[project.optional-dependencies]\nlr = ["left", "right"]\nother = ["newpy"]\n')
    wheel = ("six", 'left; extra == "lr"', 'right ; extra == "lr"', 'newpy; extra == "other"')
    with pytest.raises(BuildError):  # left pins six 1.16.0, right (through middle) 1.17.0
        _pins(project, wheel, Cache(tmp_path / "cache"), extras=("lr",))
    assert resolutions[0] == ["six", "left", "right"]  # the selected extra's lines, not the other's
    assert len(resolutions) == 2  # a failed one is left: the build's own resolution says it, in its place
    project = _project(tmp_path, '["six"]', '[project.optional-dependencies]\nl = ["left"]\nother = ["newpy"]\n')
    pins, _ = _pins(project, ("six", 'left; extra == "l"', 'newpy; extra == "other"'), Cache(tmp_path / "cache2"), extras=("l",))
    assert pins == {"left": "1.0", "six": "1.16.0"} and resolutions[2:] == [["six", "left"]]  # taken: uv ran once


def test_a_failure_says_what_the_build_would_have_said(links: Path, tmp_path: Path) -> None:
    errors = []
    for ahead in (True, False):
        project = _project(tmp_path / str(ahead), '["nosuchthing"]')
        with pytest.raises(BuildError) as err:
            _pins(project, ("nosuchthing",), Cache(tmp_path / f"cache-{ahead}"), ahead_too=ahead)
        errors.append((str(err.value), err.value.hint))
    assert errors[0] == errors[1] and "nosuchthing" in errors[0][0]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param('dynamic = ["dependencies"]\n', id="dynamic"),
        pytest.param('[project.optional-dependencies]\nall = ["app[x]"]\n', id="names-itself"),
        pytest.param('[tool.uv.sources]\nsix = { path = "../six" }\n', id="path-source"),
    ],
)
def test_nothing_is_started_where_pyproject_cannot_say(extra: str, links: Path, tmp_path: Path) -> None:
    project = _project(tmp_path, '["six"]', extra)
    cfg = load_config(project, {"extras": ["all"]} if "all" in extra else None)
    assert resolve_ahead(cfg, TARGET, Cache(tmp_path / "cache"), False, False, None) is None


def test_static_requires_reads_only_what_a_backend_must_copy(tmp_path: Path) -> None:
    project = _project(tmp_path, '["six", "left>=1"]', '[project.optional-dependencies]\nx = ["right"]\n')
    assert static_requires(project, ()) == ("six", "left>=1")
    assert static_requires(project, ("X",)) == ("six", "left>=1", "right")
    assert static_requires(project, ("nope",)) is None  # the build says so, naming the extras there are
    (project / "pyproject.toml").write_text("[project\n")
    assert static_requires(project, ()) is None  # said where the wheel is built


def test_declared_digest_is_what_applies_on_the_target_however_it_is_spelt() -> None:
    a = declared_digest(["six>=1.0,<2 ; python_version < '4'", "left[x]", 'newpy; extra == "other"', "tomli; python_version < '3.11'"], ["x"], TARGET)
    b = declared_digest(['six <2, >=1.0; python_version<"4"', "left [x]"], ["x"], TARGET)
    assert a == b and a
    assert declared_digest(["six>=1.0,<2", "left[x]"], ["x"], TARGET) == a
    assert declared_digest(["six>=1.0,<3", "left[x]"], ["x"], TARGET) != a
    assert declared_digest(['six>=1.0,<2', "left[x]", 'newpy; extra == "other"'], ["other"], TARGET) != a
    assert declared_digest(["six >>> 1"], [], TARGET) == ""


def test_a_lock_from_before_the_digest_is_trusted_and_one_for_another_platform_is_not(links: Path, tmp_path: Path) -> None:
    from pyimage.resolve.lock import write_lock
    from pyimage.resolve.pip import Pin

    project = _project(tmp_path, '["six==1.16.0"]')
    cfg = load_config(project)
    cache = Cache(tmp_path / "cache")
    six = Pin("six", "1.17.0", "six-1.17.0-py2.py3-none-any.whl", "https://example.invalid/six.whl", "0" * 64)
    write_lock(project / "pylock.pyimage.toml", [six], "inputs", TARGET)  # as pyimage wrote it before 2026-11-25
    assert resolve_ahead(cfg, TARGET, cache, False, False, None) is None  # its inputs decide, after the wheel
    ahead = resolve_ahead(cfg, TARGET, cache, True, False, None)  # `pyimage lock`: it resolves in any case
    assert ahead is not None
    ahead.wait()
    arm64 = Target("3.11", Platform.parse("linux/arm64"), "glibc", "2.36")
    other = resolve_ahead(cfg, arm64, cache, False, False, None)  # no entry for arm64: it will resolve
    assert other is not None
    other.wait()
