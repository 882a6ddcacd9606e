"""The cache's metadata records: one list of kinds, names made by the cache, and a damaged record read as absent.

Every record under ``meta/`` is a fact worked out from content (a wheel's file map, a base's scan, a fragment's
files). Each kind is declared once as a ``Meta`` by the module that works it out; what is read back is checked
against the kind's shape, so a record of an older format or a damaged file makes the fact be worked out again
instead of failing the build with an internal error.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path
from typing import Any

import pytest

import pyimage
from pyimage.cache import META_KINDS, Cache, Meta, count, strings


def declared() -> dict[str, Meta[Any]]:
    """Every ``Meta`` a module of the package declares at top level, by kind."""
    found: dict[str, Meta[Any]] = {}
    for info in pkgutil.walk_packages(pyimage.__path__, "pyimage."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, Meta):
                assert found.get(value.kind, value) is value, f"{value.kind} is declared twice"
                found[value.kind] = value
    return found


def test_every_kind_of_record_is_declared_once_and_listed() -> None:
    assert set(declared()) == set(META_KINDS)


def test_a_kind_not_in_the_list_is_refused() -> None:
    with pytest.raises(ValueError, match="'wheel-sizes' is not a kind of cache record: declare it in META_KINDS"):
        Meta("wheel-sizes", count)


# Shapes a damaged or older record may have; some are a valid record of some kind.
DAMAGED: list[Any] = [None, 0, -1, "", "x", [], [1, 2], {}, {"files": 3}, {"dirs": [1], "files": []}, [["a", "b"]], True, 1.5, {"a": 1}]


@pytest.mark.parametrize("kind", sorted(META_KINDS))
def test_a_damaged_record_of_every_kind_reads_as_absent_and_is_removed(kind: str, tmp_path: Path) -> None:
    """Whatever is on disk, reading never raises: a record of the kind's shape comes back (and is what would be
    written for that value), anything else is absent and removed."""
    meta = declared()[kind]
    cache = Cache(tmp_path / "cache")
    absent = 0
    for value in DAMAGED:
        path = cache._meta_path(meta, ("k",))
        path.write_text(json.dumps(value))
        back = cache.get_meta(meta, "k")
        if back is None:
            absent += 1
            assert not path.exists(), (kind, value)
        else:
            assert meta.dump(back) == value or list(meta.dump(back)) == value, (kind, value, back)
    assert absent >= len(DAMAGED) - 3, kind  # most of these shapes are no record at all
    path = cache._meta_path(meta, ("k",))
    path.write_text("{not json")
    assert cache.get_meta(meta, "k") is None


def test_a_record_reads_back_as_it_was_put(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    kind = declared()["hashed-pins"]
    from pyimage.resolve.pip import Pin

    pins = (Pin("six", "1.16.0", "six-1.16.0-py2.py3-none-any.whl", "https://user:secret@files.example/six.whl", "a" * 64),)
    cache.put_meta(kind, pins, "requirements text", "cp311 x86_64", "https://pypi.org/simple")
    back = cache.get_meta(kind, "requirements text", "cp311 x86_64", "https://pypi.org/simple")
    assert back is not None and back[0].sha256 == "a" * 64
    assert "secret" not in back[0].url  # credentials are stripped on the way to disk
    assert cache.get_meta(kind, "other text", "cp311 x86_64", "https://pypi.org/simple") is None


def test_the_cache_names_records_and_no_key_makes_a_path(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    words = Meta("wheel-size", count)
    assert cache._meta_path(words, ("ab12", "cp311")).name == "wheel-size1-ab12-cp311.json"
    assert cache._meta_path(words, ()).name == "wheel-size1.json"
    for hostile in (("../../etc/passwd",), ("a/b",), ("x" * 200,), ("\0",), ("..",), (".hidden",), ("a", "")):
        path = cache._meta_path(words, hostile)
        assert path.parent == cache.root / "meta"
        assert path.name.startswith("wheel-size1-") and len(path.name) == len("wheel-size1-") + 40 + len(".json")
    assert cache._meta_path(words, ("a", "b")) != cache._meta_path(words, ("a-b",))  # parts never run together
    with pytest.raises(TypeError, match="a wheel-size record's key is made of strings"):
        cache._meta_path(words, (3,))  # type: ignore[arg-type]


def test_raising_a_kinds_version_retires_its_records(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    old, new = Meta("fragment", strings), Meta("fragment", strings, version=2)
    cache.put_meta(old, ("a",), "k")
    assert cache.get_meta(old, "k") == ("a",)
    assert cache.get_meta(new, "k") is None
