"""Files that ``pyimage init`` writes, shipped as package data (``templates/`` in the source tree)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_INIT_BASE", "DockerfileRun", "offline_base", "read_dockerfile", "render", "template_dir"]

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


@dataclass
class DockerfileRun:
    """What the last stage of a Dockerfile says about how its image runs, for ``pyimage init`` to carry over;
    ``skipped`` names what it could not (a shell-form line using a variable, an ARG, an ONBUILD)."""

    entrypoint: list[str] | None = None
    command: list[str] | None = None
    ports: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    skipped: list[str] = field(default_factory=list)

    def any(self) -> bool:
        return bool(self.entrypoint or self.command or self.ports or self.env or self.user or self.workdir)


# Set by pyimage itself (the venv on PATH), or only for building: never carried over from a Dockerfile
_BUILD_ENV = frozenset({"PATH", "VIRTUAL_ENV", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_DEFAULT_TIMEOUT", "PIP_ROOT_USER_ACTION",
                        "POETRY_VIRTUALENVS_CREATE", "POETRY_NO_INTERACTION", "UV_COMPILE_BYTECODE", "UV_LINK_MODE", "UV_PYTHON_DOWNLOADS", "DEBIAN_FRONTEND"})


def read_dockerfile(path: Path) -> DockerfileRun | None:
    """The run settings of ``path``'s last stage (``FROM`` starts a stage): ``ENTRYPOINT``/``CMD`` (exec form as
    written, shell form as ``/bin/sh -c``, as Docker runs it), ``EXPOSE``, ``ENV``, ``USER``, ``WORKDIR``. Read
    as text, never run; an ``ENV``, ``USER`` or ``WORKDIR`` value with ``$`` (Docker expands those while building)
    is skipped and named. None when there is no Dockerfile or it cannot be read."""
    import json
    import re
    import shlex

    try:
        text = path.read_text(errors="replace") if path.is_file() else None
    except OSError:
        return None
    if text is None:
        return None
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    run = DockerfileRun()
    for line in lines:
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "FROM":
            run = DockerfileRun()  # a new stage: only the last one is the image
        elif word in ("CMD", "ENTRYPOINT"):
            try:
                argv = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
            except ValueError:
                argv = ["/bin/sh", "-c", rest]
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):  # (Docker expands neither form's variables at build time)
                run.skipped.append(f"{word} {rest}")
                continue
            if word == "CMD":
                run.command = argv
            else:
                run.entrypoint, run.command = argv, None  # Docker resets CMD when ENTRYPOINT is set after it
        elif word == "EXPOSE":
            for port in rest.split():
                if re.fullmatch(r"\d{1,5}(/(tcp|udp|sctp))?", port.lower()):
                    run.ports.append(port.lower())
                else:
                    run.skipped.append(f"EXPOSE {port}")
        elif word == "ENV":
            try:
                words = shlex.split(rest)
            except ValueError:
                run.skipped.append(f"ENV {rest}")
                continue
            pairs = [w.partition("=")[::2] for w in words] if words and "=" in words[0] else [(words[0], " ".join(words[1:]))] if words else []
            for key, value in pairs:
                if "$" in value or key.upper() in _BUILD_ENV or key.startswith("PIP_"):
                    run.skipped.append(f"ENV {key}")
                elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", key):
                    run.env[key] = value
        elif word == "USER":
            if "$" in rest:
                run.skipped.append(f"USER {rest}")
            elif rest:
                run.user = rest
        elif word == "WORKDIR":
            if rest.startswith("/") and "$" not in rest:
                run.workdir = rest
            else:
                run.skipped.append(f"WORKDIR {rest}")
    return run
