"""Whether the wheels of one image may share it: every path each installs, checked against every other's and the
interpreter layer's before any layer work, and each wheel's file map cached by its content (``wheel_files``), so
a rebuild reads no wheel here and the layer stage can tell which wheels' fragments may repeat a path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from pyimage.cache import Cache, Meta, strings
from pyimage.errors import BuildError
from pyimage.layers.paths import InstallPaths
from pyimage.wheels import Wheel

__all__ = ["check_conflicts", "wheel_files", "cached_files"]

_CONFLICTS_FORMAT = 2  # bump when the rules below change, so a cached verdict of the old rules is not reused


@dataclass(frozen=True)
class _Files:
    """The paths a wheel installs (in the image, no leading ``/``) with their RECORD hashes, and which of them
    are namespace-package boilerplate ``__init__.py`` files."""

    files: Mapping[str, str]
    namespace: frozenset[str]

    @classmethod
    def load(cls, value: Any) -> "_Files":
        files = value["files"]
        if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise TypeError("not a file map")
        return cls(files, frozenset(strings(value["namespace"])))

    def dump(self) -> dict[str, Any]:
        return {"files": dict(self.files), "namespace": sorted(self.namespace)}


CHECKED: Meta[tuple[str, ...]] = Meta("conflicts", strings, list, version=_CONFLICTS_FORMAT)
FILES: Meta[_Files] = Meta("files", _Files.load, _Files.dump, version=2)


def _interpreter_paths(paths: InstallPaths) -> tuple[list[str], list[str]]:
    """(files, directories) the ``interpreter`` layer writes (``venv_filler``), as wheel file maps name paths."""
    venv = paths.venv.strip("/")
    files = [f"{venv}/pyvenv.cfg", f"{paths.bin}/python", f"{paths.bin}/python3", f"{paths.bin}/python{paths.python}"]
    return files, [venv, paths.bin, f"{venv}/include", paths.site_packages]


def check_conflicts(wheels: Sequence[Wheel], paths: InstallPaths, cache: Cache) -> list[str]:
    """Every path every layer above the base writes, checked against every other: two wheels writing the same
    file with different content, a wheel writing a file where the interpreter layer has one (``bin/python``,
    ``pyvenv.cfg``), or a file where another layer has a directory, is an error; identical copies are fine.

    The one exception is an ``__init__.py`` that is namespace boilerplate in every wheel shipping it (empty,
    ``pkgutil.extend_path`` or ``pkg_resources.declare_namespace``): that is how pre-PEP 420 namespace packages
    (old ``zope.*``, ``google.*``) split across wheels, and pip lets the last one win; one copy wins here too,
    and the returned notes say so. An ``__init__.py`` with any other code is a conflict like any file.
    """
    material = (*sorted(w.sha256 for w in wheels), paths.venv, paths.python)
    known = cache.get_meta(CHECKED, *material)
    if known is not None:
        return list(known)
    interp_files, interp_dirs = _interpreter_paths(paths)
    owners: dict[str, tuple[str, str, bool]] = {f: ("the interpreter layer", "interpreter", False) for f in interp_files}
    dirs: dict[str, str] = {d: "the interpreter layer" for d in interp_dirs}
    notes: list[str] = []
    _read_file_maps([w for w in wheels if _cached_facts(w.sha256, paths, cache) is None], paths, cache)
    for wheel in wheels:
        facts = _facts(wheel, paths, cache)
        namespace = facts.namespace
        for path, digest in sorted(facts.files.items()):
            # (paths in file maps are normalized: no "//", no trailing "/"; rpartition is posixpath.dirname here)
            if path.endswith(("/RECORD", "/INSTALLER")) and path.rpartition("/")[0].endswith(".dist-info"):
                continue  # written per wheel by the installer, in the wheel's own dist-info
            if path in dirs:
                raise BuildError(
                    f"{wheel.filename} installs a file at /{path}, where {dirs[path]} has a directory",
                    "drop one of the two packages, or pin versions that do not collide",
                )
            prev = owners.get(path)
            is_ns = path in namespace
            if prev and (prev[1] != digest or not digest):
                if path.endswith("/__init__.py") and is_ns and prev[2]:
                    notes.append(f"/{path} comes from both {prev[0]} and {wheel.filename} (namespace package boilerplate); one copy wins, as with pip")
                    continue
                raise BuildError(
                    f"{wheel.filename} and {prev[0]} both install /{path} with different content",
                    "drop one of the two packages, or pin versions that do not collide",
                )
            owners[path] = (wheel.filename, digest, is_ns)
            parent = path.rpartition("/")[0]
            while parent and parent not in dirs:
                if parent in owners:
                    raise BuildError(
                        f"{wheel.filename} installs /{path} inside /{parent}, which {owners[parent][0]} installs as a file",
                        "drop one of the two packages, or pin versions that do not collide",
                    )
                dirs[parent] = wheel.filename
                parent = parent.rpartition("/")[0]
    cache.put_meta(CHECKED, tuple(notes), *material)
    return notes


def wheel_files(wheel: Wheel, paths: InstallPaths, cache: Cache) -> tuple[dict[str, str], set[str]]:
    """A wheel's file map and its namespace-boilerplate ``__init__.py`` paths, cached by the wheel's content, so a
    new app sharing torch reads none of torch's bytes here."""
    facts = _facts(wheel, paths, cache)
    return dict(facts.files), set(facts.namespace)


# A wheel's file map is a fact of its content: read from the cache once per process, not once per use (a build
# read torch's 12,000 entries three times over).
_MEMO: dict[tuple[str, ...], _Files] = {}


def _memo_key(cache: Cache, sha256: str, paths: InstallPaths) -> tuple[str, ...]:
    return (str(cache.root), *_files_key(sha256, paths))


def _facts(wheel: Wheel, paths: InstallPaths, cache: Cache) -> _Files:
    facts = _cached_facts(wheel.sha256, paths, cache)
    if facts is None:
        if wheel.path is None:  # the facts are gone but the wheel was not fetched: a damaged cache
            raise BuildError(f"{wheel.filename}: its file list is missing from the cache", "run `pyimage cache verify`, then build again")
        from pyimage.layers.install import wheel_paths  # pypa/installer: ~15 ms, for cold wheels only

        files, namespace = wheel_paths(wheel.path, paths)
        facts = _Files(files, frozenset(namespace))
        cache.put_meta(FILES, facts, *_files_key(wheel.sha256, paths))
        _MEMO[_memo_key(cache, wheel.sha256, paths)] = facts
    return facts


# Cold wheels whose file maps are worth a second process (~0.2 s to start): big-app's 207 took 1.8 s on one core.
APART_MIN = 24


def _read_file_maps(wheels: Sequence[Wheel], paths: InstallPaths, cache: Cache) -> None:
    """The file maps of ``wheels`` (none of them cached) read into the cache. Reading a wheel's directory and
    RECORD is Python work that holds the GIL, so threads share one core: with many wheels and two cores, a child
    process reads half of them (by size) while this one reads the rest (``layers/worker.py``); whatever the child
    did not record is read here afterwards, in order, so an error is met here in its own words."""
    if len(wheels) < 2:
        return
    from concurrent.futures import ThreadPoolExecutor

    from pyimage.layers.worker import file_maps_in_child, spare_core

    if len(wheels) >= APART_MIN and spare_core():
        mine: list[Wheel] = []
        theirs: list[Wheel] = []
        load = [0, 0]  # compressed bytes on each side, heaviest wheels first
        for size, wheel in sorted(((w.path.stat().st_size if w.path is not None else 0, w) for w in wheels), key=lambda sw: -sw[0]):
            side = 0 if load[0] <= load[1] else 1
            (mine, theirs)[side].append(wheel)
            load[side] += size
        with ThreadPoolExecutor(1, thread_name_prefix="pyimage-files") as pool:
            child = pool.submit(file_maps_in_child, theirs, paths, str(cache.root))
            for wheel in mine:
                wheel_files(wheel, paths, cache)
            child.result()
        for wheel in theirs:  # read from the cache where the child recorded it, else here
            wheel_files(wheel, paths, cache)
        return
    with ThreadPoolExecutor(2, thread_name_prefix="pyimage-files") as pool:
        for _ in pool.map(lambda w: wheel_files(w, paths, cache), wheels):
            pass


def _files_key(sha256: str, paths: InstallPaths) -> tuple[str, ...]:
    return sha256, paths.venv, paths.python


def cached_files(sha256: str, paths: InstallPaths, cache: Cache) -> frozenset[str] | None:
    """The paths a wheel installs, from the cache alone (None when its file map was never recorded)."""
    facts = _cached_facts(sha256, paths, cache)
    return frozenset(facts.files) if facts is not None else None


def _cached_facts(sha256: str, paths: InstallPaths, cache: Cache) -> _Files | None:
    key = _memo_key(cache, sha256, paths)
    facts = _MEMO.get(key) or cache.get_meta(FILES, *_files_key(sha256, paths))
    if facts is not None:
        _MEMO[key] = facts
    return facts
