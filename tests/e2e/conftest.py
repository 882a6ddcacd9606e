"""Fixtures for end-to-end tests: copies of the examples, a shared pyimage cache, and a `pyimage` runner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.engines import Dockerd, Storage, make_storage, start_dockerd
from support.runc import skip_unless_tools

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass
class Pyimage:
    """Runs the real CLI (``python -m pyimage``) against one cache dir."""

    cache_dir: Path
    base: Path

    def run(
        self, *args: str, project: Path | None = None, check: bool = True, base: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "pyimage", *args, "--cache-dir", str(self.cache_dir)]
        if base:
            cmd += ["--base", f"rootfs:{self.base}"]
        if project is not None:
            cmd += ["-C", str(project)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=dict(env or os.environ, COLUMNS="200"))
        if check and done.returncode != 0:
            raise AssertionError(f"pyimage {' '.join(args)} exited {done.returncode}\n{done.stderr}")
        if args and args[0] == "build" and done.returncode == 0:
            for path in _written_images(args, project):
                assert_image_ok(path)
        return done

    def build(self, project: Path, layout: Path, tag: str = "test", *extra: str) -> dict[str, Any]:
        """Builds into ``layout`` and checks every image there as the strictest engines would read it."""
        done = self.run("build", "--json", "-o", f"oci:{layout}:{tag}", *extra, project=project)
        return json.loads(done.stdout)


def _written_images(args: tuple[str, ...], project: Path | None) -> list[Path]:
    """The oci: layouts and docker-archive: files a successful ``build`` command line wrote."""
    from pyimage.oci.layout import split_layout_ref

    out = []
    for flag, value in zip(args, args[1:]):
        if flag not in ("-o", "--output"):
            continue
        kind, _, rest = value.partition(":")
        if kind == "oci":
            out.append(split_layout_ref(rest)[0])
        elif kind == "docker-archive":
            out.append(Path(rest.partition(":")[0]))
    return [p if p.is_absolute() or project is None else project / p for p in out]


def assert_image_ok(path: Path) -> None:
    """The image checker (schemas, blobs, diff_ids, no repeated path, parents first) finds nothing at ``path``."""
    from pyimage.oci.check import check_image

    report = check_image(path)
    assert report.ok, "\n".join(report.findings)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    """A private Docker Engine (with its containerd) for the whole test session, stopped at the end."""
    skip_unless_tools("dockerd", "ctr")
    engine = start_dockerd()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def storage() -> Iterator[Storage]:
    """A private containers/storage root (podman, skopeo's containers-storage:) for the session."""
    skip_unless_tools("podman", "skopeo")
    store = make_storage()
    try:
        yield store
    finally:
        store.clean()


@pytest.fixture(scope="session")
def e2e_tools() -> None:
    skip_unless_tools("umoci", "runc", "skopeo")


@pytest.fixture(scope="session")
def pyimage(tmp_path_factory: pytest.TempPathFactory, base_rootfs: Path, e2e_tools: None) -> Pyimage:
    return Pyimage(tmp_path_factory.mktemp("pyimage-cache"), base_rootfs)


def copy_example(name: str, dest_root: Path, new_name: str | None = None) -> Path:
    """A private copy of ``examples/name`` (optionally renamed as another project) to build and edit."""
    dest = dest_root / (new_name or name)
    shutil.copytree(EXAMPLES / name, dest, ignore=shutil.ignore_patterns("dist", "pylock*.toml", "__pycache__"))
    if new_name:
        pyproject = dest / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace(f'name = "{name}"', f'name = "{new_name}"', 1))
        src = dest / "src"
        old_pkg, new_pkg = name.replace("-", "_"), new_name.replace("-", "_")
        (src / old_pkg).rename(src / new_pkg)
        pyproject.write_text(pyproject.read_text().replace(f"{old_pkg}:", f"{new_pkg}:"))
    return dest
