"""What people pipe and redirect: tables and results on stdout, progress on stderr."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Pyimage, copy_example

pytestmark = pytest.mark.e2e


def test_plan_build_and_inspect_print_their_results_on_stdout(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    common = ["--cache-dir", str(pyimage.cache_dir), "--base", f"rootfs:{pyimage.base}"]
    pyimage_cmd = [sys.executable, "-m", "pyimage"]
    plan = subprocess.run([*pyimage_cmd, "plan", str(project), *common], capture_output=True, text=True)  # as `pyimage plan DIR | head`
    assert plan.returncode == 0, plan.stderr
    assert "humanize==" in plan.stdout and "why" in plan.stdout
    assert "humanize==" not in plan.stderr and "base: rootfs:" in plan.stderr  # progress stays on stderr
    layout = tmp_path / "layout"
    built = subprocess.run([*pyimage_cmd, "build", str(project), *common, "-o", f"oci:{layout}:t"], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    header = next(line for line in built.stdout.splitlines() if "layer" in line and "digest" in line)
    assert [c.strip() for c in header.strip("┃│ ").replace("┃", "│").split("│")] == ["layer", "digest", "size", "cache", "packages"]
    assert f"wrote oci:{layout}:t" in built.stdout and "wrote" not in built.stderr
    # the number is named (a new-user trial could not tell it from an engine's image ID)
    assert re.search(r"^image sha256:[0-9a-f]{64} \(manifest digest\)$", built.stdout, re.M), built.stdout
    out = tmp_path / "inspect.txt"
    with out.open("w") as f:  # as `pyimage inspect oci:… > inspect.txt`
        done = subprocess.run([*pyimage_cmd, "inspect", f"oci:{layout}:t", "--cache-dir", str(pyimage.cache_dir)], stdout=f, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0 and done.stderr == ""
    text = out.read_text()
    assert "site-packages" in text and 'Entrypoint: ["/opt/venv/bin/hello"]' in text
    # A directory here that holds a layout is read as one, with or without its tag (never looked up on Docker Hub).
    for name in ("layout", "layout:t"):
        here = subprocess.run([*pyimage_cmd, "inspect", "--json", name, "--cache-dir", str(pyimage.cache_dir)], cwd=tmp_path, capture_output=True, text=True)
        assert here.returncode == 0, here.stderr
        assert '"image": "oci:layout' in here.stdout and "docker.io" not in here.stdout + here.stderr
