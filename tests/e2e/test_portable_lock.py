"""A lock file travels: written on one machine layout, it builds the same image from another cache (or a
fresh CI cache) without resolving again, because it names no path of the machine that wrote it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.runc import run_image
from wheels_fixture import make_wheel

from .conftest import Pyimage, copy_example

pytestmark = pytest.mark.e2e


def test_a_lock_with_an_sdist_and_a_find_links_wheel_is_used_unchanged_with_another_empty_cache(
    pyimage: Pyimage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    links = tmp_path / "links"
    dep = tmp_path / "greeting-src"
    (dep / "src" / "sdist_greeting").mkdir(parents=True)
    (dep / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n[project]\nname = "sdist-greeting"\nversion = "0.3"\n'
    )
    (dep / "src" / "sdist_greeting" / "__init__.py").write_text('WORD = "built from an sdist"\n')
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(links), str(dep)], check=True, capture_output=True)
    make_wheel(links, "local_wheel", "1.0", {"local_wheel.py": b"WORD = 'from find-links'\n"})
    monkeypatch.setenv("PIP_FIND_LINKS", f"/opt/wheels {links}")

    project = copy_example("hello-cli", tmp_path / "machine-a")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"attrs>=23"', '"attrs>=23", "sdist-greeting==0.3", "local-wheel==1.0"'))
    cache_a = tmp_path / "cache-a"
    first = Pyimage(cache_a, pyimage.base).build(project, tmp_path / "layout-a", "t")
    lock = (project / "pylock.pyimage.toml").read_text()
    assert "file:///" not in lock and str(tmp_path) not in lock and "/root" not in lock and "cache" not in lock
    assert 'sdist = { name = "sdist_greeting-0.3.tar.gz", hashes = { sha256 = "' in lock  # found in find-links: no url
    assert 'name = "local_wheel-1.0-py3-none-any.whl", hashes = { sha256 = "' in lock
    assert 'url = "https://' in lock  # humanize and attrs: by their index URL

    # another checkout, another (empty) cache: the lock is taken as it is, the sdist is built again from its hash
    elsewhere = tmp_path / "machine-b" / "hello-cli"
    shutil.copytree(project, elsewhere)
    shutil.rmtree(cache_a)
    cache_b = tmp_path / "cache-b"
    done = Pyimage(cache_b, pyimage.base).run("build", "--json", "-o", f"oci:{tmp_path / 'layout-b'}:t", project=elsewhere)
    assert "resolving dependencies" not in done.stderr and "stale" not in done.stderr
    assert (elsewhere / "pylock.pyimage.toml").read_text() == lock
    import json

    second = json.loads(done.stdout)
    assert second["image"]["digest"] == first["image"]["digest"]
    out = run_image(tmp_path / "layout-b", "t", args=["/opt/venv/bin/python", "-c", "import sdist_greeting, local_wheel; print(sdist_greeting.WORD, local_wheel.WORD)"]).stdout
    assert "built from an sdist from find-links" in out
