"""Session fixtures shared by every test folder: the test cache and the cached Debian base rootfs."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.rootfs import debian_rootfs, default_cache_dir
from support.runc import skip_unless_tools


@pytest.fixture(scope="session")
def test_cache_dir() -> Path:
    """Where slow test inputs are cached by their inputs: ``$PYIMAGE_TEST_CACHE`` or ``~/.cache/pyimage-tests``."""
    path = default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def base_rootfs(test_cache_dir: Path) -> Path:
    """A Debian bookworm minbase + python3 root filesystem tar (122 MB; 20-60 s the first time, then cached)."""
    skip_unless_tools("mmdebstrap", "mmtarfilter")
    return debian_rootfs(test_cache_dir)
