"""Habits users bring from docker and other tools, run through the real CLI on the offline tiny project:
``-t NAME:TAG``, docker build flags pyimage has no use for, a base written as a bare path, a misspelt
``[tool.pyimage]``, running from a subdirectory, and ``--json`` with progress."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from support.tiny import assert_one_error, run_pyimage, tiny_base, tiny_project


def _project(tmp_path: Path, **kw: str) -> tuple[Path, Path]:
    base = tiny_base(tmp_path / "base")
    return tiny_project(tmp_path / "p", tool=f'base = "{base}"\n' + kw.get("tool", "")), tmp_path / "cache"


def test_tag_names_the_layout_tag_and_the_archive_as_docker_build_t_does(tmp_path: Path) -> None:
    project, cache = _project(tmp_path)
    done = run_pyimage("build", "-C", str(project), "-t", "myapp:dev", "-t", "myapp:also", "-o", f"oci:{tmp_path / 'img'}", "-o", f"docker-archive:{tmp_path / 'a.tar'}", cache=cache)
    assert done.returncode == 0, done.stderr
    tags = [m["annotations"]["org.opencontainers.image.ref.name"] for m in json.loads((tmp_path / "img" / "index.json").read_text())["manifests"]]
    assert tags == ["dev"]
    with tarfile.open(tmp_path / "a.tar") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest[0]["RepoTags"] == ["myapp:dev"]
    assert "add --load to load it into your engine as myapp:dev" in done.stderr
    # A name alone is NAME:latest, as `docker build -t myapp` (so `docker run myapp` finds it).
    bare = run_pyimage("build", "-C", str(project), "-t", "myapp", "-o", f"docker-archive:{tmp_path / 'b.tar'}", cache=cache)
    assert bare.returncode == 0, bare.stderr
    assert f"wrote docker-archive:{tmp_path / 'b.tar'}:myapp:latest" in bare.stdout


def test_a_bad_tag_is_one_error_before_any_work(tmp_path: Path) -> None:
    project, cache = _project(tmp_path)
    assert_one_error(run_pyimage("build", "-C", str(project), "-t", "MyApp:dev", cache=cache), 2, "-t 'MyApp:dev'")
    # the tag part too (a new-user trial: written into layouts skopeo refused, and Docker's 500 on --load)
    assert_one_error(run_pyimage("build", "-C", str(project), "-t", "myapp:tëst", cache=cache), 2, "-t 'myapp:tëst'")
    assert_one_error(run_pyimage("build", "-C", str(project), "-o", f"oci:{tmp_path / 'x'}:bad tag!", cache=cache), 2, f"output 'oci:{tmp_path / 'x'}:bad tag!': 'bad tag!' is not a tag")
    assert not (project / "dist").exists() and not (tmp_path / "x").exists()


def test_docker_build_flags_get_the_pyimage_way_in_the_hint(tmp_path: Path) -> None:
    project, cache = _project(tmp_path)
    for flag, needle in (("-f", "reads no Dockerfile"), ("--build-arg", "--set KEY=VALUE"), ("--no-cache", "--cache-dir")):
        done = run_pyimage("build", "-C", str(project), flag, "x", cache=cache)
        assert done.returncode == 2, done.stderr
        assert f"error: No such option: {flag}" in done.stderr
        assert needle in done.stderr.splitlines()[-1] and done.stderr.splitlines()[-1].startswith("hint:")


def test_a_base_written_as_a_path_says_which_prefix_it_needs(tmp_path: Path) -> None:
    project, cache = _project(tmp_path)
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        tar.add(project / "pyproject.toml", "usr/bin/python3")
    saved = tmp_path / "saved.tar"
    with tarfile.open(saved, "w") as tar:
        tar.add(project / "pyproject.toml", "manifest.json")
    cases = [
        (str(rootfs), f"use rootfs:{rootfs}"),
        (str(saved), f"docker save` archive: use docker-archive:{saved}"),
        (str(tmp_path / "base"), f"an OCI layout: use oci:{tmp_path / 'base'}"),
        ("./missing.tar.gz", "use rootfs:./missing.tar.gz (a root filesystem tar) or docker-archive:./missing.tar.gz"),
    ]
    for base, hint in cases:
        done = run_pyimage("plan", "-C", str(project), "--base", base, cache=cache)
        assert_one_error(done, 2, f"command line: --base: {base!r} looks like a path, not an image reference")
        assert hint in done.stderr.splitlines()[-1], done.stderr
    named = run_pyimage("plan", "-C", str(project), "--base", f"rootfs:{rootfs}", cache=cache)
    assert "looks like a path" not in named.stderr


def test_a_base_under_the_wrong_prefix_says_which_one_reads_it(tmp_path: Path) -> None:
    """A new-user trial: `rootfs:` on a directory said "no such file", `rootfs:` on a JSON file named a layer digest
    ("not a readable tar", "check the base image"), `oci:` on a tar said "no such directory", and `docker-archive:`
    on a root filesystem did not say what it was."""
    project, cache = _project(tmp_path)
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        tar.add(project / "pyproject.toml", "usr/bin/python3")
    notes = tmp_path / "notes.json"
    notes.write_text('{"not": "a tar"}\n')
    layout = tmp_path / "base"  # tiny_base: an OCI layout
    cases = [
        (f"rootfs:{layout}", f"error: base rootfs:{layout}: a directory, not a root filesystem tar", f"hint: it is an OCI layout: use oci:{layout}"),
        (f"rootfs:{notes}", f"error: base rootfs:{notes}: not a tar archive (nor a gzip'd one)", "hint: give a root filesystem as a tar"),
        (f"oci:{rootfs}", f"error: oci:{rootfs}: a file, not an OCI layout directory", f"hint: it is a tar without manifest.json, so a root filesystem: use rootfs:{rootfs}"),
        (f"docker-archive:{rootfs}", f"error: {rootfs}: no usable manifest.json in the archive", f"hint: a tar without manifest.json is no `docker save` archive; a root filesystem is read as rootfs:{rootfs}"),
        (f"docker-archive:{layout}", f"error: base docker-archive:{layout}: a directory, not a `docker save` archive", f"hint: it is an OCI layout: use oci:{layout}"),
    ]
    for base, error, hint in cases:
        done = run_pyimage("plan", "-C", str(project), "--base", base, cache=cache)
        assert done.returncode in (1, 2) and "Traceback" not in done.stderr, done.stderr
        said, told = done.stderr.strip().splitlines()[-2:]
        assert said.startswith(error) and told.startswith(hint), done.stderr


def test_a_misspelt_tool_pyimage_table_is_an_error_not_a_silent_default(tmp_path: Path) -> None:
    project, cache = _project(tmp_path)
    text = (project / "pyproject.toml").read_text().replace("[tool.pyimage]", "[tool.pyimgae]")
    (project / "pyproject.toml").write_text(text)
    line = text.splitlines().index("[tool.pyimgae]") + 1
    done = run_pyimage("plan", "-C", str(project), cache=cache)
    assert_one_error(done, 2, f"pyproject.toml:{line}: [tool.pyimgae] looks like a misspelt [tool.pyimage]")


def test_set_of_an_unknown_key_names_set_and_the_nearest_key(tmp_path: Path) -> None:
    project, cache = _project(tmp_path)
    done = run_pyimage("plan", "-C", str(project), "--set", "writeable=/data", cache=cache)
    assert_one_error(done, 2, "command line: --set writeable: unknown key")
    assert "hint: did you mean 'writable'?" in done.stderr


def test_a_subdirectory_of_the_project_finds_the_project_above(tmp_path: Path) -> None:
    project, cache = _project(tmp_path)
    (project / ".git").mkdir()
    inner = project / "src" / "tinyapp"
    done = run_pyimage("build", "-o", f"oci:{tmp_path / 'img'}", cache=cache, cwd=inner)
    assert done.returncode == 0, done.stderr
    assert f"note: using the project at {project} (the nearest pyproject.toml above {inner})" in done.stderr
    # `pyimage build .` there names the directory exactly: one error naming the project above (a new-user trial got
    # "run `pyimage init` here", which init then refused)
    named = run_pyimage("build", ".", cache=cache, cwd=inner)
    assert named.returncode == 2 and named.stderr.strip().splitlines()[-2:] == [
        f"error: no pyproject.toml in .; it is inside the project at {project}",
        f"hint: leave DIR out (pyimage then finds the project above, as `uv run` does), or name the project: -C {project}",
    ], named.stderr
    # The walk stops at the repository's root: a project above it is not this repository's.
    repo = project / "vendor" / "other"
    (repo / ".git").mkdir(parents=True)
    (project / "vendor" / "pyproject.toml").write_text("[tool.ruff]\n")
    outside = run_pyimage("plan", cache=cache, cwd=repo)
    assert_one_error(outside, 2, "no pyproject.toml in .")
    # A setup.py project inside it is the user's project, not a subdirectory of the one above.
    legacy = project / "tools" / "legacy"
    legacy.mkdir(parents=True)
    (legacy / "setup.py").write_text("from setuptools import setup\nsetup(name='legacy')\n")
    assert_one_error(run_pyimage("plan", cache=cache, cwd=legacy), 2, "no pyproject.toml in .")


def test_an_app_of_scripts_and_requirements_without_pyproject_is_pointed_at_init(tmp_path: Path) -> None:
    """New-user trial: the hint said `init` is for projects with a pyproject.toml or setup.py, steering a
    requirements.txt app away from what handles it."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "requirements.txt").write_text("flask\n")
    (app / "app.py").write_text("print('hi')\n")
    done = run_pyimage("build", cache=tmp_path / "cache", cwd=app)
    assert done.returncode == 2 and done.stderr.splitlines()[-2:] == [
        "error: no pyproject.toml in .",
        "hint: this looks like an app without a pyproject.toml: run `pyimage init` here, which writes one from requirements.txt and guesses the command it runs",
    ], done.stderr


def test_json_keeps_progress_on_stderr_and_one_document_on_stdout(tmp_path: Path) -> None:
    project, cache = _project(tmp_path)
    done = run_pyimage("build", "-C", str(project), "--json", "-o", f"oci:{tmp_path / 'img'}", cache=cache)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == 1
    assert "building the project's wheel" in done.stderr and "layer app: built" in done.stderr
    failed = run_pyimage("build", "-C", str(project), "--json", "--set", 'entrypoint=["nope"]', "-o", f"oci:{tmp_path / 'img'}", cache=cache)
    assert failed.returncode == 2 and failed.stdout == "" and failed.stderr.splitlines()[-2].startswith("error: entrypoint = ")  # as README says




def test_init_chooses_the_first_of_several_console_scripts_and_the_build_runs(tmp_path: Path) -> None:
    base = tiny_base(tmp_path / "base")
    project = tiny_project(tmp_path / "p")
    text = (project / "pyproject.toml").read_text()
    text = text[: text.index("[tool.pyimage]")].replace('[project.scripts]\n', '[project.scripts]\nzed = "tinyapp:main"\n')
    (project / "pyproject.toml").write_text(text)
    done = run_pyimage("init", "-C", str(project), "--base", base, cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert "entrypoint = zed, the first of 2 console scripts" in done.stderr
    assert 'entrypoint = ["zed"]  # the project\'s console scripts: zed, tinyapp' in (project / "pyproject.toml").read_text()
    built = run_pyimage("build", "-C", str(project), "--json", "-o", f"oci:{tmp_path / 'img'}:t", cache=tmp_path / "cache")
    assert built.returncode == 0, built.stderr
    shown = run_pyimage("inspect", f"oci:{tmp_path / 'img'}:t", "--json", cache=tmp_path / "cache")
    assert json.loads(shown.stdout)["config"]["Entrypoint"] == ["zed"], shown.stdout
    # inspect names the layers exactly as build --json does: the base's as "base"
    names = [l["name"] for l in json.loads(shown.stdout)["layers"]]
    assert names == [l["name"] for l in json.loads(built.stdout)["layers"]] and names[0] == "base"


def test_init_of_a_poetry_project_with_several_scripts_writes_the_first(tmp_path: Path) -> None:
    """A new-user trial: two scripts in [tool.poetry.scripts] (Poetry's own table, still common) left init's
    entrypoint commented out, and the next build stopped at "which one runs is ambiguous"."""
    project = tmp_path / "p3cli"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[tool.poetry]\nname = "p3cli"\nversion = "0.1.0"\n\n[tool.poetry.scripts]\np3cli = "p3cli.cli:main"\n'
        'p3dbg = { callable = "p3cli.cli:debug" }\nsetup-db = { reference = "bin/setup-db", type = "file" }\n\n'
        '[build-system]\nrequires = ["poetry-core"]\nbuild-backend = "poetry.core.masonry.api"\n'
    )
    done = run_pyimage("init", "-C", str(project), "--base", "python:3.12-slim", cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert "entrypoint = p3cli, the first of 2 console scripts" in done.stderr  # a file script is no console script
    assert 'entrypoint = ["p3cli"]  # the project\'s console scripts: p3cli, p3dbg' in (project / "pyproject.toml").read_text()


def test_init_says_when_the_base_it_writes_is_not_there_or_not_on_a_ci_runner(tmp_path: Path) -> None:
    """A new-user trial: `init --base rootfs:/x.tar` (a typo) was written without a word and the first build failed;
    `--ci github` with a base of this machine wrote a workflow whose runner cannot have it."""
    project = tmp_path / "app"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "1"\n')
    done = run_pyimage("init", "-C", str(project), "--base", "rootfs:/no/such/base.tar", "--ci", "github", cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert "note: --base rootfs:/no/such/base.tar: nothing is at /no/such/base.tar yet; the build reads it from there" in done.stderr
    assert "note: the base is rootfs:, something of this machine that a CI runner does not have" in done.stderr
    (project / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "1"\n')
    (project / "base.tar").write_bytes(b"")
    quiet = run_pyimage("init", "-C", str(project), "--base", "rootfs:base.tar", cache=tmp_path / "cache")
    assert quiet.returncode == 0 and "nothing is at" not in quiet.stderr, quiet.stderr


SETUP_CFG = """\
[metadata]
name = webtool
version = 3.2.4

[options]
packages = find:

[options.entry_points]
console_scripts =
    http = webtool.__main__:main
    https = webtool.__main__:main
    webtool = webtool.manager:main
"""


def test_init_of_a_setup_cfg_project_writes_the_first_of_its_console_scripts(tmp_path: Path) -> None:
    """httpie's layout: setup.py (never run by init) and setup.cfg's [options.entry_points] console_scripts."""
    base = tiny_base(tmp_path / "base")
    project = tmp_path / "webtool"
    (project / "webtool").mkdir(parents=True)
    (project / "webtool" / "__init__.py").write_text("")
    (project / "webtool" / "__main__.py").write_text("def main():\n    print('http')\n")
    (project / "webtool" / "manager.py").write_text("def main():\n    print('manager')\n")
    (project / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    (project / "setup.cfg").write_text(SETUP_CFG)
    done = run_pyimage("init", "-C", str(project), "--base", base, cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert "entrypoint = http, the first of 3 console scripts" in done.stderr
    assert 'entrypoint = ["http"]  # the project\'s console scripts: http, https, webtool' in (project / "pyproject.toml").read_text()
    # the build that runs it: tests/e2e/test_features.py (setuptools needs the index)


def test_an_unreadable_setup_cfg_gives_init_no_console_scripts(tmp_path: Path) -> None:
    from pyimage.cli import _setup_cfg_scripts

    (tmp_path / "setup.cfg").write_text("[options.entry_points\nconsole_scripts = x = y:z\n")
    assert _setup_cfg_scripts(tmp_path / "setup.cfg") == []
    assert _setup_cfg_scripts(tmp_path / "missing.cfg") == []
    (tmp_path / "setup.cfg").write_text("[options.entry_points]\nconsole_scripts =\n    a = m:f %(x)s\n    a = m:g\n    b=m:h [extra]\n")
    assert _setup_cfg_scripts(tmp_path / "setup.cfg") == ["a", "b"]


def test_init_of_a_setup_py_project_says_it_created_pyproject_and_from_a_subdirectory_names_the_project(tmp_path: Path) -> None:
    (tmp_path / "setup.py").write_text("from setuptools import setup\nsetup(name='legacy', version='1.0')\n")
    done = run_pyimage("init", "-C", str(tmp_path), "--base", "python:3.12-slim", cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert f"created {tmp_path / 'pyproject.toml'} (holding only [tool.pyimage]; base = python:3.12-slim)" in done.stderr
    (tmp_path / "pkg").mkdir()
    inner = run_pyimage("init", cache=tmp_path / "cache", cwd=tmp_path / "pkg")
    assert_one_error(inner, 2, f"the project is at {tmp_path}")
    assert not (tmp_path / "pkg" / "pyproject.toml").exists()


def test_an_unreachable_registry_hint_offers_the_local_engine() -> None:
    from pyimage.oci.transport import unreachable_hint

    for host in ("registry-1.docker.io", "registry.internal:5000"):
        assert "docker-daemon:NAME:TAG" in unreachable_hint(host)


def test_backend_warnings_are_held_back_on_success_and_shown_with_debug(tmp_path: Path) -> None:
    project, cache = _project(tmp_path)
    backend = project / "_backend" / "tiny_backend.py"
    backend.write_text(backend.read_text().replace(
        "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n",
        "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n"
        "    import warnings\n"
        "    warnings.warn('tiny backend: the option x is deprecated\\n' + 'a long explanation\\n' * 20)\n",
    ))
    quiet = run_pyimage("plan", "-C", str(project), cache=cache)
    assert quiet.returncode == 0, quiet.stderr
    assert "a long explanation" not in quiet.stderr
    assert "note: the build backend warned 1 time(s), e.g. 'tiny backend: the option x is deprecated'; run with --debug" in quiet.stderr
    (project / "src" / "tinyapp" / "more.py").write_text("")  # new sources: the wheel is built again, not reused
    loud = run_pyimage("plan", "-C", str(project), "--debug", cache=cache)
    assert loud.returncode == 0, loud.stderr
    assert "tiny backend: the option x is deprecated" in loud.stderr and "a long explanation" in loud.stderr


def test_another_tools_table_near_the_name_is_left_alone(tmp_path: Path) -> None:
    project, cache = _project(tmp_path)
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text + "\n[tool.image]\nsize = 1\n")
    assert "misspelt" not in run_pyimage("plan", "-C", str(project), cache=cache).stderr


def test_a_tag_after_a_registry_port_is_the_part_after_the_last_colon(tmp_path: Path) -> None:
    from pyimage.cache import Cache
    from pyimage.outputs import Naming

    naming = Naming("app", "1.0", Cache(tmp_path / "c"), ("localhost:5000/app:dev",))
    assert naming.tag == "dev" and naming.reference == "localhost:5000/app:dev"
    assert Naming("app", "1.0+local", Cache(tmp_path / "c")).tag == "1.0_local"


def test_a_pycache_file_a_wheel_ships_is_left_out_without_a_raw_warning(tmp_path: Path) -> None:
    """numpy 2.3's wheel ships ``numpy/distutils/__pycache__/*.pyc``: pypa/installer skips such files (rightly) and
    says so with a RuntimeWarning that Python printed with its source line in the middle of the progress."""
    from support.tiny import offline_env

    from wheels_fixture import make_wheel

    wheels = tmp_path / "wheels"
    make_wheel(wheels, "shipspyc", "1.0", {"shipspyc/__init__.py": b"", "shipspyc/__pycache__/x.cpython-311.pyc": b"\x00" * 16})
    base = tiny_base(tmp_path / "base")
    project = tiny_project(tmp_path / "p", dependencies=["shipspyc"], tool=f'base = "{base}"\n')
    done = run_pyimage("build", "-C", str(project), "-o", f"oci:{tmp_path / 'img'}", cache=tmp_path / "cache", env=offline_env(find_links=wheels))
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "install(source" not in done.stderr, done.stderr
    names = []
    for blob in (tmp_path / "img" / "blobs" / "sha256").iterdir():
        if tarfile.is_tarfile(blob):
            with tarfile.open(blob) as tar:
                names += tar.getnames()
    assert any(n.endswith("shipspyc/__init__.py") for n in names)
    assert not any("shipspyc/__pycache__" in n for n in names)


def test_groups_without_a_lock_are_an_error_not_silently_left_out(tmp_path: Path) -> None:
    """A new user's trial: ``groups = ["metrics"]`` in a project with no uv.lock built without the group (and a
    misspelt group name did too); the app failed at import in the container."""
    project, cache = _project(tmp_path, tool='groups = ["metrics"]\n')
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text + '\n[dependency-groups]\nmetrics = ["prometheus-client>=0.20"]\n')
    done = run_pyimage("plan", "-C", str(project), cache=cache)
    assert_one_error(done, 2, "groups = ['metrics']: dependency groups are installed from the project's lock")
    assert "hint: run `uv lock`" in done.stderr


def test_a_pdm_lock_is_an_error_naming_the_export_not_silently_resolved_past(tmp_path: Path) -> None:
    """A new user's trial: a PDM project's pdm.lock was ignored and uv resolved other versions than it locks."""
    project, cache = _project(tmp_path)
    (project / "pdm.lock").write_text('[metadata]\nlock_version = "4.5.0"\n')
    done = run_pyimage("plan", "-C", str(project), cache=cache)
    assert_one_error(done, 2, "pyimage does not read pdm.lock")
    assert "pdm export -f requirements --prod" in done.stderr and 'lock-input = "none"' in done.stderr
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text.replace("[tool.pyimage]\n", '[tool.pyimage]\nlock-input = "none"\n'))
    assert run_pyimage("plan", "-C", str(project), cache=cache).returncode == 0


def test_set_takes_toml_values_and_refuses_a_list_it_would_have_taken_as_one_string() -> None:
    from pyimage.cli import _parse_set
    from pyimage.errors import ConfigError

    assert _parse_set(['heavy=["numpy", "pandas"]', "max-layers=20", "python=3.10", "base=[::1]:5000/app:1", "user=app"]) == {
        "heavy": ["numpy", "pandas"], "max-layers": 20, "python": "3.10", "base": "[::1]:5000/app:1", "user": "app",
    }  # an IPv6 registry is a string key's value, not a list
    with pytest.raises(ConfigError) as err:
        _parse_set(["heavy=[numpy,pandas]"])
    assert """--set 'heavy=["numpy", "pandas"]'""" in err.value.hint
