"""`pyimage init` and `pyimage inspect` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _pyimage(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyimage", *args], capture_output=True, text=True, cwd=cwd)


def test_init_adds_a_loadable_section_and_a_github_workflow(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "demo"\nversion = "1.0"\n')
    done = _pyimage("init", "-C", str(tmp_path), "--ci", "github")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "pyproject.toml").read_text()
    assert "[tool.pyimage]" in text
    from pyimage.config import load_config

    assert load_config(tmp_path).base == "python:3.12-slim"
    workflow = (tmp_path / ".github" / "workflows" / "pyimage.yml").read_text()
    assert "uses: OWNER/pyimage@v1" in workflow and "packages: write" in workflow
    again = _pyimage("init", "-C", str(tmp_path))
    assert again.returncode == 0 and "already has [tool.pyimage]" in again.stderr
    assert (tmp_path / "pyproject.toml").read_text() == text
    again = _pyimage("init", "-C", str(tmp_path), "--base", "rootfs:base.tar")  # was silently ignored
    assert again.returncode == 0 and '(--base not written: set base = "rootfs:base.tar" in it yourself)' in again.stderr
    assert (tmp_path / "pyproject.toml").read_text() == text


def test_init_writes_the_base_asked_for_and_says_when_the_default_cannot_be_reached(tmp_path: Path) -> None:
    from pyimage.config import load_config
    from pyimage.templates import _docker_hub_reachable

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "pyproject.toml").write_text('[project]\nname = "demo"\nversion = "1.0"\n')
    done = _pyimage("init", "-C", str(tmp_path / "a"), "--base", "rootfs:base.tar")
    assert done.returncode == 0, done.stderr
    assert load_config(tmp_path / "a").base == f"rootfs:{tmp_path / 'a' / 'base.tar'}"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "pyproject.toml").write_text('[project]\nname = "demo"\nversion = "1.0"\n')
    env = {k: v for k, v in __import__("os").environ.items() if k != "DOCKER_HOST"} | {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    done = subprocess.run([sys.executable, "-m", "pyimage", "init", "-C", str(tmp_path / "b")], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    if _docker_hub_reachable():
        pytest.skip("Docker Hub is reachable from this machine: init has nothing to warn about")
    assert "note: Docker Hub cannot be reached from here, so base = 'python:3.12-slim' will not build" in done.stderr
    assert "docker-daemon:NAME:TAG" in done.stderr and "rootfs:FILE.tar" in done.stderr


def test_init_without_a_project_is_one_clear_error(tmp_path: Path) -> None:
    done = _pyimage("init", "-C", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.splitlines()[0].startswith("error: no pyproject.toml")


@pytest.mark.e2e
def test_inspect_names_the_layers_pyimage_wrote(tmp_path: Path, base_rootfs: Path) -> None:
    project = Path(__file__).resolve().parents[1] / "examples" / "hello-cli"
    import shutil

    shutil.copytree(project, tmp_path / "p", ignore=shutil.ignore_patterns("pylock*.toml", "dist"))
    cache = tmp_path / "cache"
    built = _pyimage("build", "-C", str(tmp_path / "p"), "--base", f"rootfs:{base_rootfs}", "--cache-dir", str(cache), "-o", f"oci:{tmp_path / 'img'}:t")
    assert built.returncode == 0, built.stderr
    done = _pyimage("inspect", f"oci:{tmp_path / 'img'}:t", "--json", "--cache-dir", str(cache))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    # exactly build's names: the base's layer is "base" (its history line kept as the source)
    assert [l["name"] for l in data["layers"]] == ["base", "interpreter", "site-packages", "app"]
    assert data["layers"][0]["source"] == f"rootfs:{base_rootfs.name}" and all("source" not in l for l in data["layers"][1:])
    table = _pyimage("inspect", f"oci:{tmp_path / 'img'}:t", "--cache-dir", str(cache))
    assert table.returncode == 0 and "rootfs:" not in table.stdout and "base" in table.stdout
    assert data["config"]["Entrypoint"] == ["/opt/venv/bin/hello"]


def _foreign_layout(directory: Path, tag: str, *platforms: str) -> None:
    """An OCI layout holding empty images of ``platforms`` (one image, or an index of several) under ``tag``."""
    from pyimage.base import scratch_image
    from pyimage.oci.layout import write_layout
    from pyimage.oci.model import ImageIndex, Platform

    images = tuple(scratch_image(Platform.parse(p)) for p in platforms)
    write_layout(images[0] if len(images) == 1 else ImageIndex(images), directory, tag)


def test_inspect_of_a_layout_holding_one_foreign_image_shows_it_without_platform(tmp_path: Path) -> None:
    _foreign_layout(tmp_path / "img", "t", "linux/arm64")
    done = _pyimage("inspect", "--json", "--cache-dir", str(tmp_path / "cache"), f"oci:{tmp_path / 'img'}:t")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["platform"] == "linux/arm64"
    _foreign_layout(tmp_path / "win", "t", "windows/amd64")  # inspect reads other people's images, whatever their os
    done = _pyimage("inspect", "--json", "--cache-dir", str(tmp_path / "cache"), f"oci:{tmp_path / 'win'}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["platform"] == "windows/amd64"


def test_inspect_of_an_index_without_the_platform_lists_them_with_an_inspect_hint(tmp_path: Path) -> None:
    _foreign_layout(tmp_path / "img", "multi", "linux/arm64", "linux/s390x")
    image = f"oci:{tmp_path / 'img'}:multi"
    done = _pyimage("inspect", "--cache-dir", str(tmp_path / "cache"), image)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: {image}: no image for linux/amd64 (has: linux/arm64, linux/s390x)",
        f"hint: pass --platform with one of them: pyimage inspect --platform linux/arm64 {image}",
    ]
    done = _pyimage("inspect", "--platform", "linux/ppc64le", "--cache-dir", str(tmp_path / "cache"), image)
    assert done.returncode == 2 and done.stderr.splitlines()[0] == f"error: {image}: no image for linux/ppc64le (has: linux/arm64, linux/s390x)"
    done = _pyimage("inspect", "--json", "--platform", "linux/s390x", "--cache-dir", str(tmp_path / "cache"), image)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["platform"] == "linux/s390x"
