"""The target's machine name in wheel tags, for every platform config accepts (GOARCH names are not pip's)."""

from __future__ import annotations

import pytest

from pyimage.oci.model import Platform
from pyimage.resolve.target import Target


@pytest.mark.parametrize(
    "platform, machine",
    [
        ("linux/amd64", "x86_64"),
        ("linux/arm64/v8", "aarch64"),
        ("linux/arm/v7", "armv7l"),
        ("linux/arm/v6", "armv6l"),
        ("linux/arm/v5", "armv5tel"),
        ("linux/386", "i686"),
        ("linux/loong64", "loongarch64"),
        ("linux/mips64le", "mips64"),
        ("linux/riscv64", "riscv64"),
    ],
)
def test_every_buildable_platform_names_its_wheel_machine(platform: str, machine: str) -> None:
    target = Target("3.12", Platform.parse(platform))
    assert target.machine == machine
    assert target.platform_tags()[-1] == f"linux_{machine}"
