"""OCI image layouts on disk: read an image from one (untrusted), write an image into one (shared).

Reading treats the layout as hostile: every digest is parsed before a path is made from it, every file is
opened component by component with ``O_NOFOLLOW`` (a symlink anywhere under the layout is refused, so nothing
outside it is ever read), JSON documents are bounded in size and count and checked against their digests.
Layer blobs are not trusted here: ``open_blob`` hands them to the caller, which hashes them as they enter
its store.

Writing is safe to interrupt and to share: blobs go in under temp names and are renamed; a new layout is made
beside its destination and renamed into place whole; ``index.json`` (the only file that makes a tag visible)
is read, merged and replaced under an exclusive ``flock`` on the layout directory, so concurrent writers never
drop each other's tags and a reader sees the old index or the new one. Blobs are copies (a reflink where the
file system offers one), never links into the cache: a tool that edits a layout's blob in place cannot reach
the cache or another layout. A blob already in the layout is kept only when the caller's ``BlobStamps`` vouch
that it is the copy written earlier and unchanged since; otherwise it is written again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Protocol

import pyimage.atomic as atomic
from pyimage.errors import BuildError, ConfigError
from pyimage.oci.model import (
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MAX_DESCRIPTORS,
    MAX_JSON_BYTES,
    MEDIA_OCI_INDEX,
    Descriptor,
    Image,
    ImageIndex,
    Layer,
    Platform,
    blob_relpath,
    match_platform,
    parse_digest,
    parse_json_object,
)

__all__ = [
    "write_layout",
    "read_layout",
    "open_blob",
    "split_layout_ref",
    "check_output_dir",
    "sweep_stale",
    "BlobStamps",
    "REF_NAME",
    "STALE_AFTER",
]

REF_NAME = "org.opencontainers.image.ref.name"
MAX_INDEX_DEPTH = 4  # an index of indexes of ...: real images nest at most once
STALE_AFTER = 600.0  # seconds: a temp file this old, that no live process holds, is a killed run's leftover
_FICLONE = 0x40049409  # linux/fs.h: share the extents of another file (btrfs, xfs, bcachefs); ext4 says EOPNOTSUPP


class BlobStamps(Protocol):
    """Remembers blobs this program copied into layouts, so an unchanged copy need not be written again."""

    def intact(self, path: Path, digest: str) -> bool: ...
    def placed(self, path: Path, digest: str) -> None: ...


def split_layout_ref(text: str, default_tag: str = "latest") -> tuple[Path, str]:
    """``DIR[:TAG]`` -> (DIR, TAG). A colon followed by a path separator belongs to the path."""
    path, sep, tag = text.rpartition(":")
    if sep and tag and "/" not in tag:
        return Path(path), tag
    return Path(text), default_tag


# -- reading an untrusted layout ---------------------------------------------------------------------------
def _open_inside(root: Path, rel: str, what: str) -> BinaryIO:
    """``root/rel`` opened for reading, refusing a symlink in any component and anything but a regular file."""
    hint = "the layout is damaged or hostile; re-export it with `skopeo copy … oci:DIR`"
    parts = rel.split("/")
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise BuildError(f"{root}: cannot open the layout directory ({exc.strerror})", "check the path in base") from None
    try:
        for part in parts[:-1]:
            try:
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                raise _open_error(root, "/".join(parts[: parts.index(part) + 1]), what, exc, hint) from None
            os.close(fd)
            fd = nfd
        try:
            ffd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError as exc:
            raise _open_error(root, rel, what, exc, hint) from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(ffd).st_mode):
        os.close(ffd)
        raise BuildError(f"{root}: {rel} ({what}) is not a regular file", hint)
    return os.fdopen(ffd, "rb")


def _open_error(root: Path, rel: str, what: str, exc: OSError, hint: str) -> BuildError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR) or (exc.errno == errno.EMLINK):
        return BuildError(f"{root}: {rel} ({what}) is a symlink or not a directory; links in a base layout are refused", hint)
    if exc.errno == errno.ENOENT:
        return BuildError(f"{root}: {what} {rel} is missing", "the layout is incomplete; re-export it")
    return BuildError(f"{root}: cannot read {rel} ({what}): {exc.strerror}", hint)


def open_blob(directory: Path, digest: str) -> BinaryIO:
    """A blob of the layout at ``directory``, opened safely (digest parsed, no symlinks); the caller verifies it."""
    try:
        rel = blob_relpath(digest)
    except ValueError as exc:
        raise BuildError(f"{directory}: {exc}", "the layout is damaged or hostile; re-export it") from None
    return _open_inside(Path(directory), rel, "blob")


def _read_json(directory: Path, rel: str, what: str, digest: str | None = None) -> dict[str, Any]:
    with _open_inside(directory, rel, what) as f:
        data = f.read(MAX_JSON_BYTES + 1)
    if digest is not None:
        import hashlib

        algo, hexpart = parse_digest(digest)
        if hashlib.new(algo, data).hexdigest() != hexpart:
            raise BuildError(f"{directory}: {what} {digest[:19]}… does not match its digest", "the layout is damaged or tampered with; re-export it")
    try:
        return parse_json_object(data, f"{what} {rel}")
    except ValueError as exc:
        raise BuildError(f"{directory}: {exc}", "the layout is damaged; re-export it") from None


def _descriptors(raw: Any, directory: Path, what: str) -> list[Descriptor]:
    if not isinstance(raw, list) or len(raw) > MAX_DESCRIPTORS:
        raise BuildError(f"{directory}: {what} is not a list of at most {MAX_DESCRIPTORS} descriptors", "the layout is damaged; re-export it")
    out = []
    for item in raw:
        try:
            out.append(Descriptor.from_json(item))
        except ValueError as exc:
            raise BuildError(f"{directory}: {what}: {exc}", "the layout is damaged or hostile; re-export it") from None
    return out


def _load(directory: Path, desc: Descriptor, what: str) -> dict[str, Any]:
    if desc.size > MAX_JSON_BYTES:
        raise BuildError(f"{directory}: {what} {desc.digest[:19]}… claims {desc.size} bytes", "the layout is damaged or hostile; re-export it")
    return _read_json(directory, blob_relpath(desc.digest), what, desc.digest)


def _pick(manifests: list[Descriptor], platform: Platform, where: str) -> Descriptor:
    chosen = match_platform(manifests, platform)
    if chosen is None:
        found = ", ".join(str(m.platform) for m in manifests) or "none"
        raise ConfigError(f"{where}: no image for platform {platform} (has: {found})", "choose a base image built for the target platform, or set platform to one it has")
    return chosen


def index_platforms(directory: Path, tag: str | None) -> list[Descriptor]:
    """The platform manifests of the image index ``tag`` names in the layout (empty when it names one image)."""
    directory = Path(directory).resolve()
    index = _read_json(directory, "index.json", "index")
    manifests = _descriptors(index.get("manifests", []), directory, "index.json manifests")
    tagged = [m for m in manifests if tag is None or m.annotations.get(REF_NAME) == tag]
    if len(tagged) != 1 or tagged[0].media_type not in INDEX_MEDIA_TYPES:
        return []
    nested = _load(directory, tagged[0], "index")
    return _descriptors(nested.get("manifests", []), directory, f"index {tagged[0].digest[:19]}…")


def layout_platforms(directory: Path, tag: str | None) -> list[Descriptor]:
    """The manifest descriptors of the image(s) ``tag`` (or the only entry) names in the layout, each with its
    platform: every platform of an image index, or the one image (its platform from the descriptor, else its
    config)."""
    directory = Path(directory).resolve()
    if not (directory / "index.json").is_file():
        raise BuildError(f"{directory} is not an OCI image layout (no index.json)", "give a directory pyimage build wrote with -o oci:DIR")
    nested = index_platforms(directory, tag)
    if nested:
        return [m for m in nested if m.platform is not None and m.platform.os != "unknown"]
    index = _read_json(directory, "index.json", "index")
    manifests = _descriptors(index.get("manifests", []), directory, "index.json manifests")
    tagged = [m for m in manifests if tag is None or m.annotations.get(REF_NAME) == tag]
    if len(tagged) != 1:
        tags = sorted(m.annotations.get(REF_NAME, "?") for m in manifests)
        raise BuildError(f"{directory}: {'no' if not tagged else 'more than one'} image tagged {tag!r} (tags: {', '.join(tags) or 'none'})", f"use oci:{directory}:<tag>")
    desc = tagged[0]
    if desc.media_type not in MANIFEST_MEDIA_TYPES:
        raise BuildError(f"{directory}: {desc.digest[:19]}… is a {desc.media_type}, not an image manifest", "give an image layout")
    if desc.platform is not None:
        return [desc]
    manifest = _load(directory, desc, "manifest")
    config = _load(directory, _descriptors([manifest.get("config")], directory, "manifest config")[0], "config")
    found = Platform(str(config.get("os", "linux")), str(config.get("architecture", "amd64")), str(config.get("variant", "") or ""))
    return [Descriptor(desc.media_type, desc.digest, desc.size, desc.annotations, found)]


def read_layout(directory: Path, tag: str | None, platform: Platform) -> Image:
    """The image tagged ``tag`` (or the only one) in the layout at ``directory``, its layers named ``base``.

    Manifests and the config are verified against their digests; the layers' ``blob`` paths point into the
    layout and must be read through ``open_blob`` and verified by the caller.
    """
    directory = Path(directory).resolve()
    if directory.is_file():  # oci:base.tar: a tar is read with another prefix
        from pyimage.oci.sniff import sniff, use_instead

        raise ConfigError(f"oci:{directory}: a file, not an OCI layout directory", use_instead(sniff(directory), str(directory)))
    if not directory.is_dir():
        raise ConfigError(f"oci:{directory}: no such directory", "name an OCI layout (made by `pyimage build -o oci:DIR` or `skopeo copy … oci:DIR`)")
    if not (directory / "index.json").exists() and not (directory / "index.json").is_symlink():
        raise ConfigError(f"oci:{directory} is not an OCI image layout (no index.json)", "name a directory made by `pyimage build -o oci:DIR` or `skopeo copy … oci:DIR`")
    index = _read_json(directory, "index.json", "index")
    manifests = _descriptors(index.get("manifests", []), directory, "index.json manifests")
    if tag is not None:
        tagged = [m for m in manifests if m.annotations.get(REF_NAME) == tag]
        if not tagged and len(manifests) == 1 and not manifests[0].annotations.get(REF_NAME):
            tagged = manifests
        if not tagged:
            tags = sorted(m.annotations.get(REF_NAME, "?") for m in manifests)
            raise BuildError(f"{directory}: no image tagged {tag!r} (tags: {', '.join(tags) or 'none'})", f"use oci:{directory}:<tag>")
        manifests = tagged
    desc = _pick(manifests, platform, str(directory))
    depth = 0
    while desc.media_type in INDEX_MEDIA_TYPES:
        depth += 1
        if depth > MAX_INDEX_DEPTH:
            raise BuildError(f"{directory}: indexes nested more than {MAX_INDEX_DEPTH} deep", "the layout is damaged or hostile; re-export it")
        nested = _load(directory, desc, "index")
        desc = _pick(_descriptors(nested.get("manifests", []), directory, f"index {desc.digest[:19]}…"), platform, str(directory))
    if desc.media_type not in MANIFEST_MEDIA_TYPES:
        raise BuildError(f"{directory}: {desc.digest[:19]}… is a {desc.media_type}, not an image manifest", "point base at an image layout")
    manifest = _load(directory, desc, "manifest")
    config_desc = _descriptors([manifest.get("config")], directory, "manifest config")[0]
    config = _load(directory, config_desc, "config")
    layer_descs = _descriptors(manifest.get("layers", []), directory, "manifest layers")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layer_descs):
        raise BuildError(
            f"{directory}: the manifest has {len(layer_descs)} layers but the config lists "
            f"{len(diff_ids) if isinstance(diff_ids, list) else 'no'} diff_ids",
            "the layout is damaged; re-export it",
        )
    layers = []
    for d, diff_id in zip(layer_descs, diff_ids):
        try:
            parse_digest(diff_id)
        except ValueError as exc:
            raise BuildError(f"{directory}: config diff_ids: {exc}", "the layout is damaged or hostile; re-export it") from None
        layers.append(Layer("base", d, diff_id, directory / blob_relpath(d.digest), cached=True, history="base"))
    notes = manifest.get("annotations")
    annotations = {str(k): str(v) for k, v in notes.items()} if isinstance(notes, dict) else {}
    return Image(config=config, layers=tuple(layers), annotations=annotations)


# -- writing into a shared layout ----------------------------------------------------------------------------
def check_output_dir(directory: Path) -> bool:
    """True if ``directory`` is an OCI layout to add to, False if it is missing or empty (a new one is made).

    Anything else (a file, a directory of other things, a layout whose ``blobs`` is a symlink) is refused, so an
    output path can never overwrite what is not ours.
    """
    directory = Path(directory)
    if not directory.exists() and not directory.is_symlink():
        return False
    if not directory.is_dir():
        raise BuildError(f"output {directory} exists and is not a directory", "choose another --output path, or delete it")
    try:
        entries = set(os.listdir(directory))
    except OSError as exc:
        raise BuildError(f"output {directory}: cannot read it ({exc.strerror})", "check its permissions, or choose another --output path") from None
    if not entries:
        return False
    if "oci-layout" not in entries:
        raise BuildError(f"output {directory} exists and is not an OCI image layout (no oci-layout file)", "choose another --output path, or delete that directory")
    for rel in ("blobs", "blobs/sha256", "index.json", "oci-layout"):
        if (directory / rel).is_symlink():
            raise BuildError(f"output {directory}: {rel} is a symlink; refusing to write through it", "re-create the layout (delete it and build again)")
    return True


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[int]:
    """An exclusive ``flock`` on a directory (Linux allows it on a read-only descriptor): no lock file is left."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def copy_blob(src: Path, dest: Path) -> None:
    """``src`` copied to ``dest`` (a new file): a reflink where the file system has them, else an in-kernel copy.

    Measured on ext4 here for a 256 MB blob: reflink unsupported, ``copy_file_range`` 0.09 s, a read/write
    copy 0.23 s, hashing it to check an existing copy 0.26 s; a hard link is free but shares the inode.
    """
    with open(src, "rb") as fin, open(dest, "xb") as fout:
        os.fchmod(fout.fileno(), 0o644)
        try:
            fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
            return
        except OSError:
            pass
        left = os.fstat(fin.fileno()).st_size
        try:
            while left > 0:
                n = os.copy_file_range(fin.fileno(), fout.fileno(), left)
                if n == 0:
                    break
                left -= n
            if left == 0:
                return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF):
                raise
        fin.seek(0)
        fout.seek(0)
        fout.truncate()
        shutil.copyfileobj(fin, fout, 1 << 20)


def _place_blob(src: Path, dest: Path, digest: str, stamps: BlobStamps | None) -> None:
    if stamps is not None and stamps.intact(dest, digest):
        return  # our own unchanged copy from an earlier build: no need to write it again
    with atomic.staged(dest) as tmp:
        try:
            copy_blob(src, tmp)
        except OSError as exc:  # a full disk: say where
            exc.filename = exc.filename or str(dest)
            raise
    if stamps is not None:
        stamps.placed(dest, digest)


def _write_bytes(dest: Path, data: bytes, reuse: bool = False) -> None:
    if reuse:  # a small blob (config, manifest) is cheaper to compare than to write again
        with contextlib.suppress(OSError):
            if dest.stat().st_size == len(data) and not dest.is_symlink() and dest.read_bytes() == data:
                return
    atomic.write_bytes(dest, data)


def sweep_stale(directory: Path, prefix: str = ".", older_than: float = STALE_AFTER) -> list[Path]:
    """Removes ``prefix*.tmp`` entries of ``directory`` left by killed runs: older than ``older_than`` seconds and
    not locked by a live writer (``flock`` held while writing). Returns what was removed."""
    removed = []
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if now - st.st_mtime < older_than:
                    continue
                flags = os.O_RDONLY | (os.O_DIRECTORY if entry.is_dir(follow_symlinks=False) else 0) | os.O_NOFOLLOW
                fd = os.open(entry.path, flags)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer holds it
            finally:
                os.close(fd)
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
            removed.append(path)
    return removed


def write_layout(image: Image | ImageIndex, directory: Path, tag: str, stamps: BlobStamps | None = None) -> Descriptor:
    """Adds ``image`` (or an image index of several platforms) to the layout at ``directory`` (created if
    missing) under ``tag``; returns its descriptor.

    An existing entry with the same tag is replaced; other tags stay, also those another writer adds meanwhile.
    """
    directory = Path(directory)
    if not check_output_dir(directory):
        entry = _create_layout(image, directory, tag, stamps)
        if entry is not None:
            return entry
        check_output_dir(directory)  # another writer made it first: add our tag to theirs
    with _flocked(directory):
        sweep_stale(directory)
        for algo_dir in (directory / "blobs").iterdir() if (directory / "blobs").is_dir() else ():
            if algo_dir.is_dir() and not algo_dir.is_symlink():
                sweep_stale(algo_dir)
        return _write_into(image, directory, tag, stamps)


def _create_layout(image: Image | ImageIndex, directory: Path, tag: str, stamps: BlobStamps | None) -> Descriptor | None:
    """Makes the layout beside ``directory`` and renames it into place whole; None if another writer won."""
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"output {directory}: cannot create {directory.parent} ({exc.strerror})", "check the path and its permissions") from None
    sweep_stale(directory.parent, prefix=f".{directory.name}.")
    staging = atomic.beside(directory)
    try:
        staging.mkdir()
        return _create_in(image, directory, tag, stamps, staging)
    except OSError as exc:  # name the output, not the staging path the user never chose
        if exc.filename and str(exc.filename).startswith(str(staging)):
            exc.filename = str(directory)
        raise


def _create_in(image: Image | ImageIndex, directory: Path, tag: str, stamps: BlobStamps | None, staging: Path) -> Descriptor | None:
    try:
        with _flocked(staging):  # held while writing, so a sweep by another run never takes it
            entry = _write_into(image, staging, tag, None)
            try:
                os.rename(staging, directory)  # over an empty directory too
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                return None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if stamps is not None:
        for layer in image.layers:
            stamps.placed(directory / blob_relpath(layer.digest), layer.digest)
    return entry


def _documents(image: Image | ImageIndex) -> list[tuple[str, bytes]]:
    """The JSON blobs an image (config, manifest) or an index (each image's, then the index) is made of."""
    images = image.images if isinstance(image, ImageIndex) else (image,)
    out = [(d.digest, data) for i in images for d, data in ((i.config_descriptor(), i.config_bytes()), (i.manifest_descriptor(), i.manifest_bytes()))]
    if isinstance(image, ImageIndex):
        out.append((image.digest, image.index_bytes()))
    return out


def _write_into(image: Image | ImageIndex, directory: Path, tag: str, stamps: BlobStamps | None) -> Descriptor:
    """Blobs first, then ``index.json`` merged and replaced; the caller holds the layout's lock (or owns it)."""
    for layer in image.layers:
        dest = directory / blob_relpath(layer.digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        _place_blob(layer.blob, dest, layer.digest, stamps)
    (directory / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    for digest, data in _documents(image):
        _write_bytes(directory / blob_relpath(digest), data, reuse=True)
    _write_bytes(directory / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}', reuse=True)

    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": []}
    if (directory / "index.json").exists():
        try:
            index = parse_json_object((directory / "index.json").read_bytes(), "index.json")
        except ValueError as exc:
            raise BuildError(f"output {directory}: {exc}", "delete the output directory and build again") from None
    manifests = index.get("manifests", [])
    if not isinstance(manifests, list):
        raise BuildError(f"output {directory}: index.json manifests is not a list", "delete the output directory and build again")
    kept = [m for m in manifests if not (isinstance(m, dict) and isinstance(m.get("annotations"), dict) and m["annotations"].get(REF_NAME) == tag)]
    desc = image.descriptor() if isinstance(image, ImageIndex) else image.manifest_descriptor(platform=image.platform)
    entry = Descriptor(desc.media_type, desc.digest, desc.size, {REF_NAME: tag}, desc.platform)
    index["manifests"] = kept + [entry.to_json()]
    index.setdefault("schemaVersion", 2)
    index.setdefault("mediaType", MEDIA_OCI_INDEX)
    _write_bytes(directory / "index.json", json.dumps(index, indent=2, sort_keys=True).encode())
    return entry
