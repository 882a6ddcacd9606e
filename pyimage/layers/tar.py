"""Deterministic tar streams: the same entries always give the same bytes.

Every header has the same mtime, a numeric owner set at write time (no ``chown`` layer later), empty user and
group names, normalized modes, and every parent directory is written before its children. A stream can be
left open (no end-of-archive blocks) so that fragments concatenate into one archive; such a fragment is written
without directory entries (``emit_dirs=False``) and reports the directories it needs (``dirs``), so the layer it
joins can hold each directory exactly once. No stream ever writes a path twice: Docker, podman, buildah and CRI-O
refuse a layer that does.
"""

from __future__ import annotations

import hashlib
import posixpath
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Callable, Protocol

from pyimage.errors import BuildError

__all__ = ["Sink", "Owner", "TarWriter", "safe_member_path", "END_OF_ARCHIVE", "COPY_CHUNK"]

END_OF_ARCHIVE = b"\0" * 1024  # two zero blocks; GNU tar's 10 KiB record padding is optional and omitted
COPY_CHUNK = 1 << 20  # 1 MiB reads: big enough that per-call overhead vanishes, small enough to pipeline
_BLOCK = 512


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True)
class Owner:
    uid: int = 0
    gid: int = 0

    @classmethod
    def parse(cls, text: str) -> "Owner":
        uid, _, gid = str(text).partition(":")
        return cls(int(uid), int(gid or uid))

    def __str__(self) -> str:
        return f"{self.uid}:{self.gid}"


def safe_member_path(path: str, *, where: str) -> str:
    """``path`` normalized and relative, or a BuildError if it is absolute or climbs out of its root."""
    if not path or "\0" in path:
        raise BuildError(f"{where}: empty or NUL-containing path {path!r}", "the wheel is malformed; rebuild it")
    if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        raise BuildError(
            f"{where}: absolute path {path!r} would be written outside the image's install root",
            "the wheel is malformed or malicious; rebuild it or remove it from the dependencies",
        )
    norm = posixpath.normpath(path.replace("\\", "/"))
    if posixpath.basename(norm).startswith(".wh."):  # an overlay whiteout: would delete files of lower layers
        raise BuildError(
            f"{where}: {path!r} is named like an image whiteout (.wh.*) and would delete files in lower layers",
            "the wheel is malformed or malicious; remove it from the dependencies",
        )
    if norm in (".", "..") or norm.startswith("../") or "/../" in f"/{norm}/":
        raise BuildError(
            f"{where}: path {path!r} escapes its install root",
            "the wheel is malformed or malicious; rebuild it or remove it from the dependencies",
        )
    return norm


class TarWriter:
    """Writes tar entries to ``sink`` in the order they are added, parents first.

    ``owner`` owns everything under ``owned_root``; directories above it (``opt/``, ``opt/venv`` when the root
    is deeper) stay ``0:0`` so a non-root owner never takes over a system directory. Paths are relative,
    without a leading slash.

    ``emit_dirs=False`` tracks directories without writing them (a fragment; see the module docstring).
    ``skip`` names files whose bytes are read and hashed but not written: a copy another fragment of the same
    layer already holds.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        mtime: int = 0,
        owner: Owner = Owner(),
        owned_root: str = "",
        capture_sources: bool = False,
        emit_dirs: bool = True,
        skip: frozenset[str] = frozenset(),
    ) -> None:
        self._sink = sink
        self._mtime = mtime
        self._owner = owner
        self._owned_root = owned_root.strip("/")
        self._emit_dirs = emit_dirs
        self._skip = skip
        self._dirs: set[str] = set()
        self.files: dict[str, str] = {}  # path -> sha256 hex ("" when not hashed): what this stream wrote
        self.capture_sources = capture_sources
        self.sources: list[tuple[str, bytes]] = []  # (path, bytes) of .py files written, for bytecode

    @property
    def dirs(self) -> list[str]:
        """Every directory this stream wrote or, with ``emit_dirs=False``, needs; sorted, so parents come first."""
        return sorted(self._dirs)

    # -- entries -----------------------------------------------------------------------------------------
    def add_dir(self, path: str, mode: int = 0o755, *, owner: Owner | None = None) -> None:
        """A directory (and its missing parents, root-owned); ``owner`` overrides the writer's rule for it."""
        path = path.strip("/")
        if not path or path in self._dirs:
            return
        if path in self.files:
            raise BuildError(f"/{path} is written both as a file and as a directory", _TWICE_HINT)
        self._ensure_parents(path)
        self._dirs.add(path)
        if self._emit_dirs:
            self._header(path + "/", tarfile.DIRTYPE, 0, mode, owner=owner)

    def add_file(
        self,
        path: str,
        stream: BinaryIO,
        size: int,
        *,
        executable: bool = False,
        mode: int | None = None,
        hash_into: Callable[[bytes], object] | None = None,
    ) -> str:
        """Copies exactly ``size`` bytes from ``stream``; returns their sha256 hex digest. ``mode`` overrides the
        0644 (0755 when ``executable``) a wheel's files get. ``hash_into`` takes every chunk instead (a hash
        the caller runs elsewhere, off this thread); the return is then ``""``."""
        path = path.strip("/")
        if path in self._skip:
            return _drain(stream, size, path, hash_into)
        self._ensure_parents(path)
        self._header(path, tarfile.REGTYPE, size, mode if mode is not None else 0o755 if executable else 0o644)
        digest = hashlib.sha256() if hash_into is None else None
        update = digest.update if digest is not None else hash_into
        remaining = size
        write = self._sink.write
        keep: list[bytes] | None = [] if self.capture_sources and path.endswith(".py") else None
        while remaining:
            chunk = stream.read(min(COPY_CHUNK, remaining))
            if not chunk:
                raise BuildError(f"{path}: stream ended {remaining} bytes early", "the wheel is truncated; re-download it")
            update(chunk)  # type: ignore[misc]
            write(chunk)
            if keep is not None:
                keep.append(chunk)
            remaining -= len(chunk)
        if stream.read(1):
            raise BuildError(f"{path}: more data than its recorded size {size}", "the wheel is corrupt; re-download it")
        pad = -size % _BLOCK
        if pad:
            write(b"\0" * pad)
        if keep is not None:
            self.sources.append((path, b"".join(keep)))
        return digest.hexdigest() if digest is not None else ""

    def add_bytes(self, path: str, data: bytes, *, executable: bool = False, mode: int | None = None) -> str:
        import io

        return self.add_file(path, io.BytesIO(data), len(data), executable=executable, mode=mode)

    def add_symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        if path in self._skip:
            return
        self._ensure_parents(path)
        self._header(path, tarfile.SYMTYPE, 0, 0o777, linkname=target)

    def finish(self) -> None:
        self._sink.write(END_OF_ARCHIVE)

    # -- internals ---------------------------------------------------------------------------------------
    def _ensure_parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if parent and parent not in self._dirs:
            self.add_dir(parent)

    def _owned(self, path: str) -> bool:
        root = self._owned_root
        return not root or path == root or path.startswith(root + "/")

    def _header(self, name: str, kind: bytes, size: int, mode: int, linkname: str = "", owner: Owner | None = None) -> None:
        if kind != tarfile.DIRTYPE and (name in self.files or name in self._dirs):
            raise BuildError(f"/{name} is written twice in one layer", _TWICE_HINT)
        if owner is None:
            owner = self._owner if self._owned(name.rstrip("/")) else Owner()
        header = _ustar_header(name, kind, size, mode, self._mtime, owner.uid, owner.gid, linkname)
        if header is None:  # long or non-ASCII names, huge sizes: tarfile writes the PAX extension header
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = size
            info.mode = mode
            info.mtime = self._mtime
            info.uid, info.gid = owner.uid, owner.gid
            info.uname = info.gname = ""
            info.linkname = linkname
            header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        self._sink.write(header)
        if kind != tarfile.DIRTYPE:
            self.files[name] = ""


_MAX_OCTAL_11 = 8**11
_TWICE_HINT = "the wheel is malformed (two members install to the same path); rebuild it or remove it"


def _drain(stream: BinaryIO, size: int, path: str, hash_into: Callable[[bytes], object] | None = None) -> str:
    """Reads and hashes exactly ``size`` bytes of a skipped file, so its RECORD hash is still checked."""
    digest = hashlib.sha256() if hash_into is None else None
    update = digest.update if digest is not None else hash_into
    remaining = size
    while remaining:
        chunk = stream.read(min(COPY_CHUNK, remaining))
        if not chunk:
            raise BuildError(f"{path}: stream ended {remaining} bytes early", "the wheel is truncated; re-download it")
        update(chunk)  # type: ignore[misc]
        remaining -= len(chunk)
    return digest.hexdigest() if digest is not None else ""


def _ustar_header(name: str, kind: bytes, size: int, mode: int, mtime: int, uid: int, gid: int, linkname: str) -> bytes | None:
    """The 512-byte header tarfile's PAX_FORMAT writes for an entry that needs no extension header, built in
    one step (tarfile spends ~50 us per entry; torch has 12,000). None when the entry needs the slow path.
    The bytes are identical to tarfile's, which tests/layers/test_tar.py checks."""
    if len(name) > 100 or len(linkname) > 100 or not name.isascii() or not linkname.isascii():
        return None
    if size >= _MAX_OCTAL_11 or mtime >= _MAX_OCTAL_11 or uid >= 8**7 or gid >= 8**7:
        return None
    head = b"".join(
        (
            name.encode("ascii").ljust(100, b"\0"),
            b"%07o\0" % mode,
            b"%07o\0" % uid,
            b"%07o\0" % gid,
            b"%011o\0" % size,
            b"%011o\0" % mtime,
            b"        ",  # checksum, counted as spaces
            kind,
            linkname.encode("ascii").ljust(100, b"\0"),
            b"ustar\x0000",
            b"\0" * 64,  # uname, gname
            b"\0" * 16,  # devmajor, devminor: empty for anything but device nodes, as tarfile writes them
            b"\0" * 155,
        )
    ).ljust(512, b"\0")
    checksum = sum(head)
    return head[:148] + b"%06o\0" % checksum + head[155:]
