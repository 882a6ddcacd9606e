"""`pyimage cache prune`: least recently *used* goes first (hits mark what they use), and every kind of entry
the cache holds is counted and can be pruned."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyimage.cache import Cache, LayerRecord


def blob(cache: Cache, data: bytes) -> str:
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    tmp = cache.tmp_path(".blob")
    tmp.write_bytes(data)
    cache.commit_blob(tmp, digest)
    return digest


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_cache_hit_keeps_its_blob_over_a_newer_unused_one(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    used = blob(cache, b"u" * 1000)
    unused = blob(cache, b"n" * 1000)
    age(cache.blob_path(used), 3600)  # made an hour ago ...
    age(cache.blob_path(unused), 60)
    cache.put_layer("k", LayerRecord(used, "sha256:" + "0" * 64, 1000, "application/vnd.oci.image.layer.v1.tar+gzip", 0))
    assert cache.get_layer("k") is not None  # ... and used just now
    cache.prune(max_size=1500)
    assert cache.blob_path(used).exists() and not cache.blob_path(unused).exists()
    assert cache.get_layer("k") is not None


def test_info_and_prune_cover_environments_app_wheels_and_sdist_wheels(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    env = cache.root / "envs" / "e1"
    (env / "lib").mkdir(parents=True)
    (env / "lib" / "big.py").write_bytes(b"x" * 5000)
    app = cache.root / "appwheels" / "f1"
    app.mkdir(parents=True)
    (app / "demo-1.0-py3-none-any.whl").write_bytes(b"w" * 3000)
    sdist = cache.root / "sdist-wheels" / "v2" / "3.11"
    sdist.mkdir(parents=True)
    (sdist / "c-1.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"s" * 2000)
    (sdist / "c-1.0-cp311-cp311-linux_x86_64.whl.sdist.json").write_text("{}")
    stats = cache.stats()
    assert (stats.envs, stats.env_bytes, stats.app_wheels, stats.app_wheel_bytes, stats.sdist_wheels) == (1, 5000, 1, 3000, 1)
    assert stats.total_bytes >= 10000
    for path in (env, app, sdist / "c-1.0-cp311-cp311-linux_x86_64.whl"):
        age(path, 7200)
    cache.touch(app)  # the app wheel was just reused
    removed, freed = cache.prune(older_than=3600)
    assert removed == 2 and freed == 5000 + 2000 + 2
    assert not env.exists() and app.exists() and not list(sdist.iterdir())


def test_prune_without_a_limit_says_what_it_needs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pyimage", "cache", "prune", "--cache-dir", str(tmp_path / "c")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-2:] == [
        "error: cache prune: nothing to do without a limit",
        "hint: give --max-size (e.g. 20GB) and/or --older-than (e.g. 30d)",
    ]


def test_a_lock_cannot_name_a_path_outside_the_cache(tmp_path: Path) -> None:
    """sha256 and file name come from lock files: anything but 64 hex digits and one plain name is refused."""
    from pyimage.cache import Cache
    from pyimage.errors import BuildError

    cache = Cache(tmp_path / "cache")
    for sha, name in (("../../etc", "passwd"), ("a" * 64, "../x.whl"), ("A" * 64, "x.whl"), ("a" * 64, "..")):
        with pytest.raises(BuildError, match="which is not a file name and a sha256"):
            cache.cached_wheel(sha, name)
    assert cache.cached_wheel("a" * 64, "six-1.16.0-py2.py3-none-any.whl") is None


@pytest.mark.parametrize("command", [["info"], ["verify"], ["prune", "--max-size", "1GB"]])
def test_a_mistyped_cache_dir_is_an_error_not_a_new_empty_cache(tmp_path: Path, command: list[str]) -> None:
    """A new-user trial: `cache prune --cache-dir /tmp/typo` said "removed 0 entries" and made a cache there."""
    done = subprocess.run([sys.executable, "-m", "pyimage", "cache", *command, "--cache-dir", str(tmp_path / "typo")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-2] == f"error: cache directory {tmp_path / 'typo'}: no such directory"
    assert not (tmp_path / "typo").exists()
