"""The content-addressed store: blobs by digest, layer keys to descriptors, wheels by sha256.

Layout under the root (default ``~/.cache/pyimage``, ``PYIMAGE_CACHE_DIR`` or ``--cache-dir``)::

    blobs/sha256/<hex>       layer blobs, per-wheel fragments, pulled base blobs
    layers/<key>.json        what a layer key built: digest, diff_id, size, media type, stat stamp
    wheels/<sha256>/<file>   wheels, by the sha256 of the file
    meta/<name>.json         small derived facts (wheel sizes, base image scans), keyed by content
    envs/<hash>/             reusable build environments (one per build-system.requires)
    tmp/                     work in progress, named ``<pid>-…``; never trusted
    locks/                   flock files: layer keys, ``cache`` (builds shared, prune exclusive), ``pid-<pid>``

Every write goes to ``tmp/`` and is renamed into place, so a reader sees a whole file or none. A blob is
trusted while its size and the stat stamp recorded when it was committed still match (the stat-stamp rule:
a change that keeps size, mtime and inode is not noticed until ``cache verify``); otherwise it is re-hashed,
and a mismatch throws the entry away (the layer is rebuilt, never shipped corrupt).

Each process holds ``locks/pid-<pid>.lock`` while it lives (removed when it exits), so a temp entry whose process is gone (killed, its
lock free) and that is older than ``STALE_AFTER`` is a leftover: swept when a build starts, reported and
removed by ``cache verify``, removed by ``cache prune`` (which waits for running builds).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import re
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Generic, Iterator, TypeVar

import pyimage.atomic as atomic
from pyimage.errors import BuildError
from pyimage.hashing import copy_hashing, file_digest, hex_of, matches
from pyimage.oci.model import DIGEST_ALGORITHMS, blob_relpath, parse_digest

__all__ = ["Cache", "LayerRecord", "Meta", "META_KINDS", "count", "flag", "sha256_digest", "string", "strings", "default_cache_dir", "CacheStats", "VerifyReport", "STALE_AFTER"]

STALE_AFTER = 600.0  # seconds without a write before a dead process's temp entry counts as a leftover
STALE_AFTER_UNOWNED = 86400.0  # entries not named <pid>-… (made by tools we call): a day, to be safe
_PROCESS_LOCKS: dict[str, int] = {}  # "pid:cache root" -> the descriptor holding that process's pid lock


def _release_process_locks() -> None:
    """At exit (normal, an error, Ctrl-C), this process's ``locks/pid-<pid>.lock`` files are removed: each is
    unlinked while still held, so no other process finds it free first. A killed process's are swept by the
    next build (``Cache.sweep``). A forked child inherits this hook but releases only its own."""
    pid = str(os.getpid())
    for key, fd in list(_PROCESS_LOCKS.items()):
        owner, _, root = key.partition(":")
        if owner != pid:
            continue
        del _PROCESS_LOCKS[key]
        if fd < 0:  # the file of another pid namespace's process: not ours to remove
            continue
        with contextlib.suppress(OSError):
            os.unlink(Path(root) / "locks" / f"pid-{pid}.lock")
        os.close(fd)


def default_cache_dir() -> Path:
    env = os.environ.get("PYIMAGE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pyimage"


T = TypeVar("T")

# Every kind of record kept under meta/, the one list of them. Each is a fact derived from content (so it can
# always be worked out again), declared as a ``Meta`` by the module that works it out.
META_KINDS: dict[str, str] = {
    "wheel-size": "the bytes a wheel installs (pipeline.py)",
    "fragment": "the directories and files of a per-wheel fragment blob (layers/build.py)",
    "natives": "the ELF files a wheel holds, their machine and the sonames they need (layers/native.py)",
    "natives-set": "a wheel set whose native libraries were all found in the image (layers/native.py)",
    "conflicts": "the notes of a wheel set checked for files written twice (layers/conflicts.py)",
    "files": "the paths and file hashes a wheel installs, and its namespace __init__.py files (layers/conflicts.py)",
    "rootfs-sha": "the sha256 of a rootfs: base file, by its path and stat (base.py)",
    "archive": "the config and layers of a docker-archive base, by its stat (base.py)",
    "diff-id": "the verified diff_id and size of a base blob (base.py)",
    "scan": "what a base's layers hold: interpreters, libc, libraries, accounts, links (base.py)",
    "pushed": "repositories of each registry pushed to, for cross-repository mounts (publish.py)",
    "sdist-wheel": "the wheel built here from an sdist, for one target (resolve/pip.py)",
    "hashed-pins": "the pins read from a hashed requirements file, for one target (resolve/hashedreqs.py)",
    "wheel-url": "where a wheel named by a poetry.lock was found, without credentials (resolve/poetrylock.py)",
    "placed": "a blob copied into an output layout, by its path and stat (cache.py)",
    "app-sources": "which source file became which member of the project's last wheel, by the tree's shape (resolve/wheelpatch.py)",
    "last-layers": "the packages of each layer of a project's last build, per platform, to say what a rebuilt layer changed (pipeline.py)",
    "built": "a layer blob this cache holds, by media type and diff_id: the same layer exported by an engine maps back to it (cache.py)",
}
_PLAIN_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._]{0,79}")


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Meta(Generic[T]):
    """One kind of record the cache keeps under ``meta/``: ``load`` makes a ``T`` of what was written, raising
    KeyError, TypeError or ValueError on any other shape (the record is then absent: damaged, or an older
    format); ``dump`` makes JSON of a ``T``. Raising ``version`` retires every record of the kind."""

    kind: str
    load: Callable[[Any], T]
    dump: Callable[[T], Any] = _same
    version: int = 1

    def __post_init__(self) -> None:
        if self.kind not in META_KINDS:
            raise ValueError(f"{self.kind!r} is not a kind of cache record: declare it in META_KINDS")


def strings(value: Any) -> tuple[str, ...]:
    """A JSON list of strings, checked (for ``Meta.load`` functions)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("not a list of strings")
    return tuple(value)


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def sha256_digest(value: Any) -> str:
    """A ``sha256:<64 hex>`` digest."""
    if not isinstance(value, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
        raise ValueError("not a sha256 digest")
    return value


def flag(value: Any) -> bool:
    """A record that only says something was done: ``true``."""
    if value is not True:
        raise TypeError("not true")
    return True


def _placed(value: Any) -> tuple[str, int, int, int, int]:
    digest, size, mtime, ino, mode = value
    if not isinstance(digest, str) or not all(type(v) is int for v in (size, mtime, ino, mode)):
        raise TypeError("not a placed stamp")
    return digest, size, mtime, ino, mode


def count(value: Any) -> int:
    """A number of bytes or things: a non-negative int."""
    if type(value) is not int or value < 0:
        raise TypeError("not a count")
    return value


PLACED: Meta[tuple[str, int, int, int, int]] = Meta("placed", _placed, list)


@dataclass(frozen=True)
class LayerRecord:
    digest: str
    diff_id: str
    size: int
    media_type: str
    uncompressed_size: int = 0


def _layer_record(value: Any) -> LayerRecord:
    return LayerRecord(**value)


BUILT: Meta[LayerRecord] = Meta("built", _layer_record, asdict)


@dataclass(frozen=True)
class VerifyReport:
    """What ``cache verify`` found: corrupt blobs and leftovers (removed), temp entries of running builds (kept)."""

    corrupt: tuple[str, ...] = ()
    leftovers: tuple[str, ...] = ()
    in_use: tuple[str, ...] = ()
    dangling: tuple[str, ...] = ()
    leftover_bytes: int = 0

    @property
    def clean(self) -> bool:
        return not (self.corrupt or self.leftovers or self.dangling)


@dataclass(frozen=True)
class CacheStats:
    root: Path
    blobs: int
    blob_bytes: int
    layers: int  # layer records whose blob is here
    wheels: int
    wheel_bytes: int
    envs: int
    hits: int
    misses: int
    env_bytes: int = 0  # build environments (envs/)
    app_wheels: int = 0  # the project's own wheels kept by source fingerprint (appwheels/)
    app_wheel_bytes: int = 0
    sdist_wheels: int = 0  # wheels built here from sdist-only dependencies (sdist-wheels/)
    sdist_wheel_bytes: int = 0
    total_bytes: int = 0  # everything under the cache root
    remote_layers: int = 0  # records kept after their blob was pruned (push-only builds use them)


class Cache:
    def __init__(self, root: Path) -> None:
        # Absolute: build environments and backends run in the project directory, where a relative
        # `--cache-dir c` would name another place.
        self.root = Path(root).absolute()
        if self.root.exists() and not self.root.is_dir():
            raise BuildError(f"cache directory {self.root} exists and is not a directory", "pass another --cache-dir (or PYIMAGE_CACHE_DIR), or remove that file")
        try:
            for sub in ("blobs/sha256", "layers", "wheels", "meta", "envs", "tmp", "locks"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            self._hold_process_lock()
        except OSError as exc:
            where = exc.filename or self.root
            raise BuildError(
                f"cache directory {self.root}: cannot use {where} ({exc.strerror})",
                "pass a writable --cache-dir (or PYIMAGE_CACHE_DIR), or fix the permissions of that path",
            ) from None

    # -- temp files and atomic writes ------------------------------------------------------------------
    def tmp_path(self, hint: str = "") -> Path:
        """A fresh path under ``tmp/``, named for this process so a sweep can tell whether its writer lives."""
        return self.root / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex[:12]}{hint}"

    @contextlib.contextmanager
    def tmp_dir(self) -> Iterator[Path]:
        """A fresh directory under ``tmp/`` (named for this process), removed afterwards."""
        with tempfile.TemporaryDirectory(dir=self.root / "tmp", prefix=f"{os.getpid()}-") as tmp:
            yield Path(tmp)

    # -- the cache's places for what other stages keep (nobody else joins paths under the root) ------------
    @property
    def blobs_dir(self) -> Path:
        """The content-addressed blob store (``blobs/<algorithm>/<hex>``), for code that writes blobs by digest."""
        return self.root / "blobs"

    def build_env_dir(self, key: str) -> Path:
        """The kept build environment of one ``build-system.requires`` set and interpreter."""
        return self.root / "envs" / _plain_key(key)

    def app_wheel_dir(self, fingerprint: str) -> Path:
        """The project wheel kept for one source fingerprint."""
        return self.root / "appwheels" / _plain_key(fingerprint)

    def sdist_wheel_dir(self, python: str) -> Path:
        """Wheels built here from sdists, for one target Python (each beside its ``<wheel>.sdist.json``)."""
        return self.root / "sdist-wheels" / "v2" / _plain_key(python)  # v2: each wheel has its <wheel>.sdist.json

    def interpreter_archive(self, sha256: str) -> Path:
        """A downloaded interpreter archive, by its (checked) sha256."""
        return self.root / "meta" / f"interpreter-{_plain_key(sha256)}.tar"

    def _hold_process_lock(self) -> None:
        key = f"{os.getpid()}:{self.root.resolve()}"  # a forked child needs a lock of its own
        if _PROCESS_LOCKS.get(key) is not None:
            return
        fd = os.open(self.root / "locks" / f"pid-{os.getpid()}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another pid namespace shares this number and cache: our entries just look alive
            os.close(fd)
            fd = -1
        if not _PROCESS_LOCKS:
            atexit.register(_release_process_locks)
        _PROCESS_LOCKS[key] = fd

    def _write_json(self, path: Path, value: Any) -> None:
        atomic.write_text(path, json.dumps(value, sort_keys=True, indent=1), self.tmp_path(".json"))

    # -- blobs -----------------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        """Where the blob of ``digest`` lives; the digest is parsed strictly (ValueError) before a path is made."""
        return self.root / blob_relpath(digest)

    def commit_blob(self, tmp: Path, digest: str) -> Path:
        """Moves ``tmp`` (whose digest the caller computed while writing it) to its content address."""
        dest = self.blob_path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        self._stamp(dest)
        return dest

    def ingest_blob(self, src: BinaryIO, digest: str | None, size: int, where: str) -> tuple[str, Path]:
        """Copies an untrusted blob in, hashing it on the way: ``(digest, path)``. With ``digest`` given, it is
        committed only if it is exactly ``size`` bytes with that digest (a BuildError naming ``where`` otherwise),
        and a blob already present and intact is not read again; without, its sha256 names it."""
        if digest is not None:
            have = self.valid_blob(digest, size)
            if have is not None:
                return digest, have
        algo, expected = parse_digest(digest) if digest is not None else ("sha256", None)
        h = hashlib.new(algo)
        tmp = self.tmp_path(".blob")
        got = 0
        try:
            with _naming(tmp), open(tmp, "wb") as out:
                while data := src.read(min(1 << 20, size - got + 1)):
                    got += len(data)
                    if got > size:
                        break
                    h.update(data)
                    out.write(data)
            if got != size:
                raise BuildError(
                    f"{where}: blob {(digest or '')[:19]}… is {'more than ' if got > size else ''}{got} bytes, not the {size} its descriptor says",
                    "the base is truncated, damaged or tampered with; re-export or re-pull it",
                )
            if expected is not None and not matches(expected, h.hexdigest()):
                raise BuildError(f"{where}: blob {(digest or '')[:19]}… does not match its digest", "the base is damaged or tampered with; re-export or re-pull it")
            actual = f"{algo}:{h.hexdigest()}"
            return actual, self.commit_blob(tmp, actual)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

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
            self.touch(path)
            return path
        if not matches(digest, file_digest(path, digest.partition(":")[0])):
            self._discard(path)
            return None
        self._stamp(path)
        self.touch(path)
        return path

    def _discard(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self._stamp_path(path).unlink()

    # -- copies of blobs placed in output layouts (layout.BlobStamps) ---------------------------------------
    def intact(self, path: Path, digest: str) -> bool:
        """True if ``path`` is the copy of ``digest`` placed earlier and its stat is unchanged since (stat-stamp rule)."""
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return False
        return self.get_meta(PLACED, str(Path(path).absolute())) == (digest, st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode)

    def placed(self, path: Path, digest: str) -> None:
        st = os.stat(path, follow_symlinks=False)
        self.put_meta(PLACED, (digest, st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode), str(Path(path).absolute()))

    # -- layer records ---------------------------------------------------------------------------------
    def get_layer(self, key: str) -> LayerRecord | None:
        path = self.root / "layers" / f"{key}.json"
        try:
            record = LayerRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            self._count("miss")
            return None
        if self.valid_blob(record.digest, record.size) is None:
            self._count("miss")  # the record stays: a push-only build may find its blob in the registry
            return None
        self._count("hit")
        return record

    def layer_record(self, key: str) -> LayerRecord | None:
        """The record of ``key`` whether or not its blob is still here. ``prune`` removes blobs but keeps their
        records (a few hundred bytes each), so a push-only build can ask the registry for a layer it built
        before instead of downloading wheels to build it again."""
        try:
            return LayerRecord(**json.loads((self.root / "layers" / f"{key}.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def put_layer(self, key: str, record: LayerRecord) -> None:
        self._write_json(self.root / "layers" / f"{key}.json", asdict(record))
        self.put_meta(BUILT, record, record.media_type, record.diff_id)

    def built_blob(self, media_type: str, diff_id: str) -> LayerRecord | None:
        """The blob of ``media_type`` this cache recorded for a layer of ``diff_id`` (a build's layer, a compressed
        base), while it is still here: a layer an engine exported uncompressed (``docker save``) maps back to the
        very blob the build wrote, rather than being compressed into a second blob of the same layer."""
        record = self.get_meta(BUILT, media_type, diff_id)
        if record is None or record.diff_id != diff_id or record.media_type != media_type or self.valid_blob(record.digest, record.size) is None:
            return None
        return record

    def _count(self, what: str) -> None:
        with contextlib.suppress(OSError):  # statistics only: never fail a build over them
            with open(self.root / "meta" / "hits.log", "a") as f:
                f.write(what + "\n")

    # -- small derived facts ---------------------------------------------------------------------------
    def get_meta(self, kind: "Meta[T]", *key: str) -> T | None:
        """The record of ``kind`` kept under ``key``, or None when there is none or it does not read back as
        ``kind`` says (an older format, a damaged file): the caller works it out again and puts it anew."""
        path = self._meta_path(kind, key)
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        try:
            return kind.load(raw)
        except (KeyError, TypeError, ValueError, AttributeError):
            with contextlib.suppress(OSError):
                path.unlink()
            return None

    def put_meta(self, kind: "Meta[T]", value: T, *key: str) -> None:
        self._write_json(self._meta_path(kind, key), kind.dump(value))

    def _meta_path(self, kind: "Meta[Any]", key: tuple[str, ...]) -> Path:
        """The cache names every record: ``<kind><version>[-<key>]``, the key's parts joined when they are short
        plain words (digests, sha256s), else their sha256; no caller spells a file name under ``meta/``."""
        if not all(isinstance(part, str) for part in key):
            raise TypeError(f"a {kind.kind} record's key is made of strings, not {key!r}")
        joined = "".join("-" + part for part in key)
        if len(joined) > 160 or not all(_PLAIN_PART.fullmatch(part) for part in key):
            joined = "-" + hashlib.sha256("\0".join(key).encode()).hexdigest()[:40]
        return self.root / "meta" / f"{kind.kind}{kind.version}{joined}.json"

    # -- wheels ----------------------------------------------------------------------------------------
    def wheel_path(self, sha256: str, filename: str) -> Path:
        """Where the wheel (or sdist) of ``sha256`` is kept; both parts come from locks and indexes, so they are
        checked to name one entry each before a path is made: a lock that says otherwise is refused."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256) or not filename or "/" in filename or "\0" in filename or filename in (".", ".."):
            raise BuildError(f"a lock or index names the file {filename[:80]!r} with sha256 {sha256[:80]!r}, which is not a file name and a sha256", "re-create the lock with the tool that wrote it")
        return self.root / "wheels" / sha256 / filename

    def cached_wheel(self, sha256: str, filename: str) -> Path | None:
        path = self.wheel_path(sha256, filename)
        if not path.is_file():
            return None
        self.touch(path)
        return path

    def add_wheel(self, source: Path, sha256: str | None = None, *, hashed: bool = False) -> tuple[Path, str]:
        """Hard-links (or copies) a wheel in, verifying ``sha256`` when given; returns (path, sha256).

        The bytes are read once: a copy is hashed while it is written, a link is hashed in place. ``hashed``
        says the caller has just computed ``sha256`` from these very bytes (while downloading them): a link
        is then not read at all.
        """
        tmp = self.tmp_path(".whl")
        try:
            try:
                os.link(source, tmp)
                linked = True
            except OSError:
                linked = False
            if linked and hashed and sha256:
                actual = sha256
            elif linked:
                actual = hex_of(file_digest(tmp))
            else:
                actual = hex_of(copy_hashing(source, tmp))
            if sha256 and not matches(sha256, actual):
                raise BuildError(
                    f"{source.name}: sha256 {actual[:12]}… does not match the expected {sha256[:12]}…",
                    "the wheel changed since it was locked: run `pyimage lock` to refresh the lock file",
                )
            dest = self.wheel_path(actual, source.name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
            return dest, actual
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

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
        blobs = [p for p in (self.root / "blobs" / "sha256").iterdir() if p.is_file() and not p.name.startswith(".")]
        wheels = [p for p in (self.root / "wheels").glob("*/*") if p.is_file()]
        hits = misses = 0
        with contextlib.suppress(FileNotFoundError):
            for line in (self.root / "meta" / "hits.log").read_text().split():
                hits += line == "hit"
                misses += line == "miss"
        units = {kind: self._units(kind) for kind in _UNIT_DIRS}
        present = {p.name for p in blobs}
        records = [self.layer_record(p.stem) for p in (self.root / "layers").glob("*.json")]
        local = sum(1 for r in records if r is not None and r.digest.partition(":")[2] in present)
        return CacheStats(
            root=self.root,
            blobs=len(blobs),
            blob_bytes=sum(p.stat().st_size for p in blobs),
            layers=local,
            wheels=len(wheels),
            wheel_bytes=sum(p.stat().st_size for p in wheels),
            envs=len(units["envs"]),
            hits=hits,
            misses=misses,
            env_bytes=sum(size for _, _, size in units["envs"]),
            app_wheels=len(units["appwheels"]),
            app_wheel_bytes=sum(size for _, _, size in units["appwheels"]),
            sdist_wheels=len(units["sdist-wheels"]),
            sdist_wheel_bytes=sum(size for _, _, size in units["sdist-wheels"]),
            total_bytes=_tree_size(self.root),
            remote_layers=sum(1 for r in records if r is not None) - local,
        )

    def touch(self, path: Path) -> None:
        """Marks ``path`` (a blob, a wheel, an entry's directory) as just used, for ``prune``'s recency: its
        access time is set now, its mtime kept (so stat stamps stay valid). Hits call this; atime updates by the
        file system alone (noatime, relatime) are not relied on."""
        with contextlib.suppress(OSError):
            os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))

    def _units(self, kind: str) -> list[tuple[Path, float, int]]:
        """``(path, last use, bytes)`` of each prunable entry of a directory of whole entries: a build
        environment, a kept app wheel's directory, an sdist-built wheel (with its ``.sdist.json``)."""
        root = self.root / kind
        if not root.is_dir():
            return []
        if kind == "sdist-wheels":
            return [(p, p.stat().st_atime, p.stat().st_size + _tree_size(p.with_name(p.name + ".sdist.json"))) for p in root.rglob("*.whl") if p.is_file()]
        return [(p, p.stat().st_atime, _tree_size(p)) for p in root.iterdir() if p.is_dir() and not p.is_symlink()]

    def _tmp_entries(self) -> Iterator[tuple[Path, bool, int]]:
        """``(path, stale, bytes)`` for each entry of ``tmp/`` (and each download part file beside the blobs):
        stale if its process is gone and it is old enough."""
        now = time.time()
        parts = [p for algo in DIGEST_ALGORITHMS if (self.root / "blobs" / algo).is_dir() for p in (self.root / "blobs" / algo).glob(".*")]
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted((self.root / "tmp").iterdir()) + sorted(parts):
                try:
                    st = entry.lstat()
                except FileNotFoundError:
                    continue
                size = _tree_size(entry)
                newest = max(st.st_mtime, _tree_mtime(entry))
                pid, sep, _ = entry.name.partition("-")
                if sep and pid.isdigit():
                    stale = now - newest >= STALE_AFTER and not self._process_alive(int(pid))
                else:
                    stale = now - newest >= STALE_AFTER_UNOWNED
                yield entry, stale, size

    def _process_alive(self, pid: int) -> bool:
        """Whether the pyimage process ``pid`` still holds its lock (a dead one's lock is free, whatever the pid)."""
        if pid == os.getpid():
            return True
        try:
            fd = os.open(self.root / "locks" / f"pid-{pid}.lock", os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)

    def sweep(self) -> list[Path]:
        """Removes temp entries left by killed runs (stale: see ``_tmp_entries``); called when a build starts."""
        removed = []
        for entry, stale, _size in self._tmp_entries():
            if stale:
                _remove(entry)
                removed.append(entry)
        for lock in (self.root / "locks").glob("pid-*.lock"):
            pid = lock.name[4:-5]
            if pid.isdigit() and not self._process_alive(int(pid)):
                with contextlib.suppress(OSError):
                    lock.unlink()
        return removed

    def verify(self) -> VerifyReport:
        """Re-hashes every blob (deleting the ones that do not match), removes leftovers of killed runs and
        unreadable layer records, and lists the temp entries of builds still running (left alone)."""
        bad = []
        for algo in DIGEST_ALGORITHMS:
            folder = self.root / "blobs" / algo
            for path in sorted(folder.iterdir()) if folder.is_dir() else ():
                if path.name.startswith("."):  # a download in progress (or a killed one's part file)
                    continue
                digest = f"{algo}:{path.name}"
                try:
                    parse_digest(digest)
                    intact = path.is_file() and not path.is_symlink() and matches(digest, file_digest(path, algo))
                except ValueError:
                    intact = False
                if not intact:
                    _remove(path)
                    with contextlib.suppress(FileNotFoundError):
                        self._stamp_path(path).unlink()
                    bad.append(digest)
                else:
                    self._stamp(path)
        leftovers, in_use, freed = [], [], 0
        for entry, stale, size in self._tmp_entries():
            shown = str(entry.relative_to(self.root))
            if stale:
                _remove(entry)
                leftovers.append(shown)
                freed += size
            else:
                in_use.append(shown)
        dangling = []  # unreadable layer records; one whose blob is gone stays (``layer_record``)
        for record in sorted((self.root / "layers").glob("*.json")):
            try:
                parse_digest(json.loads(record.read_text())["digest"])
            except (OSError, ValueError, KeyError, TypeError):
                record.unlink(missing_ok=True)
                dangling.append(f"layers/{record.name}")
        return VerifyReport(tuple(bad), tuple(leftovers), tuple(in_use), tuple(dangling), freed)

    def prune(self, max_size: int | None = None, older_than: float | None = None) -> tuple[int, int]:
        """Removes least-recently-used entries until under ``max_size`` bytes, and any entry unused for
        ``older_than`` seconds; returns (entries removed, bytes freed). Entries are blobs, wheels, build
        environments, kept app wheels and sdist-built wheels; recency is the last hit (``touch``). Holds the cache
        lock exclusively, so it waits for running builds."""
        removed = freed = 0
        with self.lock("cache"):
            with contextlib.suppress(FileNotFoundError):
                (self.root / "meta" / "hits.log").unlink()  # the hit counts start again after a prune
            for entry, _stale, _size in self._tmp_entries():
                pid, sep, _ = entry.name.partition("-")
                if not (sep and pid.isdigit() and self._process_alive(int(pid))):  # builds hold the cache lock
                    _remove(entry)  # shared, so none runs now; a live `plan` or `lock` keeps its entries
            files = [p for p in (self.root / "blobs" / "sha256").iterdir() if p.is_file() and not p.name.startswith(".")]
            files += [p for p in (self.root / "wheels").glob("*/*") if p.is_file()]
            entries = [(p, max(st.st_atime, st.st_mtime), st.st_size) for p in files for st in (p.stat(),)]
            entries += [unit for kind in _UNIT_DIRS for unit in self._units(kind)]
            entries.sort(key=lambda e: e[1])  # least recently used first (hits `touch` what they use)
            total = sum(size for _, _, size in entries)
            now = time.time()
            for path, used, size in entries:
                too_old = older_than is not None and now - used > older_than
                too_big = max_size is not None and total > max_size
                if not (too_old or too_big):
                    continue
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.parent.parent.name == "wheels":
                    path.unlink(missing_ok=True)
                    with contextlib.suppress(OSError):
                        path.parent.rmdir()  # wheels/<sha256>/ holds just that wheel
                elif path.suffix == ".whl":  # sdist-wheels/: the wheel and the record of its sdist
                    path.unlink(missing_ok=True)
                    path.with_name(path.name + ".sdist.json").unlink(missing_ok=True)
                else:
                    self._discard(path)
                removed += 1
                freed += size
                total -= size
            # Layer records stay when their blob goes (see ``layer_record``); unreadable ones are dropped.
            for record in (self.root / "layers").glob("*.json"):
                if self.layer_record(record.stem) is None:
                    record.unlink(missing_ok=True)
        return removed, freed


_UNIT_DIRS = ("envs", "appwheels", "sdist-wheels")


def _plain_key(key: str) -> str:
    """A key that names one directory entry: never a path of its own (no separator, no ``..``)."""
    if not key or "/" in key or "\0" in key or key in (".", ".."):
        raise ValueError(f"not a cache key: {key!r}")
    return key


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Puts ``path`` on an OSError that has none (``write`` on a full disk), so the user is told where."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def _tree_size(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        with contextlib.suppress(OSError):
            return path.lstat().st_size
        return 0
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _tree_mtime(path: Path) -> float:
    """The newest mtime under ``path``: a directory whose files are still being written is not stale."""
    if not path.is_dir() or path.is_symlink():
        return 0.0
    newest = 0.0
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
    return newest
