"""First-party packages from local paths: a uv workspace (locked by the real uv) with two services sharing a
library and a third-party dependency, a non-member ``path`` source, and a PEP 508 ``name @ file:`` dependency
without any workspace. Each local package is built into a wheel and installed into the ``workspace`` layer; the
images run in runc and print what the shared code says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.runc import run_image

from .conftest import Pyimage
from .test_lock_inputs import no_resolver_env

pytestmark = pytest.mark.e2e

UV = [sys.executable, "-m", "uv"]
HATCH = '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'


def package(directory: Path, name: str, dependencies: list[str], code: str, extra: str = "") -> Path:
    """A hatchling project ``name`` in ``directory`` whose module is ``code``."""
    module = directory / "src" / name.replace("-", "_")
    module.mkdir(parents=True)
    (module / "__init__.py").write_text(code)
    deps = ", ".join(json.dumps(d) for d in dependencies)
    (directory / "pyproject.toml").write_text(HATCH + f'[project]\nname = "{name}"\nversion = "1.0"\nrequires-python = ">=3.9"\ndependencies = [{deps}]\n\n' + extra)
    return directory


LIB_V1 = "import attrs, six\n\n@attrs.define\nclass Greeting:\n    who: str\n\ndef greet(who):\n    return f'hello {Greeting(who).who} from shared-lib v1 (six {six.__version__})'\n"


def service(root: Path, name: str, extra_deps: list[str], sources: str) -> Path:
    code = f"from shared_lib import greet\n\ndef main():\n    print(greet('{name}'))\n"
    if "tools" in extra_deps:
        code += "    import tools; print(tools.NAME)\n"
    extra = f'[project.scripts]\n{name} = "{name.replace("-", "_")}:main"\n\n[tool.uv.sources]\n{sources}\n[tool.pyimage]\nheavy = ["attrs"]\n'
    return package(root / "services" / name, name, ["shared-lib", *extra_deps], code, extra)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """services/svc-a and services/svc-b (members) share libs/shared (a member, needing attrs and six); svc-b
    also takes vendor/tools, a non-member, by a ``path`` source. Locked by the real uv at the root."""
    root = tmp_path / "monorepo"
    root.mkdir()
    (root / "pyproject.toml").write_text('[tool.uv.workspace]\nmembers = ["services/*", "libs/*"]\n')
    package(root / "libs" / "shared", "shared-lib", ["attrs", "six"], LIB_V1)
    package(root / "vendor" / "tools", "tools", [], "NAME = 'tools from vendor/tools'\n")
    service(root, "svc-a", [], "shared-lib = { workspace = true }\n")
    service(root, "svc-b", ["tools"], 'shared-lib = { workspace = true }\ntools = { path = "../../vendor/tools" }\n')
    subprocess.run([*UV, "lock"], cwd=root, check=True, capture_output=True, text=True, env=dict(os.environ, UV_NO_PROGRESS="1"))
    return root


def layers(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {layer["name"]: layer for layer in report["layers"] if layer["name"]}


def build(pyimage: Pyimage, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return json.loads(pyimage.run("build", "--json", *args, env=env).stdout)


def test_two_services_share_third_party_layers_byte_for_byte_and_each_has_its_own_workspace_and_app(pyimage: Pyimage, workspace: Path, tmp_path: Path) -> None:
    lock_bytes = (workspace / "uv.lock").read_bytes()
    no_resolver = no_resolver_env(tmp_path)  # any resolution of six or attrs fails: both come from uv.lock
    a = build(pyimage, "-o", f"oci:{tmp_path / 'a'}:a", "--package", "svc-a", "-C", str(workspace), env=no_resolver)  # from the root, by name
    b = build(pyimage, str(workspace / "services" / "svc-b"), "-o", f"oci:{tmp_path / 'b'}:b", env=no_resolver)  # the member's directory

    assert (workspace / "uv.lock").read_bytes() == lock_bytes
    la, lb = layers(a), layers(b)
    for shared in ("heavy:attrs", "site-packages"):
        assert la[shared]["digest"] == lb[shared]["digest"], shared
    assert [p.split("==")[0] for p in la["site-packages"]["packages"]] == ["six"]
    assert [p.split("==")[0] for p in la["workspace"]["packages"]] == ["shared-lib"]
    assert [p.split("==")[0] for p in lb["workspace"]["packages"]] == ["shared-lib", "tools"]
    assert la["workspace"]["digest"] != lb["workspace"]["digest"] and la["app"]["digest"] != lb["app"]["digest"]
    names = [layer["name"] for layer in a["layers"]]
    assert names.index("site-packages") < names.index("workspace") < names.index("app")

    out_a = run_image(tmp_path / "a", "a").stdout
    out_b = run_image(tmp_path / "b", "b").stdout
    assert "hello svc-a from shared-lib v1 (six 1.17.0)" in out_a
    assert "hello svc-b from shared-lib v1" in out_b and "tools from vendor/tools" in out_b
    # installed as a normal (non-editable) package: no .pth file or direct_url pointing at this machine
    listing = run_image(tmp_path / "a", "a", args=["/opt/venv/bin/python", "-c", "import shared_lib; print(shared_lib.__file__)"]).stdout
    assert "/opt/venv/lib/python3.11/site-packages/shared_lib/__init__.py" in listing


def test_a_change_to_the_shared_library_rebuilds_only_the_workspace_layer(pyimage: Pyimage, workspace: Path, tmp_path: Path) -> None:
    before = build(pyimage, "-o", f"oci:{tmp_path / 'one'}:t", "--package", "svc-a", "-C", str(workspace))
    lib = workspace / "libs" / "shared" / "src" / "shared_lib" / "__init__.py"
    lib.write_text(LIB_V1.replace("shared-lib v1", "shared-lib v2"))

    after = build(pyimage, "-o", f"oci:{tmp_path / 'two'}:t", "--package", "svc-a", "-C", str(workspace))

    old, new = layers(before), layers(after)
    assert new["workspace"]["cached"] is False and new["workspace"]["digest"] != old["workspace"]["digest"]
    for unchanged in ("heavy:attrs", "site-packages", "app"):
        assert new[unchanged]["cached"] is True and new[unchanged]["digest"] == old[unchanged]["digest"], unchanged
    assert "hello svc-a from shared-lib v2" in run_image(tmp_path / "two", "t").stdout


def test_plan_json_lists_the_workspace_layer_with_where_each_package_was_built_from(pyimage: Pyimage, workspace: Path) -> None:
    done = pyimage.run("plan", "--json", "--package", "svc-b", "-C", str(workspace))
    plan = {layer["name"]: layer for layer in json.loads(done.stdout)["layers"]}
    reasons = {p["name"]: p["reason"] for p in plan["workspace"]["packages"]}
    assert reasons == {"shared-lib": "built from ../../libs/shared (workspace member)", "tools": "built from ../../vendor/tools (path source)"}
    assert list(plan).index("workspace") == list(plan).index("app") - 1


@pytest.mark.parametrize("resolver", ["uv", "pip"])
def test_a_file_url_path_dependency_without_a_workspace_is_built_and_the_lock_holds_no_machine_path(pyimage: Pyimage, tmp_path: Path, resolver: str) -> None:
    helper = package(tmp_path / "helper", "helper", ["six"], "import six\n\ndef hi():\n    return f'helper says hi (six {six.__version__})'\n")
    app = package(
        tmp_path / "app", "file-app", [f"helper @ {helper.as_uri()}"], "def main():\n    import helper\n    print(helper.hi())\n",
        '[project.scripts]\nfile-app = "file_app:main"\n\n[tool.hatch.metadata]\nallow-direct-references = true\n',
    )
    report = build(pyimage, "-o", f"oci:{tmp_path / 'img'}:t", "-C", str(app), "--set", f'resolver="{resolver}"')

    assert [p.split("==")[0] for p in layers(report)["workspace"]["packages"]] == ["helper"]
    assert [p.split("==")[0] for p in layers(report)["site-packages"]["packages"]] == ["six"]
    assert "helper says hi (six 1.17.0)" in run_image(tmp_path / "img", "t").stdout
    lock = (app / "pylock.pyimage.toml").read_text()
    assert str(tmp_path) not in lock and 'directory = { path = "../helper" }' in lock
    again = build(pyimage, "-o", f"oci:{tmp_path / 'img2'}:t", "-C", str(app), "--set", f'resolver="{resolver}"')  # the lock is reused, not rewritten
    assert (app / "pylock.pyimage.toml").read_text() == lock
    assert layers(again)["workspace"]["digest"] == layers(report)["workspace"]["digest"]


@pytest.mark.parametrize(
    ("source", "said"),
    [('{ path = "../missing" }', "does not exist"), ('{ path = "/usr/lib/python3" }', "outside")],
    ids=["missing", "outside"],
)
def test_a_path_dependency_that_is_missing_or_outside_the_project_is_one_error_line(pyimage: Pyimage, tmp_path: Path, source: str, said: str) -> None:
    app = package(tmp_path / "app", "bad-app", ["helper"], "def main():\n    pass\n", f'[project.scripts]\nbad-app = "bad_app:main"\n\n[tool.uv.sources]\nhelper = {source}\n')

    done = pyimage.run("plan", "-C", str(app), check=False)

    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "helper" in errors[0] and said in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_init_at_a_virtual_workspace_root_names_the_members_and_init_in_one_builds(pyimage: Pyimage, workspace: Path, tmp_path: Path) -> None:
    """New-user trial: `pyimage init` at the root of a uv workspace configured the root, which has nothing to build."""
    init = [sys.executable, "-m", "pyimage", "init", "--base", "python:3.12-slim"]
    done = subprocess.run([*init, "-C", str(workspace)], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    error, hint = done.stderr.strip().splitlines()[-2:]
    assert error == f"error: {workspace} is the root of a uv workspace and has no [project] of its own to make an image of"
    assert hint.startswith("hint: run `pyimage init -C DIR` with the directory of the member to ship (members: ") and "svc-a (services/svc-a)" in hint
    assert "[tool.pyimage]" not in (workspace / "pyproject.toml").read_text()  # left as it was

    member = workspace / "services" / "svc-a"
    pyproject = member / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[tool.pyimage]\nheavy = [\"attrs\"]\n", ""))
    done = subprocess.run([*init, "-C", str(member)], capture_output=True, text=True, check=True)
    assert "[tool.pyimage]" in pyproject.read_text()
    report = build(pyimage, "-C", str(member), "-o", f"oci:{tmp_path / 'a'}:t")
    assert layers(report)["workspace"]["packages"] == ["shared-lib==1.0"]
    assert run_image(tmp_path / "a", "t").stdout.strip().startswith("hello svc-a")
    assert "has a [tool.pyimage] table" not in json.dumps(report)  # the root has none: nothing to say

    # a root that is a package of its own is configured, and init says how a member's image is made
    root = workspace / "pyproject.toml"
    root.write_text('[project]\nname = "platform"\nversion = "1.0"\n\n' + root.read_text())
    done = subprocess.run([*init, "-C", str(workspace)], capture_output=True, text=True, check=True)
    assert "[tool.pyimage]" in root.read_text()
    note = next(line for line in done.stderr.splitlines() if line.startswith("note: this is also the root of a uv workspace"))
    assert "svc-a (services/svc-a)" in note and "`pyimage build --package NAME` here" in note


def test_a_workspace_root_with_a_project_but_no_build_system_names_its_members(pyimage: Pyimage, workspace: Path) -> None:
    """A new-user trial: a root as `uv init` writes it ([project], no [build-system]) was taken for an app that is
    not a package, with a hint that would copy the whole monorepo into /app."""
    root = workspace / "pyproject.toml"
    root.write_text('[project]\nname = "platform"\nversion = "1.0"\nrequires-python = ">=3.11"\ndependencies = []\n\n' + root.read_text())
    done = pyimage.run("plan", project=workspace, check=False)
    assert done.returncode == 2, done.stderr
    error, hint = done.stderr.strip().splitlines()[-2:]
    assert error == f"error: {root}: the root of a uv workspace, not a package (no [build-system]): nothing of its own to run"
    assert hint.startswith("hint: build a member: `pyimage build --package NAME` here") and "svc-a (services/svc-a)" in hint


def test_a_members_build_says_the_roots_tool_pyimage_is_not_read(pyimage: Pyimage, workspace: Path, tmp_path: Path) -> None:
    member = workspace / "services" / "svc-a"
    pyproject = member / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[tool.pyimage]\nheavy = [\"attrs\"]\n", ""))
    root = workspace / "pyproject.toml"
    root.write_text(root.read_text() + '\n[tool.pyimage]\nenv = { MODE = "prod" }\n')
    done = pyimage.run("plan", project=member)
    assert f"note: {root} has a [tool.pyimage] table, which a member's build does not read: copy the keys it needs into {pyproject}" in done.stderr
