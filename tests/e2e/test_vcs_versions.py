"""Projects whose version comes from git (setuptools-scm, hatch-vcs), built as a release team builds them:
the image always carries the version ``git describe`` gives, and a backend that rewrites its version file
does not make an unchanged project look changed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.runc import run_image

from .conftest import Pyimage

pytestmark = pytest.mark.e2e

GIT_ENV = dict(
    os.environ,
    GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.org",
    GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1",
)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=GIT_ENV).stdout.strip()


def assert_describes(version: str, describe: str, commit: str) -> None:
    """``version`` is what setuptools-scm's default scheme makes of ``git describe --tags`` output: the tag
    itself on a tagged commit, else the next patch release's ``.devN`` with the commit (abbreviated) after ``+g``."""
    exact = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", describe)
    if exact:
        assert version == ".".join(exact.groups()), (version, describe)
        return
    m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)-(\d+)-g([0-9a-f]+)", describe)
    assert m, describe
    major, minor, patch, distance, node = m.groups()
    public, _, local = version.partition("+g")
    assert public == f"{major}.{minor}.{int(patch) + 1}.dev{distance}", (version, describe)
    assert len(local) >= 7 and commit.startswith(local) and local.startswith(node[:7]), (version, describe)


def app_version(report: dict, name: str) -> str:
    (app,) = [l for l in report["layers"] if l["name"] == "app"]
    (package,) = app["packages"]
    got_name, _, version = package.partition("==")
    assert got_name == name
    return version


def make_scm_project(root: Path) -> Path:
    project = root / "scmapp"
    (project / "src" / "scmapp").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64", "setuptools-scm>=8"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "scmapp"\ndynamic = ["version"]\nrequires-python = ">=3.9"\n\n'
        '[project.scripts]\nscmapp = "scmapp:main"\n\n[tool.setuptools_scm]\n'
    )
    (project / "src" / "scmapp" / "__init__.py").write_text(
        "import importlib.metadata\n\n\ndef main():\n    print('scmapp', importlib.metadata.version('scmapp'))\n"
    )
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "first")
    return project


def test_image_version_follows_git_tags_and_commits_like_git_describe(pyimage: Pyimage, tmp_path: Path) -> None:
    project = make_scm_project(tmp_path)
    layout = tmp_path / "layout"
    seen: list[str] = []

    def build_and_check(tag: str) -> dict:
        report = pyimage.build(project, layout, tag)
        version = app_version(report, "scmapp")
        assert_describes(version, git(project, "describe", "--tags"), git(project, "rev-parse", "HEAD"))
        seen.append(version)
        return report

    git(project, "tag", "v1.0.0")
    build_and_check("a")
    git(project, "commit", "-q", "--allow-empty", "-m", "a commit that leaves .git/index alone")
    build_and_check("b")
    git(project, "tag", "-a", "v2.0.0", "-m", "release")  # an annotated tag
    build_and_check("c")
    git(project, "tag", "-d", "v2.0.0")
    git(project, "tag", "v2.0.1")  # re-tagged: same commit, another tag
    build_and_check("d")
    assert seen[0] == "1.0.0" and seen[1].startswith("1.0.1.dev1+g") and seen[2:] == ["2.0.0", "2.0.1"]
    # a tag on an ancestor changes `git describe` of a later, untagged commit too
    git(project, "commit", "-q", "--allow-empty", "-m", "after the release")
    build_and_check("e")
    # nothing left behind in the user's tree but the lock: no build/, no *.egg-info
    assert git(project, "status", "--porcelain", "--ignored", "--untracked-files=all").splitlines() == ["?? pylock.pyimage.toml"]
    assert "scmapp 2.0.2.dev1+g" in run_image(layout, "e").stdout


def test_dirty_work_tree_gets_a_dirty_version_and_a_clean_one_gets_the_tag_back(pyimage: Pyimage, tmp_path: Path) -> None:
    project = make_scm_project(tmp_path)
    git(project, "tag", "v3.1.0")
    layout = tmp_path / "layout"
    assert app_version(pyimage.build(project, layout, "clean"), "scmapp") == "3.1.0"
    module = project / "src" / "scmapp" / "__init__.py"
    original = module.read_text()
    module.write_text(original + "# work in progress\n")
    report = pyimage.build(project, layout, "dirty")
    dirty = app_version(report, "scmapp")
    assert dirty != "3.1.0" and "+" in dirty  # setuptools-scm marks a dirty tree in the local part
    # and the build says why the tag's version was not taken (a new-user trial could not tell)
    assert [n for n in report["notes"] if n.startswith(f"the project's version {dirty} is a development version")], report["notes"]
    module.write_text(original)
    clean = pyimage.build(project, layout, "clean-again")
    assert app_version(clean, "scmapp") == "3.1.0" and not [n for n in clean["notes"] if "development version" in n]


def test_a_tracked_lock_rewritten_gives_the_same_version_from_a_warm_cache_as_from_a_cold_one(pyimage: Pyimage, tmp_path: Path) -> None:
    """A new-user trial: with pylock.pyimage.toml committed, a build that rewrote it (another platform's entries)
    left setuptools-scm calling the tree dirty, but the warm cache reused the clean wheel: the same checkout got
    another version (and digest) there than on a cold CI cache."""
    project = make_scm_project(tmp_path)
    pyimage.build(project, tmp_path / "layout", "first")  # writes the lock
    git(project, "add", "pylock.pyimage.toml")
    git(project, "commit", "-q", "-m", "lock")
    git(project, "tag", "v3.2.0")
    assert app_version(pyimage.build(project, tmp_path / "layout", "clean"), "scmapp") == "3.2.0"
    lock = project / "pylock.pyimage.toml"
    lock.write_text(lock.read_text() + "# entries another build added\n")
    warm = app_version(pyimage.build(project, tmp_path / "layout", "warm"), "scmapp")
    cold = app_version(Pyimage(tmp_path / "cold-cache", pyimage.base).build(project, tmp_path / "layout", "cold"), "scmapp")
    assert warm == cold and warm != "3.2.0", (warm, cold)


_COUNT_SPAWNS = """
import sys
spawned = []
def hook(event, args):
    if event in ("subprocess.Popen", "os.posix_spawn", "os.exec", "os.system", "os.fork", "os.spawn"):
        spawned.append(event)
sys.addaudithook(hook)
from pyimage.cli import main
try:
    main(sys.argv[1:])
finally:
    sys.stderr.write(f"\\nspawned processes: {len(spawned)}\\n")
"""


def test_hatch_vcs_version_file_does_not_make_the_next_build_look_changed(pyimage: Pyimage, tmp_path: Path) -> None:
    project = tmp_path / "vcsapp"
    (project / "src" / "vcsapp").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling", "hatch-vcs"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "vcsapp"\ndynamic = ["version"]\n\n[project.scripts]\nvcsapp = "vcsapp:main"\n\n'
        '[tool.hatch.version]\nsource = "vcs"\n\n[tool.hatch.build.hooks.vcs]\nversion-file = "src/vcsapp/_version.py"\n'
    )
    (project / "src" / "vcsapp" / "__init__.py").write_text("from vcsapp._version import version\n\n\ndef main():\n    print('vcsapp', version)\n")
    (project / ".gitignore").write_text("src/vcsapp/_version.py\n")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "first")
    git(project, "tag", "v0.4.0")
    cache = tmp_path / "cache"

    def build(tag: str) -> tuple[dict, int]:
        cmd = [sys.executable, "-c", _COUNT_SPAWNS, "build", "--json", "-C", str(project), "--cache-dir", str(cache),
               "--base", f"rootfs:{pyimage.base}", "-o", f"oci:{tmp_path / 'layout'}:{tag}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        import json

        return json.loads(done.stdout), int(done.stderr.rsplit("spawned processes:", 1)[1])

    first, first_spawns = build("one")
    version_file = project / "src" / "vcsapp" / "_version.py"
    assert version_file.is_file() and app_version(first, "vcsapp") == "0.4.0"
    assert first_spawns > 0  # the backend ran
    version_file.write_text(version_file.read_text() + "# rewritten by another tool\n")  # new content, new mtime
    second, second_spawns = build("two")
    assert second_spawns == 0, "an unchanged project started a subprocess"
    assert second["image"]["digest"] == first["image"]["digest"]
    assert len(list((cache / "appwheels").iterdir())) == 1
    git(project, "commit", "-q", "--allow-empty", "-m", "release")  # ...but a new release is a new version
    git(project, "tag", "v0.5.0")
    third, _ = build("three")
    assert app_version(third, "vcsapp") == "0.5.0"
    assert "vcsapp 0.5.0" in run_image(tmp_path / "layout", "three").stdout
