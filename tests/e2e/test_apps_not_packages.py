"""Apps that are not packages, as people put them in Docker: a Django-like tree (manage.py, two top-level
packages, templates, requirements.txt) and what the real ``uv init --app --no-package`` writes. No wheel is built:
the app layer is the project's tree at /app, the dependencies come from requirements.txt or uv.lock. Each image
runs in runc and prints what its code, templates and dependencies say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.runc import free_port, run_image, start_image, wait_http

from .conftest import Pyimage

pytestmark = pytest.mark.e2e

MANAGE = """\
import sys

import six

from mysite.settings import SITE
from polls.views import index

if __name__ == "__main__":
    print(f"{SITE}: {index()} (six {six.__version__}) {sys.argv[1:]}")
"""
VIEWS = """\
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def index():
    return (TEMPLATES / "polls" / "index.html").read_text().strip()
"""


@pytest.fixture
def django_like(tmp_path: Path) -> Path:
    """The usual Docker layout: no pyproject.toml at all, a .git and a .venv beside the code (never copied)."""
    root = tmp_path / "mysite-app"
    files = {
        "manage.py": MANAGE,
        "mysite/__init__.py": "",
        "mysite/settings.py": 'SITE = "mysite"\n',
        "mysite/wsgi.py": "application = None\n",
        "polls/__init__.py": "",
        "polls/views.py": VIEWS,
        "templates/polls/index.html": "<h1>polls v1</h1>\n",
        "static/site.css": "body {}\n",
        "requirements.txt": "six==1.17.0\n",
        ".git/HEAD": "ref: refs/heads/main\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    os.symlink(sys.executable, root / ".venv" / "bin" / "python")  # points out of the project
    return root


def init(project: Path) -> subprocess.CompletedProcess[str]:
    """The real ``pyimage init`` (it takes no cache)."""
    return subprocess.run([sys.executable, "-m", "pyimage", "init", "--base", "python:3.12-slim", "-C", str(project)], check=True, capture_output=True, text=True)


def layers(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {layer["name"]: layer for layer in report["layers"]}


def test_django_like_layout_after_init_runs_from_app(pyimage: Pyimage, django_like: Path, tmp_path: Path) -> None:
    done = init(django_like)
    text = (django_like / "pyproject.toml").read_text()
    assert 'name = "mysite-app"' in text and 'version = "0"' in text and "[build-system]" not in text
    assert 'requirements = "requirements.txt"' in text
    guessed = ["python", "manage.py", "runserver", "0.0.0.0:8000"]  # no gunicorn in requirements.txt
    assert f"command = {json.dumps(guessed)}" in text and "entrypoint =" not in text
    assert "\nports = [8000]  #" in text and "ports = [8000]: the port the guessed command listens on" in done.stderr  # a trial: `docker run -P` published nothing
    assert "not built as a package" in done.stderr and "guessed from the project's files" in done.stderr

    report = pyimage.build(django_like, tmp_path / "img", "t")

    names = [layer["name"] for layer in report["layers"]]
    assert names[-2:] == ["site-packages", "app"] and layers(report)["site-packages"]["packages"] == ["six==1.17.0"]
    # `docker run IMAGE python manage.py hello` replaces the guessed Cmd, as under a Dockerfile's CMD (below: the config)
    assert "mysite: <h1>polls v1</h1> (six 1.17.0) ['hello']" in run_image(tmp_path / "img", "t", args=["python", "manage.py", "hello"]).stdout
    listing = run_image(tmp_path / "img", "t", args=["sh", "-c", "pwd; cd /app && find . -type f | sort"]).stdout.split()
    assert listing[0] == "/app"
    assert listing[1:] == [
        "./manage.py", "./mysite/__init__.py", "./mysite/settings.py", "./mysite/wsgi.py", "./polls/__init__.py", "./polls/views.py",
        "./pyproject.toml", "./requirements.txt", "./static/site.css", "./templates/polls/index.html",
    ]
    config = json.loads(subprocess.run(["skopeo", "inspect", "--config", f"oci:{tmp_path / 'img'}:t"], capture_output=True, text=True, check=True).stdout)
    assert config["config"]["WorkingDir"] == "/app" and config["config"]["Cmd"] == guessed and "Entrypoint" not in config["config"]
    assert config["config"]["ExposedPorts"] == {"8000/tcp": {}}


def test_a_code_or_template_change_rebuilds_only_the_app_layer(pyimage: Pyimage, django_like: Path, tmp_path: Path) -> None:
    init(django_like)
    before = layers(pyimage.build(django_like, tmp_path / "one", "t", "--set", 'entrypoint=["python", "manage.py"]'))
    (django_like / "templates" / "polls" / "index.html").write_text("<h1>polls v2</h1>\n")

    after = layers(pyimage.build(django_like, tmp_path / "two", "t", "--set", 'entrypoint=["python", "manage.py"]'))

    assert after["app"]["cached"] is False and after["app"]["digest"] != before["app"]["digest"]
    for unchanged in ("interpreter", "site-packages"):
        assert after[unchanged]["cached"] is True and after[unchanged]["digest"] == before[unchanged]["digest"], unchanged
    assert "mysite: <h1>polls v2</h1>" in run_image(tmp_path / "two", "t").stdout
    again = layers(pyimage.build(django_like, tmp_path / "three", "t", "--set", 'entrypoint=["python", "manage.py"]'))
    assert again["app"]["cached"] is True and again["app"]["digest"] == after["app"]["digest"]


def test_plan_shows_the_app_layer_files(pyimage: Pyimage, django_like: Path) -> None:
    init(django_like)
    plan = layers(json.loads(pyimage.run("plan", "--json", project=django_like).stdout))
    assert plan["app"]["file_count"] == 10 and plan["app"]["workdir"] == "/app"
    assert plan["app"]["installed_size"] == sum(p.stat().st_size for p in django_like.rglob("*") if p.is_file() and ".git" not in p.parts and ".venv" not in p.parts and p.name != "pylock.pyimage.toml")


def test_a_local_sqlite_database_in_the_tree_gets_a_note_and_dockerignore_leaves_it_out(pyimage: Pyimage, django_like: Path) -> None:
    """New-user trial: `manage.py migrate` on the developer's machine left db.sqlite3, shipped in /app without a word."""
    init(django_like)
    (django_like / "db.sqlite3").write_bytes(b"SQLite format 3\x00")
    done = pyimage.run("plan", "--json", project=django_like)
    (note,) = [n for n in json.loads(done.stdout)["notes"] if "local database" in n]
    assert note.startswith("the image holds what looks like a local database: /app/db.sqlite3; every container starts from this copy")
    (django_like / ".dockerignore").write_text("db.sqlite3\n")
    again = json.loads(pyimage.run("plan", "--json", project=django_like).stdout)
    assert not [n for n in again["notes"] if "local database" in n] and layers(again)["app"]["file_count"] == 11  # + .dockerignore


UV = [sys.executable, "-m", "uv"]


def test_uv_init_app_no_package_with_two_modules_installs_from_uv_lock(pyimage: Pyimage, tmp_path: Path) -> None:
    project = tmp_path / "hello-web"
    env = dict(os.environ, UV_NO_PROGRESS="1")
    subprocess.run([*UV, "init", "--app", "--no-package", "--vcs", "none", "--no-readme", str(project)], check=True, capture_output=True, text=True, env=env)
    subprocess.run([*UV, "add", "--no-sync", "attrs==25.3.0"], cwd=project, check=True, capture_output=True, text=True, env=env)
    assert "[build-system]" not in (project / "pyproject.toml").read_text() and (project / "uv.lock").is_file()
    (project / "web.py").write_text("import attrs\n\n@attrs.define\nclass Page:\n    title: str\n\ndef render():\n    return f'page {Page(\"home\").title} (attrs {attrs.__version__})'\n")
    (project / "main.py").write_text("from web import render\n\nif __name__ == '__main__':\n    print(render())\n")
    (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text().replace('requires-python = ">=3.12"', 'requires-python = ">=3.11"'))
    subprocess.run([*UV, "lock"], cwd=project, check=True, capture_output=True, text=True, env=env)

    done = init(project)
    assert 'command = ["python", "main.py"]' in (project / "pyproject.toml").read_text() and "wrote" not in done.stderr
    report = pyimage.build(project, tmp_path / "img", "t")

    assert layers(report)["site-packages"]["packages"] == ["attrs==25.3.0"]
    assert not (project / "pylock.pyimage.toml").exists()  # installed as uv.lock says, nothing resolved
    assert "page home (attrs 25.3.0)" in run_image(tmp_path / "img", "t").stdout


POETRY_APP = """\
[project]
name = "poetry-app"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = []

[tool.poetry]
package-mode = false
"""


@pytest.fixture
def poetry_app(tmp_path: Path) -> Path:
    """A Poetry 2 project with ``package-mode = false`` whose app is ``app/__main__.py`` (no main.py), as the trial met it."""
    root = tmp_path / "poetry-app"
    (root / "app").mkdir(parents=True)
    (root / "pyproject.toml").write_text(POETRY_APP)
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "__main__.py").write_text("print('poetry app runs')\n")
    (root / "tool.py").write_text("print('tool')\n")
    return root


def test_init_on_a_poetry_app_with_a_main_package_writes_python_m_and_the_image_runs(pyimage: Pyimage, poetry_app: Path, tmp_path: Path) -> None:
    init(poetry_app)
    text = (poetry_app / "pyproject.toml").read_text()
    assert 'command = ["python", "-m", "app"]' in text
    pyimage.build(poetry_app, tmp_path / "img", "t")
    assert "poetry app runs" in run_image(tmp_path / "img", "t").stdout


@pytest.mark.parametrize(
    ("entrypoint", "error"),
    [
        ('["python", "main.py"]', 'error: entrypoint = ["python", "main.py"]: main.py is not in the image: the app\'s files at /app hold no main.py'),
        ('["python3", "-u", "-X", "dev", "src/app.py"]', "src/app.py is not in the image"),
        ('["python", "-m", "worker"]', "error: entrypoint = [\"python\", \"-m\", \"worker\"]: no module 'worker' in the image: neither the venv's site-packages nor the app's files at /app hold it"),
        ('["/opt/venv/bin/python", "-m", "app.missing"]', "no module 'app.missing'"),
    ],
)
def test_python_running_a_file_or_module_the_image_lacks_is_refused_before_work(pyimage: Pyimage, poetry_app: Path, entrypoint: str, error: str) -> None:
    done = pyimage.run("plan", "--set", f"entrypoint={entrypoint}", project=poetry_app, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-2].startswith(error) if error.startswith("error:") else error in lines[-2]
    assert lines[-1].startswith('hint: fix entrypoint in [tool.pyimage] (or --set), e.g. entrypoint = ["python", "-m", "app"] (or ["python", "tool.py"])')


@pytest.mark.parametrize(
    "entrypoint",
    [
        '["python", "-m", "app"]', '["python", "tool.py"]', '["python", "./app/__main__.py"]', '["python3", "-X", "dev", "-m", "app"]',
        '["python", "-um", "app"]', '["python", "-c", "import nothere"]', '["python", "-m", "json.tool"]', '["python", "/usr/share/nothere.py"]',
        '["python", "--version"]', '["/opt/venv/bin/python", "-m", "app.__main__"]',
    ],
)
def test_python_running_what_the_image_holds_passes_the_check(pyimage: Pyimage, poetry_app: Path, entrypoint: str) -> None:
    pyimage.run("plan", "--set", f"entrypoint={entrypoint}", project=poetry_app)


def test_a_flask_app_without_main_is_served_by_gunicorn_as_init_guessed(pyimage: Pyimage, tmp_path: Path) -> None:
    """New-user trial: `init` guessed `python app.py` for a Flask app with no __main__ block, an image that exits
    at once. It now guesses the server the app depends on, and that command serves the app."""
    project = tmp_path / "shop"
    project.mkdir()
    (project / "app.py").write_text("import flask\n\napp = flask.Flask(__name__)\n\n\n@app.get('/')\ndef index():\n    return {'shop': 'open', 'flask': flask.__name__}\n")
    (project / "requirements.txt").write_text("flask\ngunicorn\n")
    done = init(project)
    guessed = ["gunicorn", "--bind", "0.0.0.0:8000", "app:app"]
    assert f"command = {json.dumps(guessed)}" in (project / "pyproject.toml").read_text(), done.stderr
    pyimage.build(project, tmp_path / "img", "t")
    config = json.loads(subprocess.run(["skopeo", "inspect", "--config", f"oci:{tmp_path / 'img'}:t"], capture_output=True, text=True, check=True).stdout)
    assert config["config"]["Cmd"] == guessed and "Entrypoint" not in config["config"]
    port = free_port()  # runc shares the host's network here: the guessed command, on a free loopback port
    with start_image(tmp_path / "img", "t", args=[*guessed[:2], f"127.0.0.1:{port}", *guessed[3:]]) as container:
        body = json.loads(wait_http(f"http://127.0.0.1:{port}/", timeout=60, container=container))
    assert body == {"shop": "open", "flask": "flask"}


@pytest.mark.parametrize("line", ["-e ./libs/shared", "./libs/shared", "shared @ file:./libs/shared"])
def test_a_local_directory_in_requirements_is_one_error_whose_fix_builds(pyimage: Pyimage, tmp_path: Path, line: str) -> None:
    """New-user trial: `-e ./libs/shared` in requirements.txt got a resolver's error with a mangled path. It is one
    error naming the line, and the declaration its hint gives builds an image with the package and its own
    dependencies (six, which requirements.txt does not list)."""
    project = tmp_path / "app"
    shared = project / "libs" / "shared"
    (shared / "src" / "shared").mkdir(parents=True)
    (shared / "pyproject.toml").write_text('[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n[project]\nname = "shared"\nversion = "0.1"\ndependencies = ["six"]\n')
    (shared / "src" / "shared" / "__init__.py").write_text('VALUE = "shared ok"\n')
    (project / "requirements.txt").write_text(f"{line}\nhumanize\n")
    (project / "main.py").write_text("import humanize, shared, six\nprint(shared.VALUE, humanize.intcomma(1000), six.__name__)\n")
    init(project)
    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'img'}:t", project=project, check=False)
    assert done.returncode == 2, done.stderr
    error, hint = done.stderr.strip().splitlines()[-2:]
    assert error.startswith(f"error: requirements.txt:1: {line!r} installs the directory ") and "cannot lock or fetch" in error
    assert hint == 'hint: declare it in pyproject.toml instead: add "shared" to [project] dependencies and [tool.uv.sources] shared = { path = "./libs/shared" } (pyimage builds it into the workspace layer, with its own dependencies), then remove this line'

    (project / "requirements.txt").write_text("humanize\n")  # as the hint says
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    assert "dependencies = []" in text
    pyproject.write_text(text.replace("dependencies = []", 'dependencies = ["shared"]', 1) + '\n[tool.uv.sources]\nshared = { path = "./libs/shared" }\n')
    report = pyimage.build(project, tmp_path / "img", "t")
    assert layers(report)["workspace"]["packages"] == ["shared==0.1"]
    assert run_image(tmp_path / "img", "t").stdout.split() == ["shared", "ok", "1,000", "six"]


def test_compile_bytecode_compiles_the_apps_own_tree_too(pyimage: Pyimage, django_like: Path, tmp_path: Path) -> None:
    """New-user trial: compile-bytecode compiled the dependencies but not the project's tree at /app, which a
    non-root user's Python cannot write into: every start compiled the app's modules again."""
    init(django_like)
    report = pyimage.build(django_like, tmp_path / "img", "t", "--set", "compile-bytecode=true", "--set", "user=1000", "--set", 'entrypoint=["python", "manage.py", "hello"]')
    probe = "import os, sys; print(sorted(os.listdir('/app/polls/__pycache__')), sys.flags.dont_write_bytecode)"
    listing = run_image(tmp_path / "img", "t", args=["/opt/venv/bin/python", "-c", probe]).stdout
    assert "'views.cpython-311.pyc'" in listing and "'__init__.cpython-311.pyc'" in listing, listing
    assert "mysite: <h1>polls v1</h1>" in run_image(tmp_path / "img", "t").stdout  # and the app runs from it
    plain = pyimage.build(django_like, tmp_path / "plain", "t", "--set", 'entrypoint=["python", "manage.py", "hello"]')
    assert layers(plain)["app"]["digest"] != layers(report)["app"]["digest"]  # without the setting: no .pyc, another layer
