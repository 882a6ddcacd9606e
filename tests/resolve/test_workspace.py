"""Where local packages come from: uv workspace discovery as uv does it, ``[tool.uv.sources]`` rules, PEP 508
``file:`` references, the source-root boundary, and the lock's directory entries checked against pyproject.toml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyimage.cache import Cache
from pyimage.errors import ConfigError
from pyimage.oci.model import Platform
from pyimage.resolve.lockinput import locked_pins, target_environment
from pyimage.resolve.target import Target
from pyimage.resolve.workspace import collect, find_workspace, local_sources, member_dir, source_root

TARGET = Target("3.11", Platform("linux", "amd64"), "glibc", "2.36")
ENV = target_environment(TARGET)


def project(directory: Path, name: str | None, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    head = f'[project]\nname = "{name}"\nversion = "1.0"\n\n' if name else ""
    (directory / "pyproject.toml").write_text(head + extra)
    return directory


@pytest.fixture
def monorepo(tmp_path: Path) -> Path:
    root = project(tmp_path / "repo", None, '[tool.uv.workspace]\nmembers = ["services/*", "libs/*"]\nexclude = ["libs/old"]\n\n[tool.uv.sources]\nshared = { workspace = true }\n')
    project(root / "libs" / "shared", "Shared")
    project(root / "libs" / "old", "old")
    project(root / "libs" / "other", "other")
    project(root / "services" / "api", "api", '[tool.uv.sources]\nother = { path = "../../libs/other" }\n')
    (root / "services" / "notes").mkdir()  # no pyproject.toml: no member
    project(root / "tools" / "outside", "outside")
    return root


def sources(requires: list[str], directory: Path, workspace_root: Path | None = None, extras: tuple[str, ...] = ()) -> dict[str, tuple[Path, str]]:
    workspace = find_workspace(workspace_root or directory)
    allowed = source_root(directory, workspace)
    found = local_sources(requires, extras, directory, "app", workspace, allowed, ENV)
    return {s.name: (s.directory, s.kind) for s in found}


def test_a_member_finds_its_workspace_root_and_the_members_follow_the_globs_minus_exclude(monorepo: Path) -> None:
    workspace = find_workspace(monorepo / "services" / "api")
    assert workspace is not None and workspace.root == monorepo.resolve()
    assert [name for name, _ in workspace.members] == ["api", "other", "shared"]
    assert find_workspace(monorepo / "tools" / "outside") is None  # under the root but no member: uv's rule
    assert find_workspace(monorepo.parent) is None


def test_package_picks_a_member_by_name_and_an_unknown_name_lists_the_members(monorepo: Path) -> None:
    assert member_dir(monorepo, "Shared") == (monorepo / "libs" / "shared").resolve()
    assert member_dir(monorepo / "services" / "api", "shared") == (monorepo / "libs" / "shared").resolve()
    with pytest.raises(ConfigError, match="no member of the workspace .* is named nope") as err:
        member_dir(monorepo, "nope")
    assert err.value.hint == "the members are: api, other, shared"
    with pytest.raises(ConfigError, match="not inside a uv workspace"):
        member_dir(monorepo.parent, "shared")


def test_a_members_own_sources_are_relative_to_it_and_the_roots_apply_to_every_member(monorepo: Path) -> None:
    api = monorepo / "services" / "api"
    found = sources(["shared", "other>=1", "six"], api)
    assert found == {"shared": ((monorepo / "libs" / "shared").resolve(), "workspace member"), "other": ((monorepo / "libs" / "other").resolve(), "path source")}


def test_a_requirement_whose_marker_does_not_hold_on_the_target_builds_nothing(monorepo: Path) -> None:
    api = monorepo / "services" / "api"
    assert sources(['shared; sys_platform == "win32"', 'other; extra == "more"'], api) == {}
    assert set(sources(['other; extra == "more"'], api, extras=("more",))) == {"other"}


def test_marker_conditional_sources_take_the_first_that_holds_and_an_index_source_is_not_local(tmp_path: Path) -> None:
    project(tmp_path / "lib-linux", "lib")
    app = project(
        tmp_path / "app", "app",
        '[tool.uv.sources]\nlib = [{ path = "../lib-win", marker = "sys_platform == \'win32\'" }, { path = "../lib-linux", marker = "sys_platform == \'linux\'" }]\n'
        'torch = { index = "pytorch-cpu" }\n',
    )
    assert sources(["lib", "torch"], app) == {"lib": ((tmp_path / "lib-linux").resolve(), "path source")}


def test_a_file_url_to_a_directory_is_local_and_keeps_its_url_for_the_resolver(tmp_path: Path) -> None:
    helper = project(tmp_path / "helper", "helper")
    app = project(tmp_path / "app", "app")
    workspace = None
    (found,) = local_sources([f"helper[fast] @ {helper.as_uri()}"], (), app, "app", workspace, source_root(app, workspace), ENV)
    assert (found.name, found.directory, found.extras, found.url, found.kind) == ("helper", helper.resolve(), ("fast",), helper.as_uri(), "file: requirement")
    assert local_sources(["six @ https://example.org/six-1.0-py3-none-any.whl"], (), app, "app", None, tmp_path, ENV) == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('{ path = "../missing" }', r"helper: .* points to .*missing, which does not exist"),
        ('{ path = "../../elsewhere" }', r"helper: .* outside .*\(the workspace or repository being built\)"),
        ('{ path = "../empty" }', "holds no pyproject.toml or setup.py"),
        ('{ path = "../file.whl" }', "is a file; pyimage builds path dependencies from their source directory"),
        ("{ workspace = true }", r"says \{ workspace = true \}, but there is no uv workspace here"),
    ],
    ids=["missing", "outside", "not-a-project", "a-file", "workspace-without-one"],
)
def test_a_bad_path_source_is_one_config_error_naming_the_package(tmp_path: Path, source: str, message: str) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "empty").mkdir(parents=True)
    (checkout / "file.whl").write_bytes(b"")
    project(tmp_path / "elsewhere", "helper")
    app = project(checkout / "app", "app", f"[tool.uv.sources]\nhelper = {source}\n")
    with pytest.raises(ConfigError, match=message):
        sources(["helper"], app)


def test_the_source_root_is_the_workspace_else_the_repository_else_the_projects_parent(tmp_path: Path, monorepo: Path) -> None:
    assert source_root(monorepo / "services" / "api", find_workspace(monorepo / "services" / "api")) == monorepo.resolve()
    repo = tmp_path / "git-repo"
    (repo / ".git").mkdir(parents=True)
    app = project(repo / "apps" / "one", "one")
    assert source_root(app, None) == repo.resolve()
    assert source_root(project(tmp_path / "plain" / "app", "app"), None) == (tmp_path / "plain").resolve()


def test_collect_follows_local_packages_transitively_and_refuses_a_cycle_to_the_app(monorepo: Path) -> None:
    api = monorepo / "services" / "api"
    workspace = find_workspace(api)
    built: list[str] = []
    requires = {"shared": ["other", "six"], "other": []}
    project(monorepo / "libs" / "shared", "shared", '[tool.uv.sources]\nother = { path = "../other" }\n')  # its own source, relative to it

    def build(source):  # type: ignore[no-untyped-def]
        built.append(source.name)
        return source.directory / "fake.whl", requires[source.name]

    local = collect(["shared"], (), api, "api", workspace, ENV, build)
    assert [p.source.name for p in local] == ["other", "shared"] and built == ["shared", "other"]
    requires["other"] = ["api"]
    (monorepo / "libs" / "other" / "pyproject.toml").write_text('[project]\nname = "other"\nversion = "1"\n\n[tool.uv.sources]\napi = { workspace = true }\n')
    with pytest.raises(ConfigError, match="other depends on api .* which is the project being built"):
        collect(["shared"], (), api, "api", workspace, ENV, build)


LOCK_WITH_DIRECTORY = 'lock-version = "1.0"\ncreated-by = "uv"\n\n[[packages]]\nname = "shared"\ndirectory = {{ path = {path} }}\n'


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"shared": "libs/shared"}, None),
        ({"shared": "libs/elsewhere"}, "takes shared from libs/shared, but pyproject.toml says"),
        ({}, "shared is a local path dependency in pylock.toml .* that pyproject.toml does not declare"),
        ({"shared": "libs/shared", "other": "libs/other"}, "out of date with pyproject.toml: it lacks the local package other"),
    ],
    ids=["matches", "another-directory", "undeclared", "missing-from-lock"],
)
def test_a_locks_directory_entries_must_be_the_local_packages_pyproject_declares(tmp_path: Path, declared: dict[str, str], message: str | None) -> None:
    (tmp_path / "pylock.toml").write_text(LOCK_WITH_DIRECTORY.format(path=json.dumps("libs/shared")))
    local = {name: tmp_path / rel for name, rel in declared.items()}

    def call() -> list:  # type: ignore[type-arg]
        return locked_pins(tmp_path / "pylock.toml", "app", [], [], [], TARGET, Cache(tmp_path / "cache"), lambda _: None, local=local)

    if message is None:
        assert call() == []
    else:
        with pytest.raises(ConfigError, match=message):
            call()


def test_a_virtual_workspace_root_is_not_built_and_the_error_names_the_members(monorepo: Path) -> None:
    from pyimage.resolve.workspace import check_buildable

    with pytest.raises(ConfigError, match="root of a uv workspace and has no \\[project\\]") as err:
        check_buildable(monorepo, find_workspace(monorepo))
    assert "--package NAME (members: api, other, shared)" in err.value.hint
    check_buildable(monorepo / "services" / "api", find_workspace(monorepo / "services" / "api"))  # a member is fine


def test_an_unreadable_pyproject_above_the_project_does_not_stop_the_search(tmp_path: Path, monorepo: Path) -> None:
    (monorepo.parent / "pyproject.toml").write_text("this is [not toml")
    assert find_workspace(monorepo / "services" / "api") is not None
    assert find_workspace(project(tmp_path / "repo-free" / "app", "app")) is None


def test_a_member_that_is_a_symlink_out_of_the_workspace_is_refused(tmp_path: Path, monorepo: Path) -> None:
    project(tmp_path / "elsewhere" / "shared", "shared")
    (monorepo / "libs" / "shared" / "pyproject.toml").unlink()
    (monorepo / "libs" / "shared").rmdir()
    (monorepo / "libs" / "shared").symlink_to(tmp_path / "elsewhere" / "shared")
    with pytest.raises(ConfigError, match=r"shared: .*workspace = true.* points to .*elsewhere/shared, outside"):
        sources(["shared"], monorepo / "services" / "api")
