"""An older Debian base as users meet it (bullseye: Python 3.9, pip 23.0.1 without ``wheel``, libc.so.6 a symlink
to libc-2.31.so): the target reads the base's real glibc, and a setup.py-only sdist with a C extension (crcmod
1.7, from PyPI) is built by the target's own pip with PEP 517 and runs in the image."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.rootfs import debian_rootfs
from support.runc import run_image

from .conftest import Pyimage, copy_example

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bullseye(test_cache_dir: Path) -> Path:
    return debian_rootfs(test_cache_dir, suite="bullseye")


def test_bullseye_reads_glibc_2_31_and_builds_crcmod_from_its_setup_py_sdist(pyimage: Pyimage, bullseye: Path, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"attrs>=23"', '"attrs>=23", "crcmod==1.7"'))
    # the default epoch 0: the project's wheel is built by 3.9's hatchling, which refuses ZIP times before 1980
    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'out'}:old", "--base", f"rootfs:{bullseye}", project=project, base=False)
    assert "CPython 3.9 on linux/amd64 (glibc 2.31)" in done.stderr
    code = "import crcmod, crcmod._crcfunext; print(crcmod.mkCrcFun(0x11021, 0, False)(b'123456789'))"  # the C extension
    out = run_image(tmp_path / "out", "old", args=["/opt/venv/bin/python", "-c", code]).stdout
    assert out.strip() == "12739"
