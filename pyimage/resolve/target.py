"""What the wheels must run on: Python version, platform, libc. Turned into pip's target flags."""

from __future__ import annotations

from dataclasses import dataclass

from pyimage.oci.model import Platform

__all__ = ["Target"]

# GOARCH (what a platform names) -> the machine in wheel platform tags
_ARCH = {
    "amd64": "x86_64", "arm64": "aarch64", "arm": "armv7l", "ppc64le": "ppc64le", "s390x": "s390x", "386": "i686",
    "riscv64": "riscv64", "loong64": "loongarch64", "mips64le": "mips64",
}
_ARM_VARIANT = {"v5": "armv5tel", "v6": "armv6l", "v7": "armv7l"}
_GLIBC_DEFAULT = "2.28"  # when the base says nothing (scratch, a standalone interpreter): manylinux_2_28 era
_MANYLINUX_LEGACY = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}


@dataclass(frozen=True)
class Target:
    python: str  # "3.11"
    platform: Platform = Platform()
    libc: str = "glibc"
    libc_version: str = _GLIBC_DEFAULT

    @property
    def machine(self) -> str:
        if self.platform.architecture == "arm" and self.platform.variant:
            return _ARM_VARIANT.get(self.platform.variant, "armv7l")
        return _ARCH.get(self.platform.architecture, self.platform.architecture)

    def platform_tags(self) -> list[str]:
        """Every platform tag a wheel for this target may carry, most specific first."""
        arch = self.machine
        tags: list[str] = []
        if self.libc == "musl":
            minor = int(self.libc_version.split(".")[1]) if "." in self.libc_version else 2
            tags += [f"musllinux_1_{m}_{arch}" for m in range(minor, -1, -1)]
        else:
            top = int((self.libc_version or _GLIBC_DEFAULT).split(".")[1])
            tags += [f"manylinux_2_{m}_{arch}" for m in range(top, 4, -1)]
            tags += [f"{legacy}_{arch}" for legacy, m in _MANYLINUX_LEGACY.items() if m <= top]
        tags.append(f"linux_{arch}")  # only wheels we build from sdists on this machine carry it
        return tags

    def pip_args(self) -> list[str]:
        nodot = self.python.replace(".", "")
        args = ["--only-binary=:all:", "--python-version", self.python, "--implementation", "cp", "--abi", f"cp{nodot}"]
        for tag in self.platform_tags():
            args += ["--platform", tag]
        return args

    def describe(self) -> str:
        libc = f"{self.libc} {self.libc_version}" if self.libc else "unknown libc"
        return f"CPython {self.python} on {self.platform} ({libc})"
