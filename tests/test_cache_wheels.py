"""Wheels enter the cache by their sha256, read once: hard-linked and hashed in place, or hashed while copied."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from pyimage.cache import Cache
from pyimage.errors import BuildError

DATA = os.urandom(3 << 20)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def elsewhere() -> Iterator[Path]:
    """A directory on another file system than the test's tmp dir, where ``os.link`` cannot reach."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tempfile.gettempdir()).st_dev:
        pytest.skip("no second file system (/dev/shm) to copy across")
    path = Path(tempfile.mkdtemp(dir=shm, prefix="pyimage-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def source_dir(across: bool, request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if across:
        return request.getfixturevalue("elsewhere")  # type: ignore[no-any-return]
    (tmp_path / "src").mkdir()
    return tmp_path / "src"


def leftovers(cache: Cache) -> list[Path]:
    return list((cache.root / "tmp").iterdir())


@pytest.mark.parametrize("across", [False, True], ids=["linked", "copied"])
def test_a_wheel_enters_the_cache_under_its_sha256(across: bool, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    source = source_dir(across, request, tmp_path) / "demo-1.0-py3-none-any.whl"
    source.write_bytes(DATA)
    cache = Cache(tmp_path / "cache")

    path, sha = cache.add_wheel(source, SHA)

    assert (path, sha) == (cache.wheel_path(SHA, source.name), SHA)
    assert path.read_bytes() == DATA
    assert (os.stat(path).st_ino == os.stat(source).st_ino) is not across  # linked on one file system, copied across
    assert cache.add_wheel(source)[1] == SHA  # no expected hash: the bytes name it
    assert leftovers(cache) == []


@pytest.mark.parametrize("across", [False, True], ids=["linked", "copied"])
def test_a_wheel_whose_bytes_do_not_match_is_refused_and_nothing_is_kept(across: bool, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    source = source_dir(across, request, tmp_path) / "demo-1.0-py3-none-any.whl"
    source.write_bytes(DATA[:-1] + b"?")
    cache = Cache(tmp_path / "cache")

    with pytest.raises(BuildError, match="does not match the expected"):
        cache.add_wheel(source, SHA)
    assert list((cache.root / "wheels").iterdir()) == []
    assert leftovers(cache) == []


def test_a_copy_is_hashed_even_when_the_caller_says_it_hashed_the_download(elsewhere: Path, tmp_path: Path) -> None:
    """``hashed`` spares the read of a hard link to the very bytes the caller hashed; a copy is new bytes."""
    source = elsewhere / "demo-1.0-py3-none-any.whl"
    source.write_bytes(DATA[:-1] + b"?")
    cache = Cache(tmp_path / "cache")

    with pytest.raises(BuildError, match="does not match the expected"):
        cache.add_wheel(source, SHA, hashed=True)
    assert leftovers(cache) == []


def test_a_locked_wheel_fetched_by_url_is_verified_as_it_arrives_and_kept_under_its_sha256(tmp_path: Path) -> None:
    """indexfiles.fetch, the one download of a locked wheel: hashed once (as it arrives over HTTP), then linked in."""
    from pyimage.resolve.lockinput import _fetch
    from pyimage.resolve.pip import Pin

    served = tmp_path / "index" / "demo-1.0-py3-none-any.whl"
    served.parent.mkdir()
    served.write_bytes(DATA)
    cache = Cache(tmp_path / "cache")

    _fetch(Pin("demo", "1.0", served.name, served.as_uri(), SHA), None, tmp_path, cache)
    assert cache.cached_wheel(SHA, served.name) is not None
    assert cache.wheel_path(SHA, served.name).read_bytes() == DATA

    served.write_bytes(DATA[:-1] + b"?")  # the index now serves other bytes for the same pin
    other = Cache(tmp_path / "other")
    with pytest.raises(BuildError, match="demo-1.0-py3-none-any.whl from file:.* does not match the sha256 in the lock"):
        _fetch(Pin("demo", "1.0", served.name, served.as_uri(), SHA), None, tmp_path, other)
    assert list((other.root / "wheels").iterdir()) == []
    assert leftovers(other) == []
