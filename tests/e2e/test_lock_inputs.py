"""The team's lock decides what goes into the image: a ``uv.lock`` locked by the real uv, a PEP 751
``pylock.toml`` written by ``uv export`` or ``pip lock``, installed as locked (no resolver runs, the lock's bytes
are unchanged), and pyimage's own lock under a name no other tool writes (``pylock.pyimage.toml``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.runc import run_image

from .conftest import Pyimage, copy_example
from .test_platforms import arm64_rootfs  # noqa: F401 (a fixture: the arm64 Debian rootfs)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.e2e

UV = [sys.executable, "-m", "uv"]
LIST = "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"


def make_project(root: Path, dependencies: list[str], extra: str = "") -> Path:
    """A small hatchling project with one console script, as a team would have it."""
    (root / "src" / "team_app").mkdir(parents=True)
    (root / "src" / "team_app" / "__init__.py").write_text("def main():\n    print('hi')\n")
    deps = ", ".join(json.dumps(d) for d in dependencies)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        f'[project]\nname = "team-app"\nversion = "1.0"\nrequires-python = ">=3.9"\ndependencies = [{deps}]\n\n'
        '[project.scripts]\nteam-app = "team_app:main"\n' + extra
    )
    return root


def uv(project: Path, *args: str) -> None:
    subprocess.run([*UV, *args], cwd=project, check=True, capture_output=True, text=True, env=dict(os.environ, UV_NO_PROGRESS="1"))


def no_resolver_env(tmp_path: Path) -> dict[str, str]:
    """pip's configuration plus constraints no index satisfies: any pip resolution of six or attrs fails."""
    constraints = tmp_path / "impossible-constraints.txt"
    base = Path("/etc/xdg/pip/constraints.txt")
    constraints.write_text((base.read_text() if base.is_file() else "") + "\nsix==0.0.0.dev0\nattrs==0.0.0.dev0\n")
    return dict(os.environ, PIP_CONSTRAINT=str(constraints))


def installed(layout: Path, tag: str) -> dict[str, str]:
    return json.loads(run_image(layout, tag, args=["/opt/venv/bin/python", "-c", LIST]).stdout.strip().splitlines()[-1])


def locked_versions(text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for package in tomllib.loads(text).get("package", tomllib.loads(text).get("packages", [])):
        if "version" in package:
            out.setdefault(package["name"], set()).add(package["version"])
    return out


UV_EXTRA = '\n[project.optional-dependencies]\nfancy = ["idna"]\n\n[dependency-groups]\ndev = ["iniconfig"]\n\n[tool.pyimage]\nextras = ["fancy"]\n'


def test_a_uv_lock_is_installed_as_locked_with_no_resolver_and_left_byte_for_byte(pyimage: Pyimage, tmp_path: Path) -> None:
    project = make_project(tmp_path / "team-app", ["six>=1.15", "attrs", "humanize"], UV_EXTRA)
    uv(project, "lock")
    uv(project, "lock", "--upgrade-package", "six==1.16.0")  # the team's tested pin: older than what a resolver picks
    lock_bytes = (project / "uv.lock").read_bytes()

    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}:t", project=project, env=no_resolver_env(tmp_path))

    assert "installing from uv.lock as locked" in done.stderr and "resolving dependencies" not in done.stderr
    assert (project / "uv.lock").read_bytes() == lock_bytes
    assert not (project / "pylock.pyimage.toml").exists()
    versions = installed(tmp_path / "layout", "t")
    locked = locked_versions(lock_bytes.decode())
    assert versions["six"] == "1.16.0"
    assert {versions["attrs"]} == locked["attrs"] and {versions["idna"]} == locked["idna"]  # the `fancy` extra
    assert versions["humanize"] in locked["humanize"]
    assert "iniconfig" not in versions  # the dev group stays out of the image


def test_a_uv_lock_out_of_date_with_pyproject_is_one_error_with_the_fix(pyimage: Pyimage, tmp_path: Path) -> None:
    project = make_project(tmp_path / "team-app", ["six"])
    uv(project, "lock")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('["six"]', '["six", "attrs"]'))

    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}:t", project=project, check=False)

    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {project / 'uv.lock'} is out of date with pyproject.toml"]
    assert "hint: run `uv lock`" in done.stderr and "Traceback" not in done.stderr
    # a dependency no index has (a typo): uv's "No solution found" was passed on as "`uv export` cannot read …"
    pyproject.write_text(pyproject.read_text().replace('"attrs"', '"attrs", "pyimage-no-such-package-x"'))
    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}:t", project=project, check=False)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {project / 'uv.lock'} is out of date with pyproject.toml, which uv cannot lock again: Because pyimage-no-such-package-x was not found"), errors
    assert "hint: fix the dependency in pyproject.toml, then run `uv lock`" in done.stderr


@pytest.mark.parametrize("writer", ["uv export", "pip lock"])
def test_a_pep751_lock_written_by_another_tool_is_consumed_unchanged(pyimage: Pyimage, tmp_path: Path, writer: str) -> None:
    project = make_project(tmp_path / "team-app", ["six>=1.15", "attrs"])
    if writer == "uv export":
        uv(project, "lock", "--upgrade-package", "six==1.16.0")
        uv(project, "export", "--format", "pylock.toml", "-o", "pylock.toml")
        (project / "uv.lock").unlink()  # the PEP 751 file alone is the team's lock
    else:
        subprocess.run([sys.executable, "-m", "pip", "lock", "-q", "-o", "pylock.toml", "."], cwd=project, check=True, capture_output=True)
    lock_bytes = (project / "pylock.toml").read_bytes()

    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}:t", project=project, env=no_resolver_env(tmp_path))

    assert "installing from pylock.toml as locked" in done.stderr and "resolving dependencies" not in done.stderr
    assert (project / "pylock.toml").read_bytes() == lock_bytes
    assert not (project / "pylock.pyimage.toml").exists()
    versions, locked = installed(tmp_path / "layout", "t"), locked_versions(lock_bytes.decode())
    assert {versions["six"]} == locked["six"] and {versions["attrs"]} == locked["attrs"]
    if writer == "uv export":
        assert versions["six"] == "1.16.0"


def test_a_pep751_lock_whose_packages_are_in_its_default_group_installs_them(pyimage: Pyimage, tmp_path: Path) -> None:
    """A new-user trial: `pdm export -f pylock` (PDM 2.29) marks every runtime package `"default" in
    dependency_groups` and lists `default-groups = ["default"]`; pyimage selected with no group, skipped them all,
    and said the fresh lock was out of date, with a uv/pip command to fix it. PEP 751: the default groups are what
    is installed when none is chosen. The file here is uv's export put in PDM's shape (as the trial's PDM wrote it),
    with a `dev` group that stays out."""
    project = make_project(tmp_path / "team-app", ["six>=1.15", "attrs"], '\n[dependency-groups]\ndev = ["iniconfig"]\n')
    uv(project, "lock")
    uv(project, "export", "--format", "pylock.toml", "--all-groups", "-o", "pylock.toml")
    (project / "uv.lock").unlink()
    data = tomllib.loads((project / "pylock.toml").read_text())
    text = 'lock-version = "1.0"\ncreated-by = "pdm"\ndependency-groups = ["default", "dev"]\ndefault-groups = ["default"]\n'
    for package in (p for p in data["packages"] if "wheels" in p):  # the project's own directory entry is left out
        group = f'"{"dev" if package["name"] == "iniconfig" else "default"}" in dependency_groups'
        marker = f"({package['marker']}) and {group}" if package.get("marker") else group
        wheels = ", ".join(f'{{ name = "{w["url"].rsplit("/", 1)[1]}", url = "{w["url"]}", hashes = {{ sha256 = "{w["hashes"]["sha256"]}" }} }}' for w in package["wheels"])
        text += f'\n[[packages]]\nname = "{package["name"]}"\nversion = "{package["version"]}"\nmarker = {json.dumps(marker)}\nwheels = [{wheels}]\n'
    (project / "pylock.toml").write_text(text)

    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}:t", project=project, env=no_resolver_env(tmp_path))

    assert "installing from pylock.toml as locked" in done.stderr
    versions = installed(tmp_path / "layout", "t")
    assert {"six", "attrs"} <= set(versions) and "iniconfig" not in versions
    # a lock that really is stale names the tool that wrote it
    (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text().replace('"attrs"]', '"attrs", "idna"]'))
    stale = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}:t", project=project, check=False)
    assert stale.returncode != 0 and "pdm export -f pylock -o pylock.toml" in stale.stderr.strip().splitlines()[-1], stale.stderr


def test_a_lock_without_a_wheel_for_the_target_is_one_error_naming_package_and_target(pyimage: Pyimage, arm64_rootfs: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "team-app", ["markupsafe"])
    # pip lock records the wheels for the machine it runs on only: here, x86_64
    subprocess.run([sys.executable, "-m", "pip", "lock", "-q", "-o", "pylock.toml", "."], cwd=project, check=True, capture_output=True)
    version = locked_versions((project / "pylock.toml").read_text())["markupsafe"].pop()

    done = pyimage.run(
        "build", "--platform", "linux/arm64", "--base", f"rootfs:{arm64_rootfs}", "-o", f"oci:{tmp_path / 'layout'}:t",
        project=project, base=False, check=False,
    )

    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: markupsafe {version}: pylock.toml lists no wheel for CPython 3.11 on linux/arm64"), done.stderr
    assert "hint: lock for this platform too" in done.stderr


def test_pyimages_own_lock_takes_a_name_no_other_tool_writes_and_an_old_one_is_renamed_once(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    pyimage.build(project, tmp_path / "layout")
    own = project / "pylock.pyimage.toml"
    assert own.is_file() and not (project / "pylock.toml").exists()
    pins = locked_versions(own.read_text())
    # as pyimage wrote it before: named pylock.toml, one target, its inputs hash at [tool.pyimage] inputs
    data = tomllib.loads(own.read_text())
    (table,) = data["tool"]["pyimage"]["targets"].values()
    text = own.read_text().split("[tool.pyimage.targets.")[0]
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("marker = ", "tool.pyimage.target = ")))
    (project / "pylock.toml").write_text(text + f'\n[tool.pyimage]\ninputs = "{table["inputs"]}"\ntarget = "{table["target"]}"\n')
    own.unlink()

    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}", project=project)

    assert "pylock.toml was pyimage's lock: renamed to pylock.pyimage.toml" in done.stderr
    assert "resolving dependencies" not in done.stderr  # the migrated lock is still valid: no resolution
    assert locked_versions(own.read_text()) == pins and not (project / "pylock.toml").exists()
    assert "targets" in tomllib.loads(own.read_text())["tool"]["pyimage"]  # rewritten once in the per-platform form


def test_another_tools_pylock_toml_is_never_taken_for_pyimages_own(pyimage: Pyimage, tmp_path: Path) -> None:
    project = make_project(tmp_path / "team-app", ["six"], '\n[tool.pyimage]\nlock-input = "none"\n')
    subprocess.run([sys.executable, "-m", "pip", "lock", "-q", "-o", "pylock.toml", "."], cwd=project, check=True, capture_output=True)
    theirs = (project / "pylock.toml").read_bytes()

    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}:t", project=project)

    assert "renamed" not in done.stderr and (project / "pylock.toml").read_bytes() == theirs
    assert (project / "pylock.pyimage.toml").is_file()


def test_building_amd64_then_arm64_leaves_pyimages_lock_unchanged_the_second_time(pyimage: Pyimage, arm64_rootfs: Path, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    own = project / "pylock.pyimage.toml"

    def build(platform: str, rootfs: Path) -> str:
        return pyimage.run("build", "--platform", platform, "--base", f"rootfs:{rootfs}", "-o", f"oci:{tmp_path / 'layout'}:t", project=project, base=False).stderr

    build("linux/amd64", pyimage.base)
    build("linux/arm64", arm64_rootfs)
    first_round = own.read_bytes()
    assert set(tomllib.loads(first_round.decode())["tool"]["pyimage"]["targets"]) == {"linux/amd64", "linux/arm64"}
    assert "platform_machine == 'aarch64'" in first_round.decode() and "platform_machine == 'x86_64'" in first_round.decode()
    # Not checked here: packaging.pylock's validation, which refuses the url-less entries pyimage writes for
    # wheels from local find-links directories (kept portable: found again by name, version and hash).
    assert "resolving dependencies" not in build("linux/amd64", pyimage.base)
    assert "resolving dependencies" not in build("linux/arm64", arm64_rootfs)
    assert own.read_bytes() == first_round


def test_pyimage_lock_refuses_to_rewrite_the_teams_lock(pyimage: Pyimage, tmp_path: Path) -> None:
    project = make_project(tmp_path / "team-app", ["six"])
    uv(project, "lock")
    lock_bytes = (project / "uv.lock").read_bytes()

    done = pyimage.run("lock", project=project, check=False)

    assert done.returncode == 2 and "error: the project's lock is uv.lock; pyimage does not rewrite it" in done.stderr
    assert (project / "uv.lock").read_bytes() == lock_bytes


def test_lock_input_none_ignores_the_teams_lock_and_pyimage_resolves(pyimage: Pyimage, tmp_path: Path) -> None:
    project = make_project(tmp_path / "team-app", ["six"], '\n[tool.pyimage]\nlock-input = "none"\n')
    uv(project, "lock")
    lock_bytes = (project / "uv.lock").read_bytes()

    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}:t", project=project)

    assert "resolving dependencies" in done.stderr and (project / "pylock.pyimage.toml").is_file()
    assert (project / "uv.lock").read_bytes() == lock_bytes


POETRY = [sys.executable, "-m", "poetry"]
# This machine's PyPI serves the simple API but not the JSON API Poetry's default source reads, so the test
# projects name PyPI's simple index as their source (poetry.lock then records it as each package's source).
POETRY_PROJECT = """
[project.optional-dependencies]
fancy = ["idna"]

[tool.poetry.group.dev.dependencies]
iniconfig = "*"

[[tool.poetry.source]]
name = "pypi-simple"
url = "https://pypi.org/simple/"
priority = "primary"

[tool.pyimage]
extras = ["fancy"]
"""


def poetry_project(root: Path, dependencies: list[str]) -> Path:
    project = make_project(root, dependencies, POETRY_PROJECT)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('requires = ["hatchling"]\nbuild-backend = "hatchling.build"', 'requires = ["poetry-core>=2.0"]\nbuild-backend = "poetry.core.masonry.api"'))
    (project / "src" / "team_app" / "__init__.py").write_text("import markupsafe, six\n\ndef main():\n    print('hi', markupsafe.escape('<b>'), six.__version__)\n")
    subprocess.run([*POETRY, "lock", "--no-interaction"], cwd=project, check=True, capture_output=True, text=True)
    return project


def test_a_poetry_lock_is_installed_as_locked_with_no_resolver_and_left_byte_for_byte(pyimage: Pyimage, tmp_path: Path) -> None:
    project = poetry_project(tmp_path / "team-app", ["six>=1.15,<1.17", "attrs", "markupsafe; python_version >= '3.9'"])
    lock_bytes = (project / "poetry.lock").read_bytes()

    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}:t", project=project, env=no_resolver_env(tmp_path))

    assert "installing from poetry.lock as locked" in done.stderr and "resolving dependencies" not in done.stderr
    assert (project / "poetry.lock").read_bytes() == lock_bytes
    assert not (project / "pylock.pyimage.toml").exists()
    locked = {name: versions.pop() for name, versions in locked_versions(lock_bytes.decode()).items()}
    versions = installed(tmp_path / "layout", "t")
    assert {name: versions[name] for name in ("six", "attrs", "markupsafe", "idna")} == {n: locked[n] for n in ("six", "attrs", "markupsafe", "idna")}
    assert versions["six"] == "1.16.0"
    assert "iniconfig" not in versions  # the dev group stays out of the image
    out = run_image(tmp_path / "layout", "t").stdout
    assert f"hi &lt;b&gt; {locked['six']}" in out  # markupsafe's compiled wheel for the target runs there
    # a rebuild asks no index: with every HTTP(S) request sent to a dead proxy it still builds, the same image
    offline = dict(no_resolver_env(tmp_path), HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")
    again = pyimage.run("build", "--json", "-o", f"oci:{tmp_path / 'again'}:t", project=project, env=offline)
    first = json.loads(pyimage.run("build", "--json", "-o", f"oci:{tmp_path / 'layout'}:t", project=project).stdout)
    assert json.loads(again.stdout)["image"]["digest"] == first["image"]["digest"]


def test_a_poetry_lock_out_of_date_with_pyproject_is_one_error_with_the_fix(pyimage: Pyimage, tmp_path: Path) -> None:
    project = poetry_project(tmp_path / "team-app", ["six"])
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('["six"]', '["six", "attrs"]'))

    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}:t", project=project, check=False)

    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {project / 'poetry.lock'} is out of date with pyproject.toml (its content-hash differs)"]
    assert "hint: run `poetry lock`" in done.stderr and "Traceback" not in done.stderr
    subprocess.run([*POETRY, "lock", "--no-interaction"], cwd=project, check=True, capture_output=True)
    assert "installing from poetry.lock" in pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}:t", project=project).stderr


def test_a_requirements_file_with_hashes_is_installed_as_locked_with_no_resolver(pyimage: Pyimage, tmp_path: Path) -> None:
    project = make_project(tmp_path / "team-app", ["six>=1.15", "attrs", "markupsafe"], '\n[tool.pyimage]\nrequirements = "requirements.txt"\n')
    (project / "requirements.in").write_text("six==1.16.0\nattrs\nmarkupsafe\n")  # the team's tested pin of six is old
    uv(project, "pip", "compile", "--generate-hashes", "--universal", "--no-config", "-q", "requirements.in", "-o", "requirements.txt")
    text = (project / "requirements.txt").read_text()
    assert "--hash=sha256:" in text
    pinned = dict(line.split(" ")[0].split("==") for line in text.splitlines() if "==" in line and not line.startswith(("#", " ")))

    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}:t", project=project, env=no_resolver_env(tmp_path))

    assert "installing from requirements.txt as locked" in done.stderr and "resolving dependencies" not in done.stderr
    assert (project / "requirements.txt").read_text() == text and not (project / "pylock.pyimage.toml").exists()
    versions = installed(tmp_path / "layout", "t")
    assert {name: versions[name] for name in pinned} == pinned and pinned["six"] == "1.16.0"
    # a rebuild asks no index: behind a dead proxy it builds the same image from the cache
    offline = dict(no_resolver_env(tmp_path), HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")
    again = json.loads(pyimage.run("build", "--json", "-o", f"oci:{tmp_path / 'again'}:t", project=project, env=offline).stdout)
    first = json.loads(pyimage.run("build", "--json", "-o", f"oci:{tmp_path / 'layout'}:t", project=project).stdout)
    assert again["image"]["digest"] == first["image"]["digest"]
    refused = pyimage.run("lock", project=project, check=False)
    assert refused.returncode == 2 and "error: requirements.txt pins and hashes every requirement; pyimage does not rewrite it" in refused.stderr
    assert (project / "requirements.txt").read_text() == text


def test_a_partly_hashed_requirements_file_is_one_error_before_any_work(pyimage: Pyimage, tmp_path: Path) -> None:
    project = make_project(tmp_path / "team-app", ["six"], '\n[tool.pyimage]\nrequirements = "requirements.txt"\n')
    (project / "requirements.txt").write_text("six==1.16.0 --hash=sha256:" + "1" * 64 + "\nattrs==25.1.0\n")

    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}:t", project=project, check=False)

    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: requirements.txt line 2: attrs has no --hash=sha256:…, and once one requirement has a hash every one must (pip's rule)"]
    assert "--generate-hashes" in done.stderr and "Traceback" not in done.stderr
    assert "base:" not in done.stderr  # refused before the base is read or the project's wheel built


@pytest.mark.parametrize("lock", ["none", "uv.lock"])
def test_an_extra_the_project_lacks_is_one_error_before_resolving(pyimage: Pyimage, tmp_path: Path, lock: str) -> None:
    """New-user trial: a misspelt extra was resolved past in silence (pip and uv only warn), and with a uv.lock it
    was reported as a broken lock. It is one error naming the project's extras, with or without a lock."""
    project = make_project(tmp_path / "team-app", ["six"], UV_EXTRA.replace('extras = ["fancy"]', 'extras = ["fancyy"]'))
    if lock == "uv.lock":
        uv(project, "lock")
    done = pyimage.run("plan", project=project, check=False, env=no_resolver_env(tmp_path))
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-2:] == [
        "error: extras: team-app has no extra 'fancyy' (it has: fancy)",
        "hint: did you mean 'fancy'? fix [tool.pyimage] extras (or --set extras=…) to name one of [project.optional-dependencies]",
    ]
    assert "resolving dependencies" not in done.stderr
