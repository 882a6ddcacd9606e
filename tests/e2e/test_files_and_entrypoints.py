"""What a new user meets first (a trial with a Django project): `files = [{src = ".", dest = "/app/"}]` leaves
out what is never app content and says when it ships what looks like a secret; a typo'd entrypoint is one error
before layer work; a non-root user without compile-bytecode gets a hint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.runc import run_image

from .conftest import Pyimage, copy_example

pytestmark = pytest.mark.e2e


def _blobs(cache: Path) -> set[str]:
    blobs = cache / "blobs" / "sha256"
    return {p.name for p in blobs.iterdir()} if blobs.is_dir() else set()


def test_src_dot_leaves_out_vcs_venv_caches_and_the_previous_image_and_names_secrets(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    pyimage.build(project, project / "dist" / "image")  # the previous image, where the default output goes
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(project / ".venv")], check=True)  # bin/python points out
    (project / ".env").write_text("SECRET_KEY=do-not-ship\n")
    (project / "db.sqlite3").write_text("local data\n")
    (project / "src" / "hello_cli" / "__pycache__").mkdir(exist_ok=True)
    (project / "src" / "hello_cli" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (project / "static").mkdir()
    (project / "static" / "site.css").write_text("body {}\n")
    (project / "static" / "notes.txt").write_text("draft\n")
    (project / ".dockerignore").write_text("db.sqlite3\nstatic/*\n!static/*.css\n")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + 'files = [{ src = ".", dest = "/app/" }]\nuser = "app"\n')

    report = pyimage.build(project, tmp_path / "out")
    code = "import pathlib; print(sorted(str(p.relative_to('/app')) for p in pathlib.Path('/app').rglob('*') if p.is_file()))"
    shipped = eval(run_image(tmp_path / "out", "test", args=["/opt/venv/bin/python", "-c", code]).stdout)  # a list literal
    assert ".env" in shipped and "static/site.css" in shipped and "pyproject.toml" in shipped
    for gone in (".git/", ".venv/", "dist/", "__pycache__/", "db.sqlite3", "static/notes.txt"):
        assert not any(p.startswith(gone) or f"/{gone}" in p or p == gone for p in shipped), (gone, shipped)
    files_layer = next(l for l in report["layers"] if l["name"] == "files")
    assert files_layer["uncompressed_size"] < 64 << 10  # not the previous image's blobs
    notes = " ".join(report["notes"])
    assert "/app/.env" in notes and ".dockerignore" in notes and "do-not-ship" not in notes
    assert "compile-bytecode = true" in notes  # user app cannot write .pyc files


def test_exclude_prunes_a_uv_venv_before_its_symlinks_are_checked(pyimage: Pyimage, tmp_path: Path) -> None:
    """A venv copied under a name the built-in rules do not know and without pyvenv.cfg: `exclude` must prune it."""
    project = copy_example("hello-cli", tmp_path)
    (project / "venv-copy" / "bin").mkdir(parents=True)
    (project / "venv-copy" / "bin" / "python").symlink_to(sys.executable)
    pyproject = project / "pyproject.toml"
    base = pyproject.read_text()
    pyproject.write_text(base + 'files = [{ src = ".", dest = "/app/" }]\n')
    done = pyimage.run("plan", project=project, check=False)
    assert done.returncode == 2 and "venv-copy/bin/python points outside the project" in done.stderr
    for exclude in ('["venv-copy"]', '["venv-copy/*", "venv-copy/**"]'):
        pyproject.write_text(base + f'files = [{{ src = ".", dest = "/app/", exclude = {exclude} }}]\n')
        pyimage.run("plan", project=project)


def test_a_typod_entrypoint_is_one_error_before_layer_work_with_a_suggestion(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    cache = tmp_path / "fresh-cache"
    fresh = Pyimage(cache, pyimage.base)
    fresh.run("plan", project=project)  # resolves and loads the base: no layer work
    before = _blobs(cache)
    done = fresh.run("build", "-o", f"oci:{tmp_path / 'out'}", "--set", 'entrypoint=["helo", "--name", "x"]', project=project, check=False)
    assert done.returncode == 2, done.stderr
    error, hint = done.stderr.strip().splitlines()[-2:]
    assert error.startswith("error: entrypoint = ") and "'helo'" in error and "hello" in error
    assert hint.startswith("hint:") and 'did you mean "hello"?' in hint
    assert _blobs(cache) == before and not (tmp_path / "out").exists()  # no layer was built
    done = fresh.run("plan", "--set", 'entrypoint=["/usr/bin/pyhton3"]', project=project, check=False)
    assert done.returncode == 2 and "/usr/bin/pyhton3 is in neither the venv" in done.stderr


@pytest.mark.parametrize(
    "entrypoint",
    ['["hello"]', '["python", "-m", "hello_cli"]', '["python3.11"]', '["sh", "-c", "hello"]', '["/bin/sh", "-c", "hello"]', '["/opt/venv/bin/hello"]', '["/usr/bin/python3"]'],
)
def test_entrypoints_the_image_holds_pass_the_check(pyimage: Pyimage, tmp_path: Path, entrypoint: str) -> None:
    """The venv's scripts and interpreter links, the base's programs on PATH, and absolute paths through the base's
    symlinks (/bin -> usr/bin, python3 -> python3.11)."""
    project = copy_example("hello-cli", tmp_path)
    pyimage.run("plan", "--set", f"entrypoint={entrypoint}", project=project)


def test_python_m_in_a_package_project_is_checked_where_the_working_directory_is_known(pyimage: Pyimage, tmp_path: Path) -> None:
    """The app wheel's module is in site-packages; a module that is not is refused when pyimage sets the
    WorkingDir (then every file there is known) and when the base's is / (its scan knows the names there: a
    new-user trial's typo built and failed only in `docker run`); a package needs its __main__.py."""
    project = copy_example("hello-cli", tmp_path)
    pyimage.run("plan", "--set", 'entrypoint=["python", "-m", "hello_cli"]', "--set", "workdir=/srv", project=project)
    for workdir in ("/srv", None):
        done = pyimage.run("plan", "--set", 'entrypoint=["python", "-m", "hello_clj"]', *(["--set", f"workdir={workdir}"] if workdir else []), project=project, check=False)
        assert done.returncode == 2 and "no module 'hello_clj' in the image" in done.stderr, done.stderr
        assert "did you mean 'hello_cli'?" in done.stderr
    assert "the working directory / (the base's" in done.stderr
    (project / "src" / "hello_cli" / "__main__.py").unlink()
    done = pyimage.run("plan", "--set", 'entrypoint=["python", "-m", "hello_cli"]', project=project, check=False)
    assert done.returncode == 2 and "hello_cli is a package with no __main__.py" in done.stderr, done.stderr


def test_a_checked_entrypoint_through_the_bases_symlinks_runs(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    pyimage.build(project, tmp_path / "out", "test", "--set", 'entrypoint=["/bin/sh", "-c", "exec hello"]')
    assert "hello, world" in run_image(tmp_path / "out", "test").stdout


def test_command_is_checked_when_nothing_else_is_the_entrypoint(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('[project.scripts]\nhello = "hello_cli:main"\n', ""))
    done = pyimage.run("plan", "--set", 'command=["pyhton", "-m", "hello_cli"]', project=project, check=False)
    assert done.returncode == 2 and "error: command = " in done.stderr and 'did you mean "python"?' in done.stderr
    pyimage.run("plan", "--set", 'command=["python", "-m", "hello_cli"]', project=project)


@pytest.mark.parametrize(("command", "noted"), [('["python", "-m", "hello_cli"]', True), ('["/bin/sh", "-c", "env"]', True), ('["--name", "you"]', False), ('["serve"]', False)])
def test_a_program_in_command_behind_the_console_script_gets_a_note(pyimage: Pyimage, tmp_path: Path, command: str, noted: bool) -> None:
    """A new-user trial: `command = ["uvicorn", "app:app"]` (a Dockerfile's CMD habit) on a package with a console
    script ran `/opt/venv/bin/app uvicorn app:app`. Arguments for the script (`--name you`, a subcommand) stay quiet."""
    project = copy_example("hello-cli", tmp_path)
    done = pyimage.run("plan", "--json", "--set", f"command={command}", project=project)
    notes = [n for n in json.loads(done.stdout)["notes"] if "is passed to the entrypoint" in n]
    assert bool(notes) == noted, notes
    if noted:
        assert notes[0].startswith(f"command = {json.dumps(json.loads(command))} is passed to the entrypoint, /opt/venv/bin/hello, as its arguments")
        assert notes[0].endswith(f"set entrypoint = {json.dumps(json.loads(command))} instead")


def test_a_console_script_naming_no_function_is_one_error_before_layer_work(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('hello = "hello_cli:main"', 'hello = "hello_cli:mian"'))
    done = pyimage.run("plan", project=project, check=False)
    assert done.returncode == 2, done.stderr
    assert "[project.scripts] hello = 'hello_cli:mian': hello_cli defines no 'mian'" in done.stderr
    assert "did you mean hello_cli:main?" in done.stderr
