"""The content-addressed store: blobs by digest, layer keys to descriptors, wheels by sha256.

Layout under the root (default ``~/.cache/pyimage``, ``PYIMAGE_CACHE_DIR`` or ``--cache-dir``)::

    blobs/sha256/<hex>       layer blobs, per-wheel fragments, pulled base blobs
    layers/<key>.json        what a layer key built: digest, diff_id, size, media type, stat stamp
    wheels/<sha256>/<file>   wheels, by the sha256 of the file
    meta/<name>.json         small derived facts (wheel sizes, base image scans), keyed by content
    envs/<hash>/             reusable build environments (one per build-system.requires)
    tmp/                     work in progress; never trusted, swept by ``cache prune``

Every write goes to ``tmp/`` and is renamed into place, so a reader sees a whole file or none. A blob is
trusted while its size and the stat stamp recorded when it was committed still match; otherwise it is
re-hashed, and a mismatch throws the entry away (the layer is rebuilt, never shipped corrupt).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from pyimage.layers.compress import file_sha256

__all__ = ["Cache", "LayerRecord", "default_cache_dir", "CacheStats"]


def default_cache_dir() -> Path:
    env = os.environ.get("PYIMAGE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pyimage"


@dataclass(frozen=True)
class LayerRecord:
    digest: str
    diff_id: str
    size: int
    media_type: str
    uncompressed_size: int = 0


@dataclass(frozen=True)
class CacheStats:
    root: Path
    blobs: int
    blob_bytes: int
    layers: int
    wheels: int
    wheel_bytes: int
    envs: int
    hits: int
    misses: int


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for sub in ("blobs/sha256", "layers", "wheels", "meta", "envs", "tmp", "locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # -- temp files and atomic writes ------------------------------------------------------------------
    def tmp_path(self, hint: str = "") -> Path:
        return self.root / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex[:12]}{hint}"

    def _write_json(self, path: Path, value: Any) -> None:
        tmp = self.tmp_path(".json")
        tmp.write_text(json.dumps(value, sort_keys=True, indent=1))
        os.replace(tmp, path)

    # -- blobs -----------------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        algo, _, hexdigest = digest.partition(":")
        return self.root / "blobs" / algo / hexdigest

    def commit_blob(self, tmp: Path, digest: str) -> Path:
        """Moves ``tmp`` (whose digest the caller computed while writing it) to its content address."""
        dest = self.blob_path(digest)
        os.replace(tmp, dest)
        self._stamp(dest)
        return dest

    def mark_verified(self, digest: str) -> None:
        """Records that the caller has just checked this blob against its digest (while writing or fetching it),
        so the next use trusts it after a ``stat`` instead of hashing it again."""
        self._stamp(self.blob_path(digest))

    def _stamp_path(self, blob: Path) -> Path:
        return self.root / "meta" / f"stamp-{blob.name}.json"

    def _stamp(self, blob: Path) -> None:
        st = blob.stat()
        self._write_json(self._stamp_path(blob), [st.st_size, st.st_mtime_ns, st.st_ino])

    def valid_blob(self, digest: str, size: int | None = None) -> Path | None:
        """The blob's path if it is present and intact; a corrupt one is deleted and None returned."""
        path = self.blob_path(digest)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        if size is not None and st.st_size != size:
            self._discard(path)
            return None
        try:
            stamp = json.loads(self._stamp_path(path).read_text())
        except (OSError, ValueError):
            stamp = None
        if stamp == [st.st_size, st.st_mtime_ns, st.st_ino]:
            return path
        if file_sha256(path) != digest:
            self._discard(path)
            return None
        self._stamp(path)
        return path

    def _discard(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self._stamp_path(path).unlink()

    # -- layer records ---------------------------------------------------------------------------------
    def get_layer(self, key: str) -> LayerRecord | None:
        path = self.root / "layers" / f"{key}.json"
        try:
            record = LayerRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            self._count("miss")
            return None
        if self.valid_blob(record.digest, record.size) is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._count("miss")
            return None
        self._count("hit")
        return record

    def put_layer(self, key: str, record: LayerRecord) -> None:
        self._write_json(self.root / "layers" / f"{key}.json", asdict(record))

    def _count(self, what: str) -> None:
        with open(self.root / "meta" / "hits.log", "a") as f:
            f.write(what + "\n")

    # -- small derived facts ---------------------------------------------------------------------------
    def get_meta(self, name: str) -> Any | None:
        try:
            return json.loads((self.root / "meta" / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None

    def put_meta(self, name: str, value: Any) -> None:
        self._write_json(self.root / "meta" / f"{name}.json", value)

    # -- wheels ----------------------------------------------------------------------------------------
    def wheel_path(self, sha256: str, filename: str) -> Path:
        return self.root / "wheels" / sha256 / filename

    def cached_wheel(self, sha256: str, filename: str) -> Path | None:
        path = self.wheel_path(sha256, filename)
        return path if path.is_file() else None

    def add_wheel(self, source: Path, sha256: str | None = None) -> tuple[Path, str]:
        """Copies (or hard-links) a wheel in, verifying ``sha256`` when given; returns (path, sha256)."""
        tmp = self.tmp_path(".whl")
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        actual = file_sha256(tmp).partition(":")[2]
        if sha256 and actual != sha256:
            tmp.unlink()
            from pyimage.errors import BuildError

            raise BuildError(
                f"{source.name}: sha256 {actual[:12]}… does not match the expected {sha256[:12]}…",
                "the wheel changed since it was locked: run `pyimage lock` to refresh the lock file",
            )
        dest = self.wheel_path(actual, source.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        return dest, actual

    # -- locks -----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, shared: bool = False) -> Iterator[None]:
        """An inter-process lock (flock) on ``name``: a layer key while it is built, ``cache`` for prune."""
        with open(self.root / "locks" / f"{name}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- maintenance -----------------------------------------------------------------------------------
    def stats(self) -> CacheStats:
        blobs = [p for p in (self.root / "blobs" / "sha256").iterdir() if p.is_file()]
        wheels = [p for p in (self.root / "wheels").glob("*/*") if p.is_file()]
        hits = misses = 0
        with contextlib.suppress(FileNotFoundError):
            for line in (self.root / "meta" / "hits.log").read_text().split():
                hits += line == "hit"
                misses += line == "miss"
        return CacheStats(
            root=self.root,
            blobs=len(blobs),
            blob_bytes=sum(p.stat().st_size for p in blobs),
            layers=len(list((self.root / "layers").glob("*.json"))),
            wheels=len(wheels),
            wheel_bytes=sum(p.stat().st_size for p in wheels),
            envs=len([p for p in (self.root / "envs").iterdir() if p.is_dir()]),
            hits=hits,
            misses=misses,
        )

    def verify(self) -> list[str]:
        """Re-hashes every blob; deletes and returns the digests of the ones that do not match."""
        bad = []
        for path in sorted((self.root / "blobs" / "sha256").iterdir()):
            digest = "sha256:" + path.name
            if file_sha256(path) != digest:
                self._discard(path)
                bad.append(digest)
            else:
                self._stamp(path)
        return bad

    def prune(self, max_size: int | None = None, older_than: float | None = None) -> tuple[int, int]:
        """Removes least-recently-used blobs and wheels until under ``max_size`` bytes, and any entry unused
        for ``older_than`` seconds; returns (files removed, bytes freed). Holds the cache lock exclusively."""
        removed = freed = 0
        with self.lock("cache"):
            with contextlib.suppress(FileNotFoundError):
                (self.root / "meta" / "hits.log").unlink()  # the hit counts start again after a prune
            for stale in (self.root / "tmp").iterdir():
                with contextlib.suppress(OSError):
                    shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
            entries = [p for p in (self.root / "blobs" / "sha256").iterdir() if p.is_file()]
            entries += [p for p in (self.root / "wheels").glob("*/*") if p.is_file()]
            entries.sort(key=lambda p: p.stat().st_atime)
            total = sum(p.stat().st_size for p in entries)
            now = time.time()
            for path in entries:
                st = path.stat()
                too_old = older_than is not None and now - max(st.st_atime, st.st_mtime) > older_than
                too_big = max_size is not None and total > max_size
                if not (too_old or too_big):
                    continue
                self._discard(path)
                if path.parent.parent.name == "wheels":
                    with contextlib.suppress(OSError):
                        path.parent.rmdir()
                removed += 1
                freed += st.st_size
                total -= st.st_size
            for record in (self.root / "layers").glob("*.json"):  # drop records whose blob is gone
                try:
                    digest = json.loads(record.read_text())["digest"]
                except (OSError, ValueError, KeyError):
                    digest = ""
                if not digest or not self.blob_path(digest).exists():
                    record.unlink()
        return removed, freed
