"""A requirements file naming something of this machine (a directory, a wheel file) is refused before any work,
one error naming the line and what to write instead; anything else is left to the resolver."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyimage.errors import ConfigError
from pyimage.resolve.pins import _refuse_local_lines


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "libs" / "shared").mkdir(parents=True)
    (tmp_path / "libs" / "shared" / "pyproject.toml").write_text('[project]\nname = "Shared_Lib"\nversion = "1"\n')
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "six-1.17.0-py2.py3-none-any.whl").write_bytes(b"PK")
    (tmp_path / "dist" / "tool-2.0.tar.gz").write_bytes(b"gz")
    return tmp_path


@pytest.mark.parametrize(
    ("line", "says", "hint"),
    [
        ("-e ./libs/shared", "installs the directory ./libs/shared", '[tool.uv.sources] shared-lib = { path = "./libs/shared" }'),
        ("--editable=libs/shared", "installs the directory libs/shared", '[tool.uv.sources] shared-lib = { path = "libs/shared" }'),
        ("./libs/shared  # our lib", "installs the directory ./libs/shared", 'add "shared-lib" to [project] dependencies'),
        ("shared-lib @ file:./libs/shared", "installs the directory ./libs/shared", "shared-lib = { path"),
        ("./dist/six-1.17.0-py2.py3-none-any.whl", "installs the file ./dist/six-1.17.0-py2.py3-none-any.whl", "write six==1.17.0 on this line"),
        ("./dist/tool-2.0.tar.gz", "installs the file ./dist/tool-2.0.tar.gz", "write tool==2.0 on this line"),
        ("-e git+https://example.org/x.git#egg=x", None, None),
        ("./no/such/dir", None, None),
        ("humanize>=4", None, None),
    ],
)
def test_a_line_naming_this_machine_is_one_error_naming_it(project: Path, line: str, says: str | None, hint: str | None) -> None:
    text = f"attrs\n{line}\n"
    if says is None:
        _refuse_local_lines(project, "requirements.txt", text)
        return
    with pytest.raises(ConfigError) as err:
        _refuse_local_lines(project, "requirements.txt", text)
    assert err.value.message.startswith(f"requirements.txt:2: {line.split('  #')[0]!r} {says}"), err.value.message
    assert hint in err.value.hint, err.value.hint


@pytest.mark.parametrize("line", ["-e .", ".", "-e ./"])
@pytest.mark.parametrize("package", [False, True])
def test_the_project_itself_on_a_line_is_one_error_saying_to_remove_it(project: Path, line: str, package: bool) -> None:
    """A new-user trial: `-e .` in a Django app's requirements.txt got "add "mysite" to [project] dependencies", the
    project depending on itself."""
    build_system = '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n' if package else ""
    (project / "pyproject.toml").write_text(f'{build_system}[project]\nname = "mysite"\nversion = "0"\n')
    with pytest.raises(ConfigError) as err:
        _refuse_local_lines(project, "requirements.txt", f"django\n{line}\n")
    assert err.value.message == f"requirements.txt:2: {line!r} installs the project itself"
    assert err.value.hint.startswith("remove the line") and "mysite" not in err.value.hint
    assert ("app layer" in err.value.hint) == package and ("[build-system]" in err.value.hint) != package
