"""The one owner of tool subprocesses (pyimage/tools.py), with the real tools: pip and uv runs that fail, a build
backend that raises, credentials that must not reach a message, a tool that is not there, Ctrl-C and timeouts
that must not leave a process group running."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from pyimage import tools
from pyimage.cache import Cache
from pyimage.errors import BuildError
from pyimage.oci.model import Platform
from pyimage.resolve import uv as uv_backend
from pyimage.resolve.appwheel import build_app_wheel
from pyimage.resolve.pip import Pin, fetch_wheels
from pyimage.resolve.target import Target
from support.tiny import tiny_project

TARGET = Target("3.11", Platform.parse("linux/amd64"), "glibc", "2.36")
SECRET = "s3cr3t-pa55word"


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip and uv with no index and an empty find-links directory: every name is unknown."""
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return links


def test_a_requirement_pip_cannot_find_is_one_line_naming_pip_and_the_step(offline: Path, tmp_path: Path) -> None:
    pin = Pin("no-such-dist", "1.0", "no_such_dist-1.0-py3-none-any.whl", "", "0" * 64)
    with pytest.raises(BuildError, match=r"^downloading the locked wheels: pip failed: No matching distribution found for no-such-dist==1\.0$") as err:
        fetch_wheels([pin], TARGET, Cache(tmp_path / "cache"))
    assert "\n" not in err.value.message
    assert err.value.hint == "check the network and index settings (find-links, index-url), or run `pyimage lock`"


def test_a_failed_run_says_the_tools_last_error_line_not_its_warnings(tmp_path: Path) -> None:
    ran = tools.run(
        [sys.executable, "-c", "import sys; print('WARNING: ignored', file=sys.stderr); print('ERROR: the real cause', file=sys.stderr); print('note: trailing chatter', file=sys.stderr); sys.exit(3)"],
        tool="python",
        doing="checking the tail",
    )
    assert not ran.ok and ran.returncode == 3
    with pytest.raises(BuildError, match=r"^checking the tail: python failed: the real cause$"):
        raise ran.error("a hint")


def test_a_tool_that_fails_silently_says_its_exit_status() -> None:
    ran = tools.run([sys.executable, "-c", "raise SystemExit(7)"], tool="python", doing="failing quietly")
    with pytest.raises(BuildError, match=r"^failing quietly: python failed: exit status 7, no message$"):
        raise ran.error("a hint")


def test_a_build_backend_that_raises_is_its_own_last_line(tmp_path: Path) -> None:
    project = tiny_project(tmp_path / "project")
    (project / "FAIL").write_text("the version file is missing")
    with pytest.raises(BuildError, match=r"^building the project's wheel failed: RuntimeError: the version file is missing$") as err:
        build_app_wheel(project, tmp_path / "out", Cache(tmp_path / "cache"), 0)
    assert "tiny backend: checking the sources" in err.value.details
    assert not any('File "' in line for line in err.value.details)


def test_a_backend_exception_of_several_lines_is_the_error_not_its_last_line(tmp_path: Path) -> None:
    # hatchling's "Unable to determine which files to ship" goes on with an example; its last line is that example
    project = tiny_project(tmp_path / "project")
    (project / "FAIL").write_text("Unable to determine which files to ship\nAs an example, you can define:\n[tool.hatch.build.targets.wheel]\npackages = [\"src/foo\"]")
    with pytest.raises(BuildError, match=r"^building the project's wheel failed: RuntimeError: Unable to determine which files to ship$") as err:
        build_app_wheel(project, tmp_path / "out", Cache(tmp_path / "cache"), 0)
    assert err.value.details[-2:] == ("[tool.hatch.build.targets.wheel]", 'packages = ["src/foo"]')
    assert "tiny backend: checking the sources" in err.value.details


def test_pip_building_with_a_raising_backend_fails_in_one_line(tmp_path: Path) -> None:
    project = tiny_project(tmp_path / "project")
    (project / "FAIL").write_text("the version file is missing")
    ran = tools.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "w"), str(project)],
        tool="pip",
        doing="building tinyapp",
    )
    assert "RuntimeError: the version file is missing" in ran.output
    with pytest.raises(BuildError, match=r"^building tinyapp: pip failed: RuntimeError: the version file is missing$"):
        raise ran.error("fix the backend")


def test_an_index_password_never_reaches_the_message_from_pip(offline: Path, tmp_path: Path) -> None:
    index = f"http://alice:{SECRET}@127.0.0.1:9/simple"
    ran = tools.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--retries", "0", "--timeout", "2", "-d", str(tmp_path / "d"), "--index-url", index, "no-such-dist"],
        tool="pip",
        doing="downloading no-such-dist",
        env={"PIP_NO_INDEX": "0"},
    )
    with pytest.raises(BuildError, match=r"^downloading no-such-dist: pip failed: ") as err:
        raise ran.error("check the index")
    assert SECRET not in err.value.message and SECRET not in ran.output and SECRET not in repr(ran)


def test_an_index_password_never_reaches_the_message_from_uv(offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIP_NO_INDEX")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://alice:{SECRET}@127.0.0.1:9/simple")
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    with pytest.raises(BuildError, match=r"^cannot reach the package index http://127\.0\.0\.1:9/simple while resolving for CPython 3\.11 [^\n]*: Connection refused") as err:
        uv_backend.resolve(["no-such-dist"], TARGET, Cache(tmp_path / "cache"))
    assert SECRET not in err.value.message and SECRET not in err.value.hint
    assert err.value.hint.startswith("check the index URL, VPN or proxy")  # not "change the requirements" (a new-user trial)


def test_a_token_a_tool_echoes_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool that prints a credential variable's value or a URL's user info (as a backend's traceback can)."""
    monkeypatch.setenv("UV_INDEX_PRIVATE_PASSWORD", SECRET)
    ran = tools.run(
        [sys.executable, "-c", "import os, sys; sys.exit('error: token ' + os.environ['UV_INDEX_PRIVATE_PASSWORD'] + ' refused by https://ghp_abcdef1234@example.com/simple')"],
        tool="uv",
        doing="installing",
    )
    with pytest.raises(BuildError, match=r"^installing: uv failed: token \*\*\*\* refused by https://\*\*\*\*@example\.com/simple$"):
        raise ran.error("a hint")


def test_redact_masks_url_passwords_and_lone_tokens() -> None:
    assert tools.redact("see https://bob:hunter22@pypi.example/simple/ and http://tok3n@h/x") == "see https://bob:****@pypi.example/simple/ and http://****@h/x"
    assert tools.redact("no credentials at https://pypi.org/simple") == "no credentials at https://pypi.org/simple"
    assert tools.redact("plain p@ss/w0rd and quoted p%40ss%2Fw0rd", ["p@ss/w0rd"]) == "plain **** and quoted ****"
    assert tools.redact("abc is too short to be told from a word", ["abc"]) == "abc is too short to be told from a word"


def test_a_tool_that_is_not_installed_is_a_build_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"^resolving the dependencies: uv is not installed \(or not on PATH\): .*/no-uv-here$") as err:
        tools.run([tmp_path / "no-uv-here", "pip", "compile"], tool="uv", doing="resolving the dependencies")
    assert err.value.hint == "install uv, or put it on PATH"


@pytest.mark.parametrize("tool", ["uv", "pip"])
def test_a_narrow_terminal_does_not_cut_the_tools_error_to_its_last_wrapped_line(tool: str, offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """uv (and pip's rich output) wrap their messages at $COLUMNS; the one-line error is the tool's last line, so in
    a 60-column terminal it read "uv failed: that your requirements are unsatisfiable." """
    from wheels_fixture import make_wheel

    make_wheel(offline, "six", "1.17.0")
    monkeypatch.setenv("COLUMNS", "40")
    if tool == "pip":
        monkeypatch.setenv("PIP_PREFER_BINARY", "1")  # a pip setting uv has no flag for: pip installs the environment
    with pytest.raises(BuildError) as err:
        from pyimage.resolve.appwheel import _env

        _env(Cache(tmp_path / "cache"), ["six>=99"], sys.executable)
    said = err.value.message.split(" failed: ", 1)[1]  # the tool's own words, after the step that names six>=99
    assert "six" in said and ("99" in said or "version" in said), err.value.message


def test_the_environment_is_the_users_plus_quiet_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("CFLAGS", "-O1")
    ran = tools.run([sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"], tool="pip", doing="showing", env={"SOURCE_DATE_EPOCH": "315532800"})
    import json

    seen = json.loads(ran.stdout)
    assert seen["PIP_INDEX_URL"] == "https://mirror.example/simple" and seen["HTTPS_PROXY"] == "http://proxy.example:3128" and seen["CFLAGS"] == "-O1"
    assert seen["PIP_NO_INPUT"] == "1" and seen["PIP_DISABLE_PIP_VERSION_CHECK"] == "1" and seen["SOURCE_DATE_EPOCH"] == "315532800"
    assert seen["PATH"] == os.environ["PATH"] and seen["HOME"] == os.environ["HOME"]


_FAMILY = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open(sys.argv[1], "w").write(f"{os.getpid()} {child.pid}")
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has stopped; only its parent's wait is missing


def _family(pids: Path) -> list[int]:
    for _ in range(200):
        if pids.exists() and pids.read_text():
            return [int(p) for p in pids.read_text().split()]
        time.sleep(0.05)
    raise AssertionError("the tool did not start its child")


def _gone(pids: list[int]) -> bool:
    for _ in range(100):
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def test_ctrl_c_ends_the_tool_and_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    main = threading.main_thread().ident
    assert main is not None
    family: list[int] = []

    def interrupt() -> None:
        family.extend(_family(pids))
        signal.pthread_kill(main, signal.SIGINT)

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in any process (an in-process CLI test may have left its own)
    try:
        threading.Thread(target=interrupt, daemon=True).start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt, match=r"^$"):
            tools.run([sys.executable, "-c", _FAMILY, pids], tool="pip", doing="resolving")
    finally:
        signal.signal(signal.SIGINT, before)
    assert time.monotonic() - started < 30
    assert len(family) == 2 and _gone(family)


def test_a_timeout_ends_the_tool_and_its_children_in_one_error(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    with pytest.raises(BuildError, match=r"^looking for Python 3\.99: uv did not finish within 2 s$"):
        tools.run([sys.executable, "-c", _FAMILY, pids], tool="uv", doing="looking for Python 3.99", timeout=2)
    assert _gone(_family(pids))
