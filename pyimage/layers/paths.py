"""Where a wheel's install schemes land inside the image (kept apart from the installer so that planning and
cache hits never import pypa/installer)."""

from __future__ import annotations

from dataclasses import dataclass

from pyimage.errors import BuildError

__all__ = ["InstallPaths"]


@dataclass(frozen=True)
class InstallPaths:
    """Where a wheel's schemes land in the image, for a venv at ``venv`` on Python ``python`` (``"3.11"``)."""

    venv: str = "/opt/venv"
    python: str = "3.11"

    @property
    def site_packages(self) -> str:
        return f"{self.venv.strip('/')}/lib/python{self.python}/site-packages"

    @property
    def bin(self) -> str:
        return f"{self.venv.strip('/')}/bin"

    @property
    def interpreter(self) -> str:
        return f"/{self.venv.strip('/')}/bin/python"

    def scheme_dir(self, scheme: str, dist: str) -> str:
        if scheme in ("purelib", "platlib"):
            return self.site_packages
        if scheme == "scripts":
            return self.bin
        if scheme == "data":
            return self.venv.strip("/")
        if scheme == "headers":
            return f"{self.venv.strip('/')}/include/site/python{self.python}/{dist}"
        raise BuildError(f"unknown install scheme {scheme!r}", "the wheel is malformed")
