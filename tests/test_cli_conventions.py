"""Command-line conventions a user brings from other tools: results on stdout (to pipe or redirect), progress
and notes on stderr; ``--debug`` anywhere; the project directory as a positional argument."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from test_cli_errors import make_project as _make_project, pyimage_script, run


def make_project(path: Path, body: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return _make_project(path, body)


def test_debug_after_the_subcommand_shows_the_traceback(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", "max_layers = 20")
    result = run(["plan", "-C", str(project), "--debug"], tmp_path)
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-2].startswith("error: ") and result.stderr.splitlines()[-1].startswith("hint: ")


def test_debug_after_a_double_dash_is_not_an_option(tmp_path: Path) -> None:
    result = run(["cache", "info", "--", "--debug"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["build", "plan", "lock"])
def test_the_project_directory_can_be_given_as_an_argument(tmp_path: Path, command: str) -> None:
    project = make_project(tmp_path / "elsewhere", "max_layers = 20")
    result = run([command, str(project)], tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-2].startswith(f"error: {project / 'pyproject.toml'}:")


def test_two_different_project_directories_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    result = run(["build", str(tmp_path / "a"), "-C", str(tmp_path / "b")], tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-2].startswith("error: two project directories")


def test_cache_info_prints_its_table_on_stdout(tmp_path: Path) -> None:
    result = run(["cache", "info"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "entry" in result.stdout and "blobs" in result.stdout
    as_json = run(["cache", "info", "--json"], tmp_path)
    assert json.loads(as_json.stdout)["blobs"] == 0 and as_json.stderr == ""


def _commands() -> list[tuple[str, ...]]:
    import typer.main

    from pyimage.cli import app

    found: list[tuple[str, ...]] = []

    def walk(group: Any, path: tuple[str, ...]) -> None:  # typer's own click (vendored since 0.22)
        if hasattr(group, "commands"):
            for name, sub in group.commands.items():
                walk(sub, (*path, name))
        else:
            found.append(path)

    walk(typer.main.get_command(app), ())
    return found


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_every_option_help_is_shown_whole(command: tuple[str, ...], tmp_path: Path) -> None:
    """`--set`'s help lost "[tool.pyimage]" to rich markup (new-user trial): every option's text, as written, is
    in the rendered help."""
    import typer.main

    from pyimage.cli import app

    cmd: Any = typer.main.get_command(app)
    for name in command:
        cmd = cmd.commands[name]
    env = {**os.environ, "COLUMNS": "1000", "PYIMAGE_CACHE_DIR": str(tmp_path / ".cache")}
    shown = subprocess.run([pyimage_script(), *command, "--help"], env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    for param in cmd.params:
        text = getattr(param, "help", None)
        if text:
            assert text.replace("\\[", "[") in shown, (param.name, text)
