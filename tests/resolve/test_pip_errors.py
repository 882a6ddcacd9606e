"""Resolution failures reported in the user's terms, from real pip runs against a find-links directory of real
wheels: a typo'd name, a version that does not exist, requirements that conflict, a local path dependency."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyimage.cache import Cache
from pyimage.errors import BuildError
from pyimage.oci.model import Platform
from pyimage.resolve.pip import resolve
from pyimage.resolve.target import Target
from wheels_fixture import make_wheel


TARGET = Target("3.11", Platform.parse("linux/amd64"), "glibc", "2.36")


def _app(links: Path, *requires: str) -> str:
    return str(make_wheel(links.parent / "app", "app", "1.0", requires=requires))


def _error(links: Path, tmp_path: Path, *requires: str) -> BuildError:
    with pytest.raises(BuildError) as err:
        resolve([_app(links, *requires)], TARGET, Cache(tmp_path / "cache"))
    return err.value


def test_resolution_for_a_newer_target_python_takes_the_release_that_needs_it(links: Path, tmp_path: Path) -> None:
    # The host runs 3.11; the target is 3.12. Only the target decides whether newpy 2.0 (Requires-Python >=3.12) fits.
    pins = resolve([_app(links, "newpy")], Target("3.12", TARGET.platform, "glibc", "2.36"), Cache(tmp_path / "cache"))
    assert {p.name: p.version for p in pins}["newpy"] == "2.0"
    pins = resolve([_app(links, "newpy")], TARGET, Cache(tmp_path / "cache"))
    assert {p.name: p.version for p in pins}["newpy"] == "1.0"


def test_a_typo_is_an_unknown_name_with_a_suggestion(links: Path, tmp_path: Path) -> None:
    err = _error(links, tmp_path, "reqeusts")
    assert err.message == "no package named 'reqeusts' on the configured indexes (required by app); did you mean 'requests'?"
    assert "compiler" not in err.hint and "[project] dependencies" in err.hint


def test_a_name_close_to_one_on_the_configured_find_links_is_suggested(links: Path, tmp_path: Path) -> None:
    assert "did you mean 'middle'?" in _error(links, tmp_path, "midle").message


def test_a_version_that_does_not_exist_lists_what_does(links: Path, tmp_path: Path) -> None:
    err = _error(links, tmp_path, "six>=2099.1")
    assert err.message.startswith("no version of six satisfies >=2099.1 (required by app) for CPython 3.11")
    assert err.message.endswith("available: 1.16.0, 1.17.0")
    assert "sdist" not in err.message and "compiler" not in err.hint


def test_a_version_only_for_another_python_says_so(links: Path, tmp_path: Path) -> None:
    err = _error(links, tmp_path, "newpy>=2")
    assert err.message.startswith("newpy requires Python >=3.12")
    assert err.message.endswith("but the target is CPython 3.11 on linux/amd64 (glibc 2.36)")


def test_conflicting_requirements_name_the_chain_on_each_side(links: Path, tmp_path: Path) -> None:
    err = _error(links, tmp_path, "left", "right")
    assert err.message.startswith("the dependencies conflict: ")
    assert "left 1.0 depends on six==1.16.0 (required by app==1.0)" in err.message
    assert "middle 1.0 depends on six==1.17.0 (required by right ← app==1.0)" in err.message
    assert "ResolutionImpossible" not in err.message


def test_a_local_path_dependency_is_refused_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dep = tmp_path / "localdep"
    (dep / "localdep").mkdir(parents=True)
    (dep / "localdep" / "__init__.py").write_text("")
    (dep / "pyproject.toml").write_text('[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n[project]\nname = "localdep"\nversion = "0.1"\n')
    app = make_wheel(tmp_path / "app", "app", "1.0", requires=(f"localdep @ {dep.as_uri()}",))
    with pytest.raises(BuildError) as err:
        resolve([str(app)], TARGET, Cache(tmp_path / "cache"))  # the machine's own pip configuration: hatchling comes from its index
    assert err.value.message.startswith(f"localdep is a local path dependency (localdep @ {dep.as_uri()})")
    assert "not a wheel" not in err.value.message and "report this" not in err.value.hint


def test_versions_for_another_python_are_grouped_by_the_python_they_need() -> None:
    """A new-user trial: pip's "Ignored the following versions" for Django listed 21 versions one by one."""
    from pyimage.resolve.diagnose import _by_python

    listed = "6.0 Requires-Python >=3.12; 6.0.1 Requires-Python >=3.12; 6.1.3 Requires-Python >=3.12; 6.0a1 Requires-Python >=3.12; 9.0 Requires-Python >=3.14"
    assert _by_python(listed) == "6.0a1 … 6.1.3 (4) need Python >=3.12; 9.0 needs Python >=3.14"
    assert _by_python("something else") == "something else"
