"""Files that ``pyimage init`` writes, shipped as package data (``templates/`` in the source tree)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = ["DEFAULT_INIT_BASE", "offline_base", "render", "template_dir"]

DEFAULT_INIT_BASE = "python:3.12-slim"  # what templates/pyproject-section.toml names


def template_dir() -> Path:
    packaged = Path(__file__).parent / "templates"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "templates"


def render(name: str) -> str:
    return (template_dir() / name).read_text()


def _docker_hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to Docker Hub's registry opens (a proxy in the environment counts as reachable)."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        socket.create_connection(("registry-1.docker.io", 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def offline_base() -> tuple[str | None, str | None]:
    """The base ``init`` writes and a note: the default when Docker Hub answers; else a python image the local
    Docker Engine holds (``docker-daemon:NAME``, read without a registry); else the default with a note saying
    which bases work without one."""
    if _docker_hub_reachable():
        return None, None
    from pyimage.oci.engine import docker_python_images

    held = docker_python_images()
    if held:
        return f"docker-daemon:{held[0]}", f"Docker Hub cannot be reached from here, so the base is {held[0]} from your Docker Engine"
    return None, (
        f"Docker Hub cannot be reached from here, so base = {DEFAULT_INIT_BASE!r} will not build: use a registry you can reach "
        "(a mirror), an image of your Docker Engine (docker-daemon:NAME:TAG), a `docker save` archive (docker-archive:FILE), "
        "an OCI layout (oci:DIR) or a root filesystem tar with python3 (rootfs:FILE.tar, e.g. from mmdebstrap); pyimage init --base … writes it"
    )
