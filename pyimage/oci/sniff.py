"""What an image file or directory on disk is, and the base reference that reads it: for a base named with the
wrong prefix (``rootfs:`` on a layout, ``oci:`` on a tar, ``docker-archive:`` on a root filesystem) or none at
all. Only names are read (untrusted input)."""

from __future__ import annotations

import tarfile
from pathlib import Path

__all__ = ["sniff", "use_instead"]


def sniff(path: Path) -> str | None:
    """``docker-archive``, ``oci-archive``, ``rootfs``, ``oci-layout``, ``directory``; None when it is neither a
    tar nor a directory (or nothing is there)."""
    if path.is_dir():
        return "oci-layout" if (path / "oci-layout").is_file() else "directory"
    try:
        with tarfile.open(path) as tar:
            names = {member.name.lstrip("./") for member in tar}
    except (OSError, tarfile.TarError, EOFError):
        return None
    if "manifest.json" in names:
        return "docker-archive"
    return "oci-archive" if "oci-layout" in names else "rootfs"


_USE = {
    "docker-archive": "it is a `docker save` archive: use docker-archive:{shown}",
    "oci-layout": "it is an OCI layout: use oci:{shown} (or oci:{shown}:TAG)",
    "oci-archive": "it is an OCI layout packed in a tar: unpack it (mkdir DIR && tar -xf {shown} -C DIR) and use oci:DIR",
    "rootfs": "it is a tar without manifest.json, so a root filesystem: use rootfs:{shown} (it needs python3 inside)",
    "directory": "it is a directory without oci-layout: give an OCI layout as oci:DIR, or tar a root filesystem (tar -C DIR -cf rootfs.tar .) and use rootfs:rootfs.tar",
}
_NOTHING = "use rootfs:{shown} (a root filesystem tar) or docker-archive:{shown} (docker save); nothing is there yet"


def use_instead(kind: str | None, shown: str) -> str:
    """The base reference for what ``sniff`` found at ``shown`` (the path as the user wrote it)."""
    return _USE.get(kind or "", _NOTHING).format(shown=shown)
