"""Deterministic bytecode: ``.pyc`` files with unchecked-hash headers, compiled for the image's Python.

Unchecked-hash pycs (PEP 552) carry no source mtime, so the same source gives the same bytes on any machine,
and the interpreter trusts them without stat-ing the source. They can only be made by an interpreter of the
target's minor version; with another one, compilation is skipped and the build says so.
"""

from __future__ import annotations

import importlib.util
import posixpath
import sys

from pyimage.layers.paths import InstallPaths
from pyimage.layers.tar import TarWriter

__all__ = ["can_compile", "compile_captured"]


def can_compile(python: str) -> bool:
    """Whether this process can write pycs for Python ``python`` (``"3.11"``)."""
    return python == f"{sys.version_info[0]}.{sys.version_info[1]}"


def compile_captured(tw: TarWriter, paths: InstallPaths) -> None:
    """Writes a ``__pycache__/*.pyc`` entry for every ``.py`` source ``tw`` captured, then forgets them.

    Sources that do not compile (templates, Python 2 leftovers) are skipped, as pip does.
    """
    if not can_compile(paths.python):
        tw.sources.clear()
        return
    tag = sys.implementation.cache_tag
    for path, source in tw.sources:
        try:
            code = compile(source, "/" + path, "exec", dont_inherit=True, optimize=0)
        except (SyntaxError, ValueError):
            continue
        data = importlib._bootstrap_external._code_to_hash_pyc(  # type: ignore[attr-defined]
            code, importlib.util.source_hash(source), checked=False
        )
        stem = posixpath.basename(path)[:-3]
        tw.add_bytes(posixpath.join(posixpath.dirname(path), "__pycache__", f"{stem}.{tag}.pyc"), data)
    tw.sources.clear()
