"""pyimage's lock is a PEP 751 named lock, `pylock.pyimage.toml`: a team's own `pylock.toml` (uv export, pip lock)
is never rewritten, and a `pylock.toml` pyimage wrote itself before moves to the new name."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Pyimage, copy_example

pytestmark = pytest.mark.e2e

FOREIGN = 'lock-version = "1.0"\ncreated-by = "uv"\nrequires-python = ">=3.10"\n\n[[packages]]\nname = "attrs"\nversion = "23.1.0"\n'


def test_a_teams_own_pylock_toml_is_left_byte_for_byte(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    (project / "pylock.toml").write_text(FOREIGN)
    pyimage.build(project, tmp_path / "layout")
    assert (project / "pylock.toml").read_text() == FOREIGN
    assert 'created-by = "pyimage"' in (project / "pylock.pyimage.toml").read_text()


def test_a_pylock_toml_pyimage_wrote_moves_to_its_own_name_without_resolving(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    pyimage.build(project, tmp_path / "layout")
    ours = (project / "pylock.pyimage.toml").read_text()
    (project / "pylock.pyimage.toml").rename(project / "pylock.toml")  # as an earlier pyimage left it
    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}", project=project)
    assert "moves from pylock.toml to pylock.pyimage.toml" in done.stderr
    assert "resolving dependencies" not in done.stderr
    assert not (project / "pylock.toml").exists() and (project / "pylock.pyimage.toml").read_text() == ours


def test_pointing_lock_at_another_tools_file_is_one_error(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    (project / "pylock.toml").write_text(FOREIGN)
    done = pyimage.run("build", "--set", "lock=pylock.toml", "-o", f"oci:{tmp_path / 'out'}", project=project, check=False)
    assert done.returncode == 2
    error, hint = done.stderr.strip().splitlines()[-2:]
    assert error.endswith("pylock.toml was not written by pyimage (another tool's lock); pyimage never overwrites it")
    assert hint.startswith("hint:") and "pylock.pyimage.toml" in hint
    assert (project / "pylock.toml").read_text() == FOREIGN
