"""The Engine API client closes its Unix socket when no engine answers on it (httpcore leaves that to the GC)."""

from __future__ import annotations

import gc
import socket
import warnings
from pathlib import Path
from typing import Callable, Iterator

import pytest

from pyimage.errors import BuildError
from pyimage.oci.engine import DockerEndpoint, docker_image_id, docker_python_images


@pytest.fixture
def resource_warnings() -> Iterator[Callable[[], list[str]]]:
    """Every ResourceWarning from here on, the garbage collector's included, as text."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)

        def seen() -> list[str]:
            gc.collect()
            return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]

        yield seen


def _stale_socket(path: Path) -> Path:
    """A Unix socket file nothing listens on (an engine that crashed): connecting is refused."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    return path


def test_init_asking_a_missing_engine_for_python_images_leaves_no_socket_open(tmp_path: Path, resource_warnings: Callable[[], list[str]]) -> None:
    assert docker_python_images(DockerEndpoint(f"unix://{tmp_path / 'no-such.sock'}", "DOCKER_HOST")) == []
    assert resource_warnings() == []


def test_a_refused_engine_socket_is_an_error_naming_it_and_leaves_no_socket_open(tmp_path: Path, resource_warnings: Callable[[], list[str]]) -> None:
    sock = _stale_socket(tmp_path / "docker.sock")
    with pytest.raises(BuildError, match=rf"cannot reach the Docker Engine at unix://{sock} \(DOCKER_HOST\): \[Errno 111\] Connection refused"):
        docker_image_id("python:3.12", DockerEndpoint(f"unix://{sock}", "DOCKER_HOST"))
    assert resource_warnings() == []
