"""The uv resolver backend against the pip one: the same pins for the same inputs (the machine's own pip
configuration: its local indexes, find-links, constraints and PyPI), pip's configuration handed to uv, the
cases where uv cannot serve, and failures in the user's terms — all with real uv and pip runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pyimage.cache import Cache
from pyimage.errors import BuildError
from pyimage.oci.model import Platform
from pyimage.resolve import pip as pip_backend
from pyimage.resolve import uv as uv_backend
from pyimage.resolve.target import Target
from wheels_fixture import download_wheel, make_sdist, make_wheel

TARGET = Target("3.11", Platform.parse("linux/amd64"), "glibc", "2.36")


def _same(requirements: list[str], tmp_path: Path, target: Target = TARGET) -> dict[str, tuple[str, str, str]]:
    by_uv = uv_backend.resolve(requirements, target, Cache(tmp_path / "uv-cache"))
    by_pip = pip_backend.resolve(requirements, target, Cache(tmp_path / "pip-cache"))
    as_dict = lambda pins: {p.name: (p.version, p.filename, p.sha256) for p in pins}  # noqa: E731
    assert as_dict(by_uv) == as_dict(by_pip)
    assert [p.url for p in by_uv] == [p.url for p in by_pip]  # index URLs alike; local files have none
    return as_dict(by_uv)


@pytest.mark.parametrize(
    "requirements",
    [
        pytest.param(["attrs>=23", "humanize>=4"], id="hello-cli"),
        pytest.param(["fastapi>=0.110", "uvicorn>=0.29"], id="web-service"),
        pytest.param(["torch==2.13.0", "numpy>=1.26"], id="torch-app"),
    ],
)
def test_uv_pins_what_pip_pins_for_the_examples(requirements: list[str], tmp_path: Path) -> None:
    pins = _same(requirements, tmp_path)
    assert all(sha for _, _, sha in pins.values())


def test_uv_pins_what_pip_pins_for_arm64(tmp_path: Path) -> None:
    pins = _same(["numpy>=1.26", "attrs>=23"], tmp_path, Target("3.11", Platform.parse("linux/arm64"), "glibc", "2.36"))
    assert "aarch64" in pins["numpy"][1]


def _app(links: Path, *requires: str) -> str:
    return str(make_wheel(links.parent / "app", "app", "1.0", requires=requires))


def _error(links: Path, tmp_path: Path, *requires: str) -> BuildError:
    with pytest.raises(BuildError) as err:
        uv_backend.resolve([_app(links, *requires)], TARGET, Cache(tmp_path / "cache"))
    return err.value


def test_pip_configuration_reaches_uv_as_flags(links: Path) -> None:
    flags, _env, reason = uv_backend.pip_settings_for_uv()
    assert reason == ""
    assert flags == ["--no-index", "--find-links", str(links)]


def test_the_app_wheel_is_the_input_not_a_pin_and_the_target_python_decides(links: Path, tmp_path: Path) -> None:
    pins = uv_backend.resolve([_app(links, "newpy", "six")], TARGET, Cache(tmp_path / "c"))
    assert {p.name: p.version for p in pins} == {"newpy": "1.0", "six": "1.17.0"}
    assert all(p.url == "" for p in pins)  # local find-links files: found again by name, version and hash
    newer = uv_backend.resolve([_app(links, "newpy")], Target("3.12", TARGET.platform, "glibc", "2.36"), Cache(tmp_path / "c"))
    assert {p.name: p.version for p in newer} == {"newpy": "2.0"}


@pytest.mark.parametrize("versions", [("1.7",), ("1.6", "1.7")], ids=["one-version", "several-versions"])
def test_a_dependency_published_only_as_sdists_is_taken_as_its_sdist(
    versions: tuple[str, ...], links: Path, tmp_path: Path, test_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv says "has no usable wheels" of one version and "have no usable wheels" of several (crcmod, psycopg2)."""
    with monkeypatch.context() as online:  # the sdist's build backend, from the real index, into the find-links
        for name in ("PIP_NO_INDEX", "PIP_FIND_LINKS", "PIP_CONFIG_FILE"):
            online.delenv(name)
        backend = download_wheel("setuptools<81", test_cache_dir / "real-wheels")
    shutil.copy(backend, links / backend.name)
    for version in versions:
        setup = f"from setuptools import setup\nsetup(name='onlysdist', version='{version}', packages=['onlysdist'])\n"
        make_sdist(links, "onlysdist", version, {"onlysdist/__init__.py": b"", "setup.py": setup.encode()})
    pins = uv_backend.resolve([_app(links, "onlysdist", "six")], TARGET, Cache(tmp_path / "c"))
    assert {p.name: (p.version, p.filename) for p in pins}["onlysdist"] == (versions[-1], f"onlysdist-{versions[-1]}.tar.gz")
    assert {p.name: p.filename for p in pins}["six"].endswith(".whl")  # wheels still preferred for the rest


def test_a_typo_is_an_unknown_name_with_a_suggestion(links: Path, tmp_path: Path) -> None:
    err = _error(links, tmp_path, "midle")
    assert err.message == "no package named 'midle' on the configured indexes (required by app==1.0); did you mean 'middle'?"
    assert "[project] dependencies" in err.hint


@pytest.mark.parametrize("spec", [">=2099.1", "==9.9"])
def test_no_version_matching_names_the_newest_the_target_installs(links: Path, tmp_path: Path, spec: str) -> None:
    """A new-user trial: `django==9.9` under the default resolver (uv) got uv's sentence and "change the requirements
    uv names", where resolver = "pip" listed the versions there are."""
    missing = _error(links, tmp_path, f"six{spec}")
    assert missing.message == f"no version of six satisfies {spec} (required by app==1.0) for CPython 3.11 on linux/amd64 (glibc 2.36); the newest that installs there is six 1.17.0"
    assert missing.hint == "relax the requirement on six (e.g. six==1.17.0), or pick a base whose Python the wanted version supports"


def test_a_release_for_another_python_is_said_in_the_targets_terms(links: Path, tmp_path: Path) -> None:
    """uv said "the requested Python version (>=3.11) does not satisfy Python>=3.12" and hinted at its own
    `--python-version` flag, which the user never gave."""
    err = _error(links, tmp_path, "newpy>=2")
    assert err.message == "newpy>=2.0 requires Python >=3.12 (required by app==1.0), but the target is CPython 3.11 on linux/amd64 (glibc 2.36)"
    assert err.hint == "require a newpy that supports Python 3.11 (an older one), or pick a base whose Python satisfies >=3.12"
    assert "--python-version" not in err.message + err.hint


def test_uvs_other_wording_for_another_python_is_read_too() -> None:
    """What uv 0.13 said for `django>=6` on CPython 3.11 from PyPI (an index that states Requires-Python), verbatim."""
    said = (
        "error: No solution found when resolving dependencies\n"
        "  cause: Because the requested Python version (>=3.11) does not satisfy Python>=3.12 and django>=6.0,<=6.0.1 depends on Python>=3.12, "
        "we can conclude that django>=6.0,<=6.0.1 cannot be used.\n"
        "         And because only the following versions of django are available:\n             django<=6.0.1\n             django>=6.0.2\n"
        "         and you require django>=6,<6.0.2, we can conclude that your requirements are unsatisfiable.\n\n"
        "hint: The `--python-version` value (>=3.11) includes Python versions that are not supported by your dependencies (e.g., django>=6.0,<=6.0.1 only supports >=3.12). Consider using a higher `--python-version` value.\n"
    )
    err = uv_backend._error(said, TARGET)
    assert err.message == "django>=6.0,<=6.0.1 requires Python >=3.12, but the target is CPython 3.11 on linux/amd64 (glibc 2.36)"
    assert err.hint == "require a django that supports Python 3.11 (an older one), or pick a base whose Python satisfies >=3.12"


def test_a_conflict_is_uvs_explanation_in_one_line(links: Path, tmp_path: Path) -> None:
    conflict = _error(links, tmp_path, "left", "right")
    assert "all versions of left depend on six==1.16.0" in conflict.message and "\n" not in conflict.message
    assert "you require app" not in conflict.message  # uv's closing sentence about the input adds nothing


@pytest.mark.parametrize(
    ("env", "target", "reason"),
    [
        ({"PIP_ONLY_BINARY": ":all:"}, TARGET, "pip setting 'only-binary' has no uv equivalent"),
        ({}, Target("3.11", Platform.parse("linux/ppc64le"), "glibc", "2.36"), "uv cannot target CPython 3.11 on linux/ppc64le"),
        ({}, Target("3.11", TARGET.platform, "musl", "1.1"), "uv cannot target"),
        ({}, Target("3.11", TARGET.platform, "glibc", "2.12"), "uv cannot target"),
    ],
)
def test_where_uv_cannot_serve_it_says_why(env: dict[str, str], target: Target, reason: str, links: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert uv_backend.why_not_uv(target).startswith(reason)


def test_platform_names(links: Path) -> None:
    assert uv_backend.uv_platform(TARGET) == "x86_64-manylinux_2_36"
    assert uv_backend.uv_platform(Target("3.12", Platform.parse("linux/arm64"), "glibc", "2.41")) == "aarch64-manylinux_2_40"
    assert uv_backend.uv_platform(Target("3.12", Platform.parse("linux/arm64"), "musl", "1.2")) == "aarch64-unknown-linux-musl"
    # glibc versions uv has no name for resolve as the nearest it has below them (never a newer one)
    assert uv_backend.uv_platform(Target("3.9", TARGET.platform, "glibc", "2.30")) == "x86_64-manylinux_2_28"
    assert uv_backend.uv_platform(Target("3.9", TARGET.platform, "glibc", "2.24")) == "x86_64-manylinux_2_17"


@pytest.mark.parametrize("glibc", [f"2.{m}" for m in range(17, 42)])
def test_every_glibc_target_gets_a_platform_uv_accepts(glibc: str, tmp_path: Path) -> None:
    """Each name uv_platform gives, handed to the real uv (it refuses names it does not know, like 2_30)."""
    import subprocess

    name = uv_backend.uv_platform(Target("3.11", TARGET.platform, "glibc", glibc))
    assert name is not None
    (tmp_path / "r.in").write_text("")
    done = subprocess.run([str(uv_backend.uv_binary()), "pip", "compile", "--quiet", "--no-header", "--python-platform", name, "--python-version", "3.11", str(tmp_path / "r.in")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("env", "installer"), [({}, "uv"), ({"PIP_PREFER_BINARY": "1"}, "pip")])
def test_the_build_environment_is_made_by_uv_where_it_can_take_pips_settings(env: dict[str, str], installer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from pyimage.resolve.appwheel import _env

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    python = _env(Cache(tmp_path / "cache"), ["hatchling>=1.18"], sys.executable)
    (record,) = python.parent.parent.glob("lib/python*/site-packages/hatchling-*.dist-info/INSTALLER")
    assert record.read_text().strip() == installer
    # Byte-compiled when made (pip does it by default, uv with --compile-bytecode): the backend starts on every
    # build of the app's wheel and would otherwise compile its modules each time (PYTHONDONTWRITEBYTECODE here).
    (init,) = python.parent.parent.glob("lib/python*/site-packages/hatchling/__init__.py")
    assert list((init.parent / "__pycache__").glob("__init__.*.pyc")), f"{installer} left {init.parent} uncompiled"


def test_an_index_that_answers_401_is_said_to_refuse_not_to_lack_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new-user trial: a private index answering 401 (no or wrong credentials) gave "no package named
    'acme-utils' on the configured indexes" and a hint to add an index that was already configured."""
    import http.server
    import threading

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="acme"')
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
        monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
        monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_port}/simple")
        with pytest.raises(BuildError) as err:
            uv_backend.resolve(["acme-utils"], TARGET, Cache(tmp_path / "cache"))
    finally:
        server.shutdown()
        server.server_close()
    assert err.value.message == f"the package index http://127.0.0.1:{server.server_port}/simple answered 401 Unauthorized, so acme-utils could not be looked up there"
    assert "UV_INDEX_<NAME>_USERNAME" in err.value.hint and "did you mean" not in err.value.message
