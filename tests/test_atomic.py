"""Atomic writes: the destination holds the old content or the whole new one, never a part, and no temp is left."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyimage import atomic


def test_a_finished_write_replaces_the_destination_and_leaves_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "out.json"
    dest.write_text("old")
    atomic.write_text(dest, "new ✓")
    assert dest.read_text(encoding="utf-8") == "new ✓"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_failed_write_leaves_the_old_content_and_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt, match="stop"), atomic.staged(dest) as tmp:
        tmp.write_bytes(b"half")
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.bin.") and tmp.name.endswith(".tmp")
        raise KeyboardInterrupt("stop")
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_fixed_temp_name_left_by_a_killed_run_is_overwritten(tmp_path: Path) -> None:
    dest, leftover = tmp_path / "pyimage.lock", tmp_path / ".pyimage.lock.tmp"
    leftover.write_text("from a run that was killed")
    atomic.write_text(dest, "fresh", leftover)
    assert dest.read_text() == "fresh" and not leftover.exists()

