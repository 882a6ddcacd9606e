"""The e2e harness works alone: the Debian rootfs, wrapped by umoci, runs under runc as a command and as a server."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.rootfs import oci_layout
from support.runc import free_port, run_image, skip_unless_tools, start_image, wait_http

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def debian_layout(base_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    skip_unless_tools("umoci", "runc")
    return oci_layout(base_rootfs, tmp_path_factory.mktemp("oci") / "layout", "debian")


def test_run_image_returns_the_output_of_a_command(debian_layout: Path) -> None:
    done = run_image(debian_layout, "debian", args=["python3", "-c", "print('hello from runc')"])
    assert done.stdout == "hello from runc\n"


def test_run_image_passes_env_and_reports_failures(debian_layout: Path) -> None:
    script = "import os, sys; print(os.environ['GREETING']); sys.exit(3)"
    done = run_image(debian_layout, "debian", args=["python3", "-c", script], env={"GREETING": "hi"}, check=False)
    assert (done.returncode, done.stdout) == (3, "hi\n")
    with pytest.raises(AssertionError, match="exit 3"):
        run_image(debian_layout, "debian", args=["python3", "-c", script], env={"GREETING": "hi"})


def test_start_image_serves_http_on_the_host_loopback(debian_layout: Path) -> None:
    port = free_port()
    server = ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", "/etc"]
    with start_image(debian_layout, "debian", args=server) as container:
        body = wait_http(f"http://127.0.0.1:{port}/os-release", timeout=20, container=container)
        assert b"bookworm" in body
        assert container.returncode is None
    assert container.returncode is not None
    assert "GET /os-release HTTP/1.1\" 200" in container.stderr
