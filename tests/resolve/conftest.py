"""Shared fixtures of the resolver tests: a find-links directory of real wheels that is the only source."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wheels_fixture import make_wheel


@pytest.fixture
def links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A find-links directory that is pip's only source (no index, no pip.conf)."""
    links = tmp_path / "links"
    for name, version, kwargs in [
        ("six", "1.16.0", {}),
        ("six", "1.17.0", {}),
        ("newpy", "1.0", {}),
        ("newpy", "2.0", {"requires_python": ">=3.12"}),
        ("left", "1.0", {"requires": ("six==1.16.0",)}),
        ("right", "1.0", {"requires": ("middle",)}),
        ("middle", "1.0", {"requires": ("six==1.17.0",)}),
    ]:
        make_wheel(links, name, version, **kwargs)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return links

