"""Files that ``pyimage init`` writes, shipped as package data (``templates/`` in the source tree)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["render", "template_dir"]


def template_dir() -> Path:
    packaged = Path(__file__).parent / "templates"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "templates"


def render(name: str) -> str:
    return (template_dir() / name).read_text()
