"""Projects that are not packages (resolve/appsource.py): which projects count, what their dependencies are, which
of their files the app layer takes, and the entrypoint pyimage suggests. Real directories, no mocks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyimage.errors import ConfigError
from pyimage.layers.runtime import collect_files
from pyimage.resolve.appsource import app_source, entrypoint_guess, is_package, tree_entries

HATCH = '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'


@pytest.mark.parametrize(
    ("pyproject", "extra_file", "package"),
    [
        ('[project]\nname = "a"\nversion = "0"\n', None, False),  # uv init --app: no [build-system]
        (None, None, False),  # only requirements.txt and code
        ('[tool.pyimage]\nentrypoint = ["python", "main.py"]\n', None, False),
        (HATCH + '[project]\nname = "a"\nversion = "0"\n', None, True),
        (HATCH + '[project]\nname = "a"\nversion = "0"\n[tool.uv]\npackage = false\n', None, False),  # uv's own switch wins
        ('[project]\nname = "a"\nversion = "0"\n[tool.uv]\npackage = true\n', None, True),
        ('[project]\nname = "a"\nversion = "0"\n', "setup.py", True),  # setuptools' legacy backend builds it
        (None, "setup.cfg", True),
    ],
)
def test_what_is_a_package_follows_uv(tmp_path: Path, pyproject: str | None, extra_file: str | None, package: bool) -> None:
    if pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(pyproject)
    if extra_file:
        (tmp_path / extra_file).write_text("")
    (tmp_path / "requirements.txt").write_text("six\n")
    assert is_package(tmp_path) is package


def test_dependencies_and_selected_extras_are_the_requirements(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "My_Site"\nversion = "2.1"\ndependencies = ["attrs>=23", "six"]\n'
        '[project.optional-dependencies]\nPostgres = ["psycopg", "six"]\nredis = ["redis"]\n'
    )
    source = app_source(tmp_path, ("postgres",))
    assert (source.name, source.version) == ("my-site", "2.1")
    assert source.requires == ("attrs>=23", "six", "psycopg")
    with pytest.raises(ConfigError, match="no extra 'mysql'.*Postgres, redis"):
        app_source(tmp_path, ("mysql",))


def test_name_and_version_default_to_the_directory_and_0(tmp_path: Path) -> None:
    project = tmp_path / "My Site!"
    project.mkdir()
    source = app_source(project, ())
    assert (source.name, source.version, source.requires) == ("my-site", "0", ())


@pytest.mark.parametrize(
    ("project", "message"),
    [
        ('dynamic = ["dependencies"]', "dependencies are dynamic"),
        ('dependencies = "six"', "must be a list"),
        ('dependencies = ["six >=> 1"]', "not a valid requirement"),
    ],
)
def test_dependencies_no_backend_can_read_are_one_error(tmp_path: Path, project: str, message: str) -> None:
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "a"\nversion = "0"\n{project}\n')
    with pytest.raises(ConfigError, match=message):
        app_source(tmp_path, ())


def test_the_tree_is_copied_to_workdir_without_vcs_venvs_caches_or_outputs(tmp_path: Path) -> None:
    for rel in ("manage.py", "mysite/__init__.py", "mysite/settings.py", "polls/views.py", "templates/polls/index.html", "static/app.css", "requirements.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    for rel in (".git/HEAD", "polls/__pycache__/views.cpython-311.pyc", "mysite/settings.pyc", "dist/image/oci-layout", "pylock.pyimage.toml", "out/img.tar", "out/keep.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("never")
    env = tmp_path / "env"  # a venv of any name, its python a link out of the project (collect_files refuses those)
    (env / "bin").mkdir(parents=True)
    (env / "pyvenv.cfg").write_text("home = /usr/bin\n")
    os.symlink("/usr/bin/python3", env / "bin" / "python")
    (tmp_path / ".venv").mkdir()
    os.symlink("/usr/bin/python3", tmp_path / ".venv" / "python")

    files = collect_files(tmp_path, tree_entries(tmp_path, "/app", [tmp_path / "out" / "img.tar"]))

    assert [f.dest for f in files] == [
        "app/manage.py", "app/mysite/__init__.py", "app/mysite/settings.py", "app/out/keep.txt", "app/polls/views.py",
        "app/requirements.txt", "app/static/app.css", "app/templates/polls/index.html",
    ]
    assert all(f.source.read_text() != "never" for f in files if f.dest != "app/out/keep.txt")


def test_a_name_with_glob_characters_is_copied_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "[weird]").mkdir()
    (tmp_path / "[weird]" / "a.txt").write_text("a")
    (tmp_path / "w").write_text("w")  # what `[weird]` would match as a pattern
    files = collect_files(tmp_path, tree_entries(tmp_path, "/srv/app", []))
    assert [f.dest for f in files] == ["srv/app/[weird]/a.txt", "srv/app/w"]


@pytest.mark.parametrize(
    ("files", "requirements", "expected"),
    [
        (["manage.py", "mysite/wsgi.py"], "django\ngunicorn==22.0\n", ["gunicorn", "--bind", "0.0.0.0:8000", "mysite.wsgi"]),
        (["manage.py", "mysite/wsgi.py"], "django\n", ["python", "manage.py", "runserver", "0.0.0.0:8000"]),
        (["web.py", "main.py"], "", ["python", "main.py"]),
        (["app.py"], "flask\n", ["python", "app.py"]),
        (["tool.py"], "", ["python", "tool.py"]),
        (["app/__init__.py", "app/__main__.py"], "", ["python", "-m", "app"]),
        (["main.py", "worker/__main__.py", "tests/__main__.py"], "", ["python", "-m", "worker"]),
        (["README.md", "app/__init__.py"], "", None),
        (["README.md"], "flask\n", None),
    ],
)
def test_the_suggested_entrypoint_comes_from_the_project_files(tmp_path: Path, files: list[str], requirements: str, expected: list[str] | None) -> None:
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    if requirements:
        (tmp_path / "requirements.txt").write_text(requirements)
    assert entrypoint_guess(tmp_path) == expected


FLASK_APP = "from flask import Flask\n\napp = Flask(__name__)\n\n@app.get('/')\ndef index():\n    return 'hi'\n"
FASTAPI_APP = "import fastapi\napi = fastapi.FastAPI()\n"


@pytest.mark.parametrize(
    ("files", "requirements", "expected"),
    [
        # a Flask app with no __main__ block: `python app.py` would import it and exit at once (new-user trial)
        ({"app.py": FLASK_APP}, "flask\ngunicorn\n", ["gunicorn", "--bind", "0.0.0.0:8000", "app:app"]),
        ({"app.py": FLASK_APP}, "flask\n", ["flask", "--app", "app:app", "run", "--host", "0.0.0.0", "--port", "8000"]),
        ({"app.py": FLASK_APP + "\nif __name__ == '__main__':\n    app.run()\n"}, "flask\n", ["python", "app.py"]),
        ({"wsgi.py": "from shop import create_app\napplication = create_app()\n", "shop/__init__.py": ""}, "flask\ngunicorn\n", ["gunicorn", "--bind", "0.0.0.0:8000", "wsgi:application"]),
        ({"main.py": FASTAPI_APP}, "fastapi\nuvicorn\n", ["uvicorn", "--host", "0.0.0.0", "--port", "8000", "main:api"]),
        ({"main.py": "from fastapi import FastAPI\napp: FastAPI = FastAPI(title='x')\n"}, "fastapi\nuvicorn\n", ["uvicorn", "--host", "0.0.0.0", "--port", "8000", "main:app"]),
        ({"main.py": "print('a script')\n"}, "flask\ngunicorn\n", ["python", "main.py"]),
    ],
)
def test_a_web_app_is_guessed_to_run_under_the_server_it_depends_on(tmp_path: Path, files: dict[str, str], requirements: str, expected: list[str]) -> None:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "requirements.txt").write_text(requirements)
    assert entrypoint_guess(tmp_path) == expected


def test_the_guess_follows_requirement_includes_within_the_project(tmp_path: Path) -> None:
    """New-user trial: gunicorn only in requirements/prod.txt (`requirements.txt: -r requirements/prod.txt`) gave
    Django's development server as the guess."""
    for rel in ("manage.py", "mysite/wsgi.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "base.txt").write_text("django\n-r base.txt\n")  # a loop is read once
    (tmp_path / "requirements" / "prod.txt").write_text("--requirement=base.txt\n# served by\ngunicorn==23.0  # pinned\n")
    (tmp_path / "requirements.txt").write_text("-r requirements/base.txt\n")
    assert entrypoint_guess(tmp_path) == ["python", "manage.py", "runserver", "0.0.0.0:8000"]
    (tmp_path / "requirements.txt").write_text("-r requirements/prod.txt\n")
    assert entrypoint_guess(tmp_path) == ["gunicorn", "--bind", "0.0.0.0:8000", "mysite.wsgi"]
    outside = tmp_path.parent / "elsewhere.txt"  # never read: not the project's
    outside.write_text("gunicorn\n")
    (tmp_path / "requirements.txt").write_text(f"-r {outside}\n-r ../elsewhere.txt\n")
    assert entrypoint_guess(tmp_path) == ["python", "manage.py", "runserver", "0.0.0.0:8000"]


def test_the_package_named_like_the_project_is_the_one_run_with_python_m(tmp_path: Path) -> None:
    for rel in ("admin/__main__.py", "shop/__main__.py", "main.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    assert entrypoint_guess(tmp_path, (), "shop") == ["python", "-m", "shop"]
    assert entrypoint_guess(tmp_path) == ["python", "-m", "admin"]


def test_the_projects_dockerignore_drops_top_level_names_of_the_tree(tmp_path: Path) -> None:
    """`.env` listed in .dockerignore stays out of the app layer, as it does of a `files` walk (found in review:
    each top-level name is its own entry, and a named path is taken as named)."""
    from pyimage.pipeline import _app_tree
    from pyimage.config import load_config

    (tmp_path / "pyproject.toml").write_text('[project]\nname = "site"\nversion = "0"\n\n[tool.pyimage]\nentrypoint = ["python", "main.py"]\n')
    (tmp_path / "main.py").write_text("print('hi')\n")
    (tmp_path / ".env").write_text("SECRET_KEY=hunter2\n")
    (tmp_path / "local_settings.py").write_text("DEBUG = True\n")
    (tmp_path / "node_modules" / "left-pad").mkdir(parents=True)
    (tmp_path / "node_modules" / "left-pad" / "index.js").write_text("\n")
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "site.css").write_text("body {}\n")
    (tmp_path / ".dockerignore").write_text(".env\nlocal_settings.py\nnode_modules\n")
    dests = sorted(f.dest for f in _app_tree(load_config(tmp_path)))
    assert dests == ["app/.dockerignore", "app/main.py", "app/pyproject.toml", "app/static/site.css"]
