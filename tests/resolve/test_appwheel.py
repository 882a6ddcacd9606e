"""What makes the project's wheel 'unchanged': file contents and VCS state, not mtimes or the backend's own writes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pyimage.errors import BuildError, ConfigError
from pyimage.oci.model import Platform
from pyimage.resolve.appwheel import backend_written_files, check_requires_python, check_wheel_fits, source_fingerprint
from pyimage.resolve.target import Target


def _project(root: Path) -> Path:
    (root / "src" / "app").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "1"\n\n[tool.hatch.build.hooks.vcs]\nversion-file = "src/app/_version.py"\n')
    (root / "src" / "app" / "__init__.py").write_text("X = 1\n")
    return root


def test_touching_a_file_changes_nothing_and_editing_it_changes_the_fingerprint(tmp_path: Path) -> None:
    project = _project(tmp_path)
    first = source_fingerprint(project, [])
    init = project / "src" / "app" / "__init__.py"
    os.utime(init, (1, 1))
    init.write_text("X = 1\n")
    assert source_fingerprint(project, []) == first
    init.write_text("X = 2\n")  # same size, maybe the same mtime second: still a change
    assert source_fingerprint(project, []) != first


def test_the_declared_version_file_is_an_output_not_an_input(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert backend_written_files(project) == {"src/app/_version.py"}
    first = source_fingerprint(project, [])
    (project / "src" / "app" / "_version.py").write_text("version = '9'\n")
    assert source_fingerprint(project, []) == first


def test_a_teams_lock_file_is_no_source_of_the_wheel(tmp_path: Path) -> None:
    """A new-user trial: `uv lock --upgrade-package` alone started the build backend again (the wheel came out the same)."""
    project = _project(tmp_path)
    first = source_fingerprint(project, [])
    for name in ("uv.lock", "poetry.lock", "pdm.lock", "pylock.toml", "pylock.pyimage.toml"):
        (project / name).write_text("version = 1\n")
        assert source_fingerprint(project, []) == first, name
    (project / "src" / "app" / "uv.lock").write_text("")  # below the top: the package's own data
    assert source_fingerprint(project, []) != first


def test_a_lock_file_is_a_source_when_the_version_comes_from_the_repository(tmp_path: Path) -> None:
    """A new-user trial: a tracked pylock.pyimage.toml rewritten by a build made setuptools-scm's version dirty,
    but the wheel was reused from a warm cache: the same checkout got 1.4.3.dev1+g… there and …d19800101 cold."""
    project = _project(tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "1"', 'dynamic = ["version"]'))
    (project / "pylock.pyimage.toml").write_text("lock-version = '1.0'\n")
    first = source_fingerprint(project, [])
    (project / "pylock.pyimage.toml").write_text("lock-version = '1.0'\n# another target\n")
    assert source_fingerprint(project, []) == first  # no repository: nothing derives a version from it
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    first = source_fingerprint(project, [])
    (project / "pylock.pyimage.toml").write_text("lock-version = '1.0'\n")
    assert source_fingerprint(project, []) == first  # untracked: never makes the tree dirty
    subprocess.run(["git", "-C", str(project), "add", "pylock.pyimage.toml"], check=True)
    first = source_fingerprint(project, [])
    (project / "pylock.pyimage.toml").write_text("lock-version = '1.0'\n# another target\n")
    assert source_fingerprint(project, []) != first  # tracked and modified: setuptools-scm calls the tree dirty


def test_a_package_named_build_is_a_source_but_setuptools_debris_is_not(tmp_path: Path) -> None:
    project = _project(tmp_path)
    first = source_fingerprint(project, [])
    (project / "build" / "lib").mkdir(parents=True)
    (project / "build" / "lib" / "stale.py").write_text("")
    (project / "src" / "app.egg-info").mkdir()
    (project / "src" / "app.egg-info" / "PKG-INFO").write_text("x")
    assert source_fingerprint(project, []) == first
    (project / "src" / "app" / "build").mkdir()
    (project / "src" / "app" / "build" / "__init__.py").write_text("")
    assert source_fingerprint(project, []) != first


def test_commits_and_tags_change_the_fingerprint_without_running_git(tmp_path: Path) -> None:
    project = _project(tmp_path)
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@e", GIT_CONFIG_GLOBAL="/dev/null")
    git = lambda *a: subprocess.run(["git", "-C", str(project), *a], check=True, capture_output=True, env=env)  # noqa: E731
    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "one")
    seen = {source_fingerprint(project, [])}
    git("commit", "-q", "--allow-empty", "-m", "two")
    seen.add(source_fingerprint(project, []))
    git("tag", "v1")
    seen.add(source_fingerprint(project, []))
    git("pack-refs", "--all")  # the same refs, now in packed-refs: the same state
    assert source_fingerprint(project, []) in seen
    git("tag", "-d", "v1")
    git("tag", "-a", "v2", "-m", "annotated")
    seen.add(source_fingerprint(project, []))
    assert len(seen) == 4


TARGET = Target("3.11", Platform.parse("linux/amd64"), "glibc", "2.36")


def test_requires_python_is_checked_against_the_target_and_names_it() -> None:
    check_requires_python(">=3.9", TARGET, "pyproject.toml")
    check_requires_python(">=3.11.4", TARGET, "pyproject.toml")  # some 3.11 release satisfies it
    with pytest.raises(ConfigError) as err:
        check_requires_python(">=3.12", TARGET, "pyproject.toml")
    assert "requires Python >=3.12, but the target is Python 3.11" in err.value.message


@pytest.mark.parametrize(
    "name, fits",
    [
        ("app-1-py3-none-any.whl", True),
        ("app-1-cp311-cp311-linux_x86_64.whl", True),
        ("app-1-cp38-abi3-manylinux_2_17_x86_64.whl", True),
        ("app-1-cp312-cp312-linux_x86_64.whl", False),
        ("app-1-cp311-cp311-linux_aarch64.whl", False),
        ("app-1-cp311-cp311-manylinux_2_39_x86_64.whl", False),
    ],
)
def test_an_app_wheel_with_a_platform_tag_must_fit_the_target(name: str, fits: bool) -> None:
    if fits:
        check_wheel_fits(Path(name), TARGET, "3.11")
    else:
        with pytest.raises(BuildError, match=r"which does not run on CPython 3.11 on linux/amd64"):
            check_wheel_fits(Path(name), TARGET, "3.11")


def test_a_compiled_wheel_from_another_host_python_names_both_versions() -> None:
    with pytest.raises(BuildError) as err:
        check_wheel_fits(Path("app-1-cp312-cp312-linux_x86_64.whl"), TARGET, "3.12")
    assert "this machine's Python 3.12" in err.value.message and "the image has Python 3.11" in err.value.message


def test_a_wheel_compiled_here_is_refused_for_a_musl_base() -> None:
    musl = Target("3.11", Platform.parse("linux/amd64"), "musl", "1.2")
    with pytest.raises(BuildError, match="musl"):
        check_wheel_fits(Path("app-1-cp311-cp311-linux_x86_64.whl"), musl, "3.11")


def test_a_uv_build_project_builds_its_wheel(tmp_path: Path) -> None:
    """``uv init --package`` writes ``build-backend = "uv_build"``, which runs the ``uv-build`` binary installed
    beside it: the build environment's bin must be on PATH, as in pypa/build's own isolated builds."""
    from pyimage.cache import Cache
    from pyimage.resolve.appwheel import build_app_wheel

    project = tmp_path / "uvapp"
    (project / "src" / "uvapp").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "uvapp"\nversion = "0.1.0"\nrequires-python = ">=3.9"\n\n'
        '[project.scripts]\nuvapp = "uvapp:main"\n\n'
        '[build-system]\nrequires = ["uv_build>=0.9,<0.14"]\nbuild-backend = "uv_build"\n'
    )
    (project / "src" / "uvapp" / "__init__.py").write_text("def main():\n    print('hello from uv_build')\n")
    wheel = build_app_wheel(project, tmp_path / "out", Cache(tmp_path / "cache"), 0)
    assert wheel.name == "uvapp-0.1.0-py3-none-any.whl"


def test_an_environment_a_killed_build_left_half_made_and_still_written_is_made_again(tmp_path: Path) -> None:
    """A build killed (SIGKILL) while making the backend's environment leaves its installer running, writing into
    it; the next build's removal of the unfinished environment raced those writes ("Directory not empty", an
    internal error in CI). The writer here is a process of its own, as the orphaned installer is."""
    import subprocess
    import sys
    import time

    from pyimage.cache import Cache
    from pyimage.resolve.appwheel import _env

    cache = Cache(tmp_path / "cache")
    key_dir_probe = _env(cache, [], sys.executable).parent.parent  # where the environment for no requirements lives
    (key_dir_probe / ".pyimage-ready").unlink()  # unfinished, as a killed build leaves it
    site = key_dir_probe / "lib" / "orphan" / "site-packages"
    site.mkdir(parents=True)
    writer = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time\n"
        "end = time.monotonic() + 1.5\n"
        "n = 0\n"
        "while time.monotonic() < end:\n"
        "    d = os.path.join(sys.argv[1], f'pkg{n % 50}')\n"
        "    try:\n"
        "        os.makedirs(d, exist_ok=True)\n"
        "        open(os.path.join(d, f'm{n}.py'), 'w').close()\n"
        "    except OSError:\n"
        "        pass\n"
        "    n += 1\n"
    ), str(site)])  # fmt: skip
    try:
        time.sleep(0.2)  # writing by now
        python = _env(cache, [], sys.executable)
    finally:
        writer.wait(10)
    assert (python.parent.parent / ".pyimage-ready").is_file() and python.exists()


_DYNAMIC_BACKEND = '''\
"""A backend whose wheel build needs a requirement it names only dynamically (get_requires_for_build_wheel), as
scikit-build-core names cmake and ninja: the build fails unless that requirement is in *its* environment."""
import sys
sys.path.insert(0, __file__.rsplit("/", 1)[0])
from tiny_backend import build_wheel as _tiny_build


def get_requires_for_build_wheel(config_settings=None):
    return ["typer"]


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    import typer  # the stand-in installed from find-links, never pyimage's own typer
    assert typer.MARK == "the build environment's", typer.__file__
    return _tiny_build(wheel_directory, config_settings, metadata_directory)
'''


def test_a_dynamic_build_requirement_is_judged_by_the_build_environment_not_pyimages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyimage's own environment has typer; the backend's does not. The requirement the backend asks for at build
    time must be installed into *its* environment (pypa/build's ``check_dependencies`` looked in pyimage's own and
    found it satisfied: the backend failed on ``import typer``) — and once there, a change of pyproject.toml, which
    asks the backend again, installs nothing."""
    from pyimage.cache import Cache
    from pyimage.resolve import appwheel
    from support.tiny import offline_env, tiny_project
    from wheels_fixture import make_wheel

    import typer  # noqa: F401 - pyimage's own environment has it: the case the old check got wrong

    links = tmp_path / "links"
    make_wheel(links, "typer", "99.0", files={"typer/__init__.py": b"MARK = \"the build environment's\"\n"})
    for key, value in offline_env(links).items():
        monkeypatch.setenv(key, value)
    project = tiny_project(tmp_path / "app")
    (project / "_backend" / "dynamic_backend.py").write_text(_DYNAMIC_BACKEND)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('build-backend = "tiny_backend"', 'build-backend = "dynamic_backend"'))
    installs: list[list[str]] = []
    real_install = appwheel._install
    monkeypatch.setattr(appwheel, "_install", lambda env, reqs: (reqs and installs.append(list(reqs)), real_install(env, reqs))[1])
    cache = Cache(tmp_path / "cache")

    wheel = appwheel.build_app_wheel(project, tmp_path / "out1", cache, 0)
    assert wheel.name == "tinyapp-1.0-py3-none-any.whl"
    assert installs == [["typer"]]

    pyproject.write_text(pyproject.read_text().replace('version = "1.0"', 'version = "1.1"'))  # the backend is asked again
    assert appwheel.build_app_wheel(project, tmp_path / "out2", cache, 0).name == "tinyapp-1.1-py3-none-any.whl"
    assert installs == [["typer"]]  # satisfied in the build environment: nothing installed again


def test_unmet_reads_the_environments_own_packages_and_python(tmp_path: Path) -> None:
    from pyimage.resolve.appwheel import unmet
    from wheels_fixture import make_wheel

    env = tmp_path / "env"
    site = env / "lib" / "python3.9" / "site-packages"
    site.mkdir(parents=True)
    import zipfile

    with zipfile.ZipFile(make_wheel(tmp_path / "w", "hatchling", "1.27.0")) as zf:
        zf.extractall(site)
    python = env / "bin" / "python"
    reqs = ["hatchling", "hatchling>=1.20", "hatchling<1", "Hatchling[x]>=1", "packaging", "tomli; python_version < '3.11'", "exceptiongroup; python_version >= '3.11'"]
    assert unmet(python, reqs) == sorted(["hatchling<1", "packaging", "tomli; python_version < '3.11'"])


_COUNTING_BACKEND = '''\
"""tiny_backend, counting the times it is asked for its dynamic build requirements."""
import os
import sys
sys.path.insert(0, __file__.rsplit("/", 1)[0])
from tiny_backend import build_wheel


def get_requires_for_build_wheel(config_settings=None):
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "asked"), "a") as f:
        f.write("asked\\n")
    return []
'''


def test_the_backend_is_asked_for_its_build_requirements_again_only_when_its_configuration_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bumped dependency or a renamed project (the [project] table) asks the backend nothing new; a change to its
    own table does, and so does any change where hatch puts the runtime dependencies into its build environment."""
    from pyimage.cache import Cache
    from pyimage.resolve import appwheel
    from support.tiny import offline_env, tiny_project

    for key, value in offline_env(tmp_path / "links").items():
        monkeypatch.setenv(key, value)
    (tmp_path / "links").mkdir()
    project = tiny_project(tmp_path / "app")
    (project / "_backend" / "counting_backend.py").write_text(_COUNTING_BACKEND)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('build-backend = "tiny_backend"', 'build-backend = "counting_backend"'))
    cache = Cache(tmp_path / "cache")
    asked = project / "_backend" / "asked"

    def build(n: int, edit: tuple[str, str] | None = None) -> int:
        if edit:
            pyproject.write_text(pyproject.read_text().replace(*edit))
        appwheel.build_app_wheel(project, tmp_path / f"out{n}", cache, 0)
        return len(asked.read_text().splitlines())

    assert build(1) == 1
    assert build(2, ('version = "1.0"', 'version = "1.1"')) == 1  # [project]: not asked again (was: every edit)
    pyproject.write_text(pyproject.read_text() + "\n[tool.tiny]\nflag = true\n")
    assert build(3) == 2  # the backend's own configuration
    assert build(4, ("flag = true", 'flag = true\nrequire-runtime-dependencies = true')) == 3
    assert build(5, ('version = "1.1"', 'version = "1.2"')) == 4  # with runtime dependencies in the build env: asked
