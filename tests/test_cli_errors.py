"""The real ``pyimage`` command on a user mistake: exit code 2, an ``error:`` line, a ``hint:`` line, no traceback.

Each test runs the installed console script in a fresh project whose ``[tool.pyimage]`` is wrong, so no
network, cache or base image is ever touched: configuration is checked before any work starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pyimage

PYPROJECT = """\
[project]
name = "demo"
version = "1.0"

[tool.pyimage]
base = "scratch"
{body}
"""


def pyimage_script() -> str:
    beside = Path(sys.executable).with_name("pyimage")  # the venv's own script, not a shim further up PATH
    found = str(beside) if beside.exists() else shutil.which("pyimage")
    if not found:
        pytest.fail("the pyimage console script is not installed (pip install -e .)")
    return found


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYIMAGE_DEBUG"}
    env["PYIMAGE_CACHE_DIR"] = str(cwd / ".cache")
    return subprocess.run(
        [pyimage_script(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


# The command run in a Python whose audit hook writes down every process it starts (subprocess, exec, spawn,
# fork): a mistake refused "before any work" must start none.
_WATCHED = """\
import sys
log = open(sys.argv.pop(1), "a")
def hook(event, args):
    if event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty"):
        log.write(event + " " + repr(args[:2]) + "\\n"); log.flush()
sys.addaudithook(hook)
from pyimage.cli import main
sys.argv[0] = "pyimage"
main()
"""


def run_watched(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``pyimage ARGS`` as ``run`` does it, and the processes it started."""
    spawned = cwd / "spawned.log"
    env = {k: v for k, v in os.environ.items() if k != "PYIMAGE_DEBUG"}
    env["PYIMAGE_CACHE_DIR"] = str(cwd / ".cache")
    done = subprocess.run(
        [sys.executable, "-c", _WATCHED, str(spawned), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    return done, spawned.read_text().splitlines() if spawned.exists() else []


def assert_no_work(tmp_path: Path, spawned: list[str]) -> None:
    """Nothing was started and nothing written: no process, no cache, no output."""
    assert spawned == []
    assert not (tmp_path / ".cache").exists()
    assert not any(p.name == "dist" for p in tmp_path.rglob("dist"))


def test_the_watch_sees_a_process_started(tmp_path: Path) -> None:
    """The harness itself: a process started before pyimage's CLI runs is written down, so an empty list in the
    tests below means pyimage started none."""
    starts = _WATCHED.replace("from pyimage.cli import main", "import subprocess; subprocess.run(['true'])\nfrom pyimage.cli import main")
    done = subprocess.run([sys.executable, "-c", starts, str(tmp_path / "probe.log"), "--version"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "probe.log").read_text().startswith("subprocess.Popen ")
    _, spawned = run_watched(["--version"], tmp_path)
    assert spawned == []


def make_project(tmp_path: Path, body: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.format(body=body))
    return tmp_path


def assert_user_error(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """Exit 2 and exactly ``error: …`` then ``hint: …`` on stderr, nothing else; returns the two lines."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: ")
    assert lines[1].startswith("hint: ")
    assert result.stdout == ""
    return lines[0], lines[1]


CASES = {
    "unknown-key": ("max_layers = 20", [], ("max_layers: unknown key", "did you mean 'max-layers'?")),
    "wrong-value": ('compression = "lz4"', [], ("compression: 'lz4' is not one of 'gzip', 'zstd', 'none'", "compression: ")),
    "wrong-type": ("heavy = 3", [], ("heavy: expected list of names, globs or {name, packages} tables, got 3", "heavy: ")),
    "set-without-equals": ("", ["--set", "max-layers"], ("--set 'max-layers': expected key=value", "--set max-layers=20")),
    "set-unknown-key": ("", ["--set", "heavy_treshold=1GB"], ("command line: --set heavy_treshold: unknown key", "did you mean 'heavy-threshold'?")),
    "set-wrong-value": ("", ["--set", "max-layers=500"], ("command line: --set max-layers: 500 is outside 2..127", "max-layers: ")),
    "toml-left-open": ("ports = [8000", [], ("pyproject.toml:7: invalid TOML: Unclosed array at the end of the file", "opened above is never closed")),  # the hint spoke of a line shown
    "toml-syntax": ("ports = 8000 x", [], ("pyproject.toml:7:14: invalid TOML: Expected newline", "at that line and column")),
    # was taken as the one string "[numpy,pandas]": "heavy group '[numpy,pandas]' matches no package", after resolving
    "set-unquoted-list": ("", ["--set", "heavy=[numpy,pandas]"], ("--set heavy=[numpy,pandas]: not a TOML list", """--set 'heavy=["numpy", "pandas"]'""")),
}


@pytest.mark.parametrize("body, extra, expected", list(CASES.values()), ids=list(CASES))
def test_a_config_mistake_exits_2_with_an_error_and_a_hint_line(
    body: str, extra: list[str], expected: tuple[str, str], tmp_path: Path
) -> None:
    project = make_project(tmp_path, body)

    error, hint = assert_user_error(run(["plan", "-C", str(project), *extra], tmp_path))

    assert expected[0] in error
    assert expected[1] in hint


@pytest.mark.parametrize("body, extra, expected", list(CASES.values()), ids=list(CASES))
def test_a_config_mistake_stops_build_before_any_process_or_write(
    body: str, extra: list[str], expected: tuple[str, str], tmp_path: Path
) -> None:
    project = make_project(tmp_path, body)
    (project / "src").mkdir()  # a project that would build: no mistake but the one in the case
    done, spawned = run_watched(["build", "-C", str(project), *extra], tmp_path)
    error, _ = assert_user_error(done)
    assert expected[0] in error
    assert_no_work(tmp_path, spawned)


@pytest.mark.parametrize("flag", ["--label", "--annotation"])
def test_a_label_or_annotation_without_equals_is_one_error_before_any_work(flag: str, tmp_path: Path) -> None:
    project = make_project(tmp_path, "")

    done, spawned = run_watched(["build", "-C", str(project), flag, "org.example.title"], tmp_path)
    error, hint = assert_user_error(done)

    assert f"{flag} 'org.example.title': expected KEY=VALUE" in error
    assert f"e.g. {flag} org.opencontainers.image.source=" in hint
    assert_no_work(tmp_path, spawned)


def test_an_unknown_flag_is_a_usage_error_in_the_same_two_line_form(tmp_path: Path) -> None:
    project = make_project(tmp_path, "")

    error, hint = assert_user_error(run(["plan", "-C", str(project), "--no-such-flag"], tmp_path))

    assert "--no-such-flag" in error
    assert "--help" in hint


def test_an_unknown_command_is_a_usage_error_in_the_same_two_line_form(tmp_path: Path) -> None:
    error, _ = assert_user_error(run(["biuld"], tmp_path))

    assert "biuld" in error


def test_no_command_shows_the_help_and_exits_2(tmp_path: Path) -> None:
    result = run([], tmp_path)

    assert result.returncode == 2
    assert "Usage" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def test_a_failed_cache_verify_exits_1(tmp_path: Path) -> None:
    blobs = tmp_path / "cache" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / ("0" * 64)).write_bytes(b"not what the digest says")

    result = run(["cache", "verify", "--cache-dir", str(tmp_path / "cache")], tmp_path)

    assert result.returncode == 1, result.stderr
    assert f"removed corrupt blob sha256:{'0' * 64}" in result.stderr
    assert not (blobs / ("0" * 64)).exists()


def test_the_error_line_names_the_file_and_line(tmp_path: Path) -> None:
    project = make_project(tmp_path, 'compression = "gzip"\nmax_layers = 20')

    error, _ = assert_user_error(run(["build", "-C", str(project)], tmp_path))

    assert error == f"error: {project / 'pyproject.toml'}:8: [tool.pyimage] max_layers: unknown key"


def test_debug_shows_the_traceback_and_still_ends_with_error_and_hint(tmp_path: Path) -> None:
    project = make_project(tmp_path, "max_layers = 20")

    result = run(["--debug", "plan", "-C", str(project)], tmp_path)

    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "ConfigError" in result.stderr
    lines = result.stderr.splitlines()
    assert lines[-2].startswith("error: ") and lines[-1].startswith("hint: ")


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    result = run(["--version"], tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"pyimage {pyimage.__version__}"


def test_inspect_with_a_malformed_platform_is_one_config_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pyimage", "inspect", "--platform", "amd64", f"oci:{tmp_path}"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-2] == "error: --platform 'amd64': not a platform: 'amd64' (expected os/arch[/variant], e.g. linux/amd64)"


def test_building_for_windows_is_one_error_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.format(body=""))

    error, hint = assert_user_error(run(["build", "--platform", "windows/amd64"], tmp_path))

    assert error == "error: command line: --platform: 'windows/amd64': pyimage builds Linux images (its wheels, interpreter and base are Linux ones), not windows"
    assert hint == "hint: use linux/amd64"
    assert not (tmp_path / ".cache").exists()


def make_workspace(tmp_path: Path) -> Path:
    """A virtual uv workspace root with one member, ``svc`` (a scratch base: nothing is pulled)."""
    (tmp_path / "pyproject.toml").write_text('[tool.uv.workspace]\nmembers = ["services/*"]\n')
    member = tmp_path / "services" / "svc"
    member.mkdir(parents=True)
    (member / "pyproject.toml").write_text(PYPROJECT.format(body="").replace('"demo"', '"svc"'))
    return tmp_path


def test_package_naming_no_workspace_member_is_one_error_listing_the_members_before_any_work(tmp_path: Path) -> None:
    root = make_workspace(tmp_path)

    error, hint = assert_user_error(run(["build", "--package", "nope", "-C", str(root)], tmp_path))

    assert "--package nope: no member of the workspace at" in error and hint == "hint: the members are: svc"
    assert not (tmp_path / ".cache").exists()


def test_building_a_virtual_workspace_root_is_one_error_that_points_at_package(tmp_path: Path) -> None:
    root = make_workspace(tmp_path)

    error, hint = assert_user_error(run(["plan", "-C", str(root)], tmp_path))

    assert "is the root of a uv workspace and has no [project] of its own to build" in error
    assert "--package NAME (members: svc)" in hint


@pytest.mark.parametrize(
    "source, what",
    [
        ("docker-archive:x.tar", "an image archive"),
        ("oci-archive:x.tar", "an image archive"),
        ("x.tar", "an image archive"),
        ("docker-daemon:app:1.0", "an image of the local Docker Engine"),
        ("rootfs:base.tar", "a root filesystem tar, not an image"),
    ],
)
def test_index_of_something_other_than_a_layout_or_registry_says_what_index_takes(source: str, what: str, tmp_path: Path) -> None:
    error, hint = assert_user_error(run(["index", "-o", f"oci:{tmp_path / 'out'}", f"oci:{tmp_path / 'a'}", source], tmp_path))

    assert error == f"error: pyimage index {source!r}: that is {what}; index takes oci:DIR[:TAG] layouts and registry references"
    assert "build with -o oci:DIR and give oci:DIR" in hint and "push it to a registry" in hint
    assert not (tmp_path / ".cache").exists()


def test_credentials_in_a_push_reference_are_one_error_that_never_repeats_them(tmp_path: Path) -> None:
    """A new-user trial's ``--push user:pass@host/repo:tag`` was echoed back whole, password included."""
    project = make_project(tmp_path, "")
    done = run(["build", "-C", str(project), "--push", "user:s3cr3t@127.0.0.1:5055/app:1"], tmp_path)
    error, hint = assert_user_error(done)
    assert "'***@127.0.0.1:5055/app:1': a registry reference cannot carry credentials" in error and "--password-stdin" in hint
    assert "s3cr3t" not in done.stdout + done.stderr


def test_an_empty_password_on_stdin_is_said_before_any_registry_is_asked(tmp_path: Path) -> None:
    """``--password-stdin < /dev/null`` (an empty CI secret) sent an empty password and met a bare 401."""
    project = make_project(tmp_path, "")
    error, hint = assert_user_error(run(["build", "-C", str(project), "--push", "127.0.0.1:9/app:1", "--username", "u", "--password-stdin"], tmp_path))
    assert error == "error: --password-stdin read no password from standard input" and "token-file" in hint
