"""The same project gives the same image on one core with one job and on two cores with two: every layer (the
ingested base included) is cut into the same chunks whatever the number of compression workers, and the image
still passes the checker and runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from support.runc import free_port, skip_unless_tools, start_image, wait_http

from .conftest import Pyimage, assert_image_ok, copy_example

pytestmark = pytest.mark.e2e


def on_one_core(*cmd: str) -> subprocess.CompletedProcess[str]:
    """``cmd`` pinned to CPU 0 (taskset): the compression pool sizes itself from the affinity mask, so it has one
    worker."""
    cpu = min(os.sched_getaffinity(0))
    return subprocess.run(["taskset", "-c", str(cpu), *cmd], capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"))


def gzip_members(blob: bytes) -> int:
    count = 0
    while blob:
        obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
        obj.decompress(blob)
        assert obj.eof
        blob = obj.unused_data
        count += 1
    return count


def test_one_core_one_job_and_two_cores_two_jobs_build_the_same_image(pyimage: Pyimage, tmp_path: Path) -> None:
    skip_unless_tools("taskset")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores to compare against one")
    pool = on_one_core(sys.executable, "-c", "from pyimage.layers.compress import compress_workers; print(compress_workers())")
    assert pool.stdout.strip() == "1", pool.stderr  # the single-core build really compresses with one worker

    project = copy_example("web-service", tmp_path)
    one = tmp_path / "one"
    done = on_one_core(
        sys.executable, "-m", "pyimage", "build", "--json", "--jobs", "1", "-o", f"oci:{one}:web",
        "--cache-dir", str(tmp_path / "cache-one"), "--base", f"rootfs:{pyimage.base}", "-C", str(project),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    serial = json.loads(done.stdout)
    assert_image_ok(one)

    two = Pyimage(tmp_path / "cache-two", pyimage.base)
    parallel = two.build(project, tmp_path / "two", "web", "--jobs", "2")  # checked by the runner

    assert [(l["name"], l["digest"]) for l in parallel["layers"]] == [(l["name"], l["digest"]) for l in serial["layers"]]
    assert parallel["image"]["digest"] == serial["image"]["digest"]
    index = json.loads((tmp_path / "two" / "index.json").read_text())
    manifest = json.loads((tmp_path / "two" / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    biggest = max(manifest["layers"], key=lambda d: d["size"])
    blob = (tmp_path / "two" / "blobs" / "sha256" / biggest["digest"].split(":")[1]).read_bytes()
    assert gzip_members(blob) > 2  # the base rootfs: many chunks, so the worker count had something to change

    port = free_port()
    with start_image(tmp_path / "two", "web", env={"PORT": str(port), "HOST": "127.0.0.1"}) as container:
        body = json.loads(wait_http(f"http://127.0.0.1:{port}/", timeout=60, container=container))
    assert body == {"message": "hello from pyimage", "python": "3.11"}
