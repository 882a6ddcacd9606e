"""The real ``pyimage`` command on apps that are not packages, where no base, network or cache is needed: the
missing entrypoint is one error before any work, ``init`` writes what such an app needs and says so."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from test_cli_errors import assert_user_error, run


def app(tmp_path: Path, pyproject: str | None) -> Path:
    (tmp_path / "main.py").write_text("import web\nprint(web.PAGE)\n")
    (tmp_path / "web.py").write_text("PAGE = 'home'\n")
    if pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(pyproject)
    return tmp_path


@pytest.mark.parametrize("command", ["build", "plan"])
def test_no_entrypoint_is_one_error_before_any_work_naming_a_file_of_the_project(tmp_path: Path, command: str) -> None:
    # an unreachable registry base: reaching for it (any work at all) would be a different error
    project = app(tmp_path, '[project]\nname = "web"\nversion = "0"\ndependencies = ["six"]\n\n[tool.pyimage]\nbase = "127.0.0.1:9/none:1"\n')
    error, hint = assert_user_error(run([command], project))
    assert "not a package (no [build-system])" in error and "/app" in error
    assert 'command = ["python", "main.py"]' in hint
    assert not any((project / ".cache").rglob("*.whl")) and not (project / "pylock.pyimage.toml").exists()


def test_an_empty_command_with_nothing_else_to_run_is_one_error_before_any_work(tmp_path: Path) -> None:
    """New-user trial: `--set 'command=[]'` built an app that is not a package into an image Docker refused to run
    ("No command specified"), while `entrypoint = []` was refused."""
    project = app(tmp_path, '[project]\nname = "web"\nversion = "0"\n\n[tool.pyimage]\nbase = "127.0.0.1:9/none:1"\n')
    error, hint = assert_user_error(run(["build", "--set", "command=[]"], project))
    assert error == "error: command = []: it is empty and the project is not a package (no console script), so the image would have nothing to run"
    assert hint == 'hint: name the program, e.g. command = ["python", "main.py"] (run in /app)'


def test_console_scripts_without_a_build_system_say_what_makes_a_package(tmp_path: Path) -> None:
    project = app(tmp_path, '[project]\nname = "web"\nversion = "0"\n[project.scripts]\nweb = "web:main"\n\n[tool.pyimage]\nbase = "127.0.0.1:9/none:1"\n')
    error, hint = assert_user_error(run(["build"], project))
    assert "[project.scripts] is declared" in error and "[build-system]" in hint


def test_workdir_at_the_root_is_refused_before_work(tmp_path: Path) -> None:
    project = app(tmp_path, '[tool.pyimage]\nbase = "127.0.0.1:9/none:1"\nentrypoint = ["python", "main.py"]\nworkdir = "/"\n')
    error, hint = assert_user_error(run(["build"], project))
    assert "workdir = '/'" in error and "image's root" in error and '"/app"' in hint


def test_a_file_pointing_out_of_the_project_is_refused_before_work(tmp_path: Path) -> None:
    project = app(tmp_path, '[tool.pyimage]\nbase = "127.0.0.1:9/none:1"\nentrypoint = ["python", "main.py"]\n')
    (project / "secrets").symlink_to("/etc/passwd")
    error, hint = assert_user_error(run(["build"], project))
    # named as the app's tree, not as a `files` entry the user never wrote (a new-user trial saw "files[55]")
    assert error == f"error: the app's tree (copied to /app): {project / 'secrets'} points outside the project (/etc/passwd)"
    assert hint == "hint: remove it, or leave it out of the image with a .dockerignore line"


def test_init_in_a_requirements_txt_app_writes_a_minimal_project_and_explains(tmp_path: Path) -> None:
    project = tmp_path / "My Site"
    project.mkdir()
    app(project, None)
    (project / "requirements.txt").write_text("six==1.17.0\n")
    done = run(["init", "--base", "python:3.12-slim"], project)
    assert done.returncode == 0, done.stderr
    data = tomllib.loads((project / "pyproject.toml").read_text())
    assert data["project"] == {"name": "my-site", "version": "0", "dependencies": []}
    assert "build-system" not in data
    assert data["tool"]["pyimage"]["command"] == ["python", "main.py"]
    assert data["tool"]["pyimage"]["requirements"] == "requirements.txt"
    assert "not built as a package" in done.stderr and "requirements.txt" in done.stderr and "guessed" in done.stderr


def test_init_in_a_uv_app_keeps_its_dependencies_and_adds_the_command(tmp_path: Path) -> None:
    project = app(tmp_path, '[project]\nname = "web"\nversion = "0.1.0"\ndependencies = ["six"]\n')
    (project / "requirements.txt").write_text("six\n")  # [project] dependencies are the list: requirements.txt left alone
    assert run(["init", "--base", "python:3.12-slim"], project).returncode == 0
    data = tomllib.loads((project / "pyproject.toml").read_text())
    assert data["project"]["dependencies"] == ["six"] and "requirements" not in data["tool"]["pyimage"]
    assert data["tool"]["pyimage"]["command"] == ["python", "main.py"] and "ports" not in data["tool"]["pyimage"]  # listens on no port it names


@pytest.mark.parametrize(
    ("files", "requirements", "command"),
    [
        ({"manage.py": "", "site/wsgi.py": ""}, "django\n", ["python", "manage.py", "runserver", "0.0.0.0:8000"]),
        ({"main.py": "from fastapi import FastAPI\napp = FastAPI()\n"}, "fastapi\nuvicorn\n", ["uvicorn", "--host", "0.0.0.0", "--port", "8000", "main:app"]),
    ],
)
def test_init_exposes_the_port_a_guessed_server_listens_on(tmp_path: Path, files: dict[str, str], requirements: str, command: list[str]) -> None:
    """New-user trial: the guessed gunicorn bound 0.0.0.0:8000 and the image exposed nothing for `docker run -P`."""
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "requirements.txt").write_text(requirements)
    done = run(["init", "--base", "python:3.12-slim"], tmp_path)
    assert done.returncode == 0, done.stderr
    settings = tomllib.loads((tmp_path / "pyproject.toml").read_text())["tool"]["pyimage"]
    assert settings["command"] == command and settings["ports"] == [8000]


def test_init_never_guesses_a_file_that_is_not_there(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("six\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    done = run(["init", "--base", "python:3.12-slim"], tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "pyproject.toml").read_text()
    assert "command" not in tomllib.loads(text)["tool"]["pyimage"] and "main.py" not in text
    assert "no command guessed" in done.stderr
    (tmp_path / "pkg" / "__main__.py").write_text("")
    (tmp_path / "pyproject.toml").unlink()
    assert run(["init", "--base", "python:3.12-slim"], tmp_path).returncode == 0
    assert tomllib.loads((tmp_path / "pyproject.toml").read_text())["tool"]["pyimage"]["command"] == ["python", "-m", "pkg"]


def test_init_in_a_directory_with_nothing_python_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("")
    error, _hint = assert_user_error(run(["init"], tmp_path))
    assert "requirements.txt or *.py" in error
