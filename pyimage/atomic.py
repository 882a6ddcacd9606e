"""Atomic file writes: a file appears at its destination whole or not at all.

One owner for the stage-then-rename pattern: the caller writes a temp path (named as its place needs: under the
cache's ``tmp/`` so a sweep knows its writer, or a dot-file beside the destination), which is renamed over the
destination when the block ends without an error and removed on any failure, Ctrl-C included."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator


def beside(dest: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden temp path in ``dest``'s directory (so the rename stays on one file system), named for this
    process: ``.<name>.<pid>-<random><suffix>``."""
    return dest.with_name(f".{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


@contextlib.contextmanager
def staged(dest: Path, tmp: Path | None = None) -> Iterator[Path]:
    """The temp path to write (``tmp``, else ``beside(dest)``); renamed over ``dest`` when the block succeeds,
    removed when it raises."""
    tmp = beside(dest) if tmp is None else tmp
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(dest: Path, data: bytes, tmp: Path | None = None) -> None:
    """``data`` as the whole of ``dest``, atomically (the temp path as for ``staged``; a fresh one is created
    exclusively, a fixed ``tmp`` name left by a killed run is overwritten)."""
    with staged(dest, tmp) as path, open(path, "wb" if tmp is not None else "xb") as f:
        f.write(data)


def write_text(dest: Path, text: str, tmp: Path | None = None) -> None:
    """``text`` (UTF-8) as the whole of ``dest``, atomically."""
    write_bytes(dest, text.encode(), tmp)
