"""A project's ``[[tool.uv.index]]`` and ``[tool.uv.sources]`` apply when pyimage resolves: a package pinned to
an explicit index (a PEP 503 index made by the test from real wheels, served on loopback) comes from there, even
when the default indexes have a newer version, and a package only that index has is found; pip, which cannot
honour an index pin, refuses instead of resolving without it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from support.runc import run_image
from support.simpleindex import make_simple_index, serve
from wheels_fixture import download_wheel, make_wheel

from .conftest import Pyimage

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.e2e

LIST = "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"


@pytest.fixture
def local_index(tmp_path: Path, test_cache_dir: Path) -> Path:
    """six 1.16.0 (the real PyPI wheel; the default indexes also offer 1.17.0) and `onlyhere` (which no other index has)."""
    six = download_wheel("six==1.16.0", test_cache_dir / "wheels")
    onlyhere = make_wheel(tmp_path / "made", "onlyhere", "1.0", {"onlyhere.py": b"import six\nWHERE = 'the local index'\n"}, requires=("six",))
    return make_simple_index(tmp_path / "index", [six, onlyhere])


def project(root: Path, index_url: str, extra: str = "") -> Path:
    (root / "src" / "team_app").mkdir(parents=True)
    (root / "src" / "team_app" / "__init__.py").write_text("import onlyhere, six\n\ndef main():\n    print('from', onlyhere.WHERE, 'six', six.__version__)\n")
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "team-app"\nversion = "1.0"\ndependencies = ["six", "onlyhere"]\n\n'
        '[project.scripts]\nteam-app = "team_app:main"\n\n'
        f'[[tool.uv.index]]\nname = "team"\nurl = "{index_url}/simple"\nexplicit = true\n\n'
        '[tool.uv.sources]\nsix = { index = "team" }\nonlyhere = { index = "team" }\n' + extra
    )
    return root


def test_packages_pinned_to_an_explicit_uv_index_come_from_it(pyimage: Pyimage, local_index: Path, tmp_path: Path) -> None:
    with serve(local_index) as (url, seen):
        app = project(tmp_path / "team-app", url)
        done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}:t", project=app)

    assert "resolving dependencies for CPython 3.11 on linux/amd64 (glibc 2.36) with uv" in done.stderr
    assert "/simple/six/" in seen and "/simple/onlyhere/" in seen
    lock = tomllib.loads((app / "pylock.pyimage.toml").read_text())
    urls = {p["name"]: p["wheels"][0]["url"] for p in lock["packages"]}
    assert urls == {"onlyhere": f"{url}/files/onlyhere-1.0-py3-none-any.whl", "six": f"{url}/files/six-1.16.0-py2.py3-none-any.whl"}
    versions = json.loads(run_image(tmp_path / "layout", "t", args=["/opt/venv/bin/python", "-c", LIST]).stdout.strip().splitlines()[-1])
    assert versions["six"] == "1.16.0" and versions["onlyhere"] == "1.0"
    assert "from the local index six 1.16.0" in run_image(tmp_path / "layout", "t").stdout


def test_pip_cannot_honour_an_index_pin_and_refuses_with_the_reason(pyimage: Pyimage, local_index: Path, tmp_path: Path) -> None:
    with serve(local_index) as (url, seen):
        app = project(tmp_path / "team-app", url, '\n[tool.pyimage]\nresolver = "pip"\n')
        done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}:t", project=app, check=False)

    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: [tool.uv.sources] takes six from the index 'team', which pip cannot honour (resolver = \"pip\")"]
    assert 'hint: resolve with uv (resolver = "auto" or "uv"' in done.stderr
    assert not seen and not (app / "pylock.pyimage.toml").exists()


@pytest.mark.parametrize("how", ["env", "netrc"])
def test_an_index_behind_a_password_is_reached_with_uvs_credentials_and_the_password_is_never_written(
    pyimage: Pyimage, local_index: Path, tmp_path: Path, how: str
) -> None:
    import os

    secret = "s3cret-Pa55word"
    env = dict(os.environ)
    if how == "env":  # uv's variables for the index named `team`
        env.update(UV_INDEX_TEAM_USERNAME="builder", UV_INDEX_TEAM_PASSWORD=secret)
    else:
        (tmp_path / "netrc").write_text(f"machine 127.0.0.1 login builder password {secret}\n")
        (tmp_path / "netrc").chmod(0o600)
        env["NETRC"] = str(tmp_path / "netrc")
    with serve(local_index, "builder", secret) as (url, seen):
        app = project(tmp_path / "team-app", url)
        done = pyimage.run("build", "--json", "-o", f"oci:{tmp_path / 'layout'}:t", project=app, env=env)

    assert "/simple/six/" in seen and "/files/six-1.16.0-py2.py3-none-any.whl" in seen
    assert secret not in done.stdout + done.stderr and secret not in (app / "pylock.pyimage.toml").read_text()
    assert "from the local index six 1.16.0" in run_image(tmp_path / "layout", "t").stdout
