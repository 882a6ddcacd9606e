"""``docker save``-style archives: write one that ``docker load``/``podman load`` take, read one as a base.

The archive written is both formats at once, as ``docker save`` writes since Docker 25: ``manifest.json`` and
``repositories`` for loaders of the classic format, ``oci-layout`` and ``index.json`` for OCI readers, with the
blobs under ``blobs/sha256/``. Layers stay compressed (loaders detect the compression). The tar itself is
deterministic and written to a temp file renamed at the end.
"""

from __future__ import annotations

import fcntl
import json
import tarfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import pyimage.atomic as atomic
from pyimage.errors import BuildError
from pyimage.oci.layout import REF_NAME
from pyimage.oci.model import (
    MAX_BLOB_SIZE,
    MAX_DESCRIPTORS,
    MAX_JSON_BYTES,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_LAYER,
    MEDIA_OCI_LAYER_GZIP,
    MEDIA_OCI_LAYER_ZSTD,
    Descriptor,
    Image,
    Layer,
    blob_relpath,
    canonical_json,
    parse_digest,
    parse_json_object,
)

__all__ = ["archive_chunks", "write_docker_archive", "read_docker_archive", "check_output_file", "Store"]

_BLOCK = 512
_CHUNK = 1 << 20
# (stream, size, claimed digest or None, where) -> (digest, path of the kept blob); raises BuildError on a mismatch
Store = Callable[[BinaryIO, int, "str | None", str], "tuple[str, Path]"]


def _header(name: str, size: int, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def check_output_file(path: Path) -> None:
    """Refuses an output path that exists and is not a file holding an image archive, so a typo never
    overwrites a directory, a device or an unrelated file."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_file():
        raise BuildError(f"output {path} exists and is not a regular file", "choose another docker-archive: path, or delete it")
    if path.stat().st_size == 0:
        return  # an empty file made for us (mktemp)
    try:
        with tarfile.open(path) as tar:
            for info in tar:
                if info.name in ("manifest.json", "index.json", "oci-layout", "repositories"):
                    return
    except (OSError, EOFError, tarfile.TarError):
        pass
    raise BuildError(f"output {path} exists and is not an image archive; refusing to overwrite it", "choose another docker-archive: path, or delete that file first")


def _split_tag(tag: str) -> tuple[str, str]:
    repo, _, version = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
    return repo, version


def archive_chunks(image: Image, tag: str, *, omit: frozenset[str] = frozenset()) -> Iterator[bytes]:
    """The archive's bytes, in order: a generator, so an engine can be fed it without a file on disk.

    ``omit`` names layer blobs (by digest) to leave out: a *thin* archive for a Docker Engine that already holds
    those layers (its classic loader opens a layer's file only when the layer chain is missing). A thin archive
    is docker-format only (no ``index.json``), since it is not a complete OCI layout."""
    repo, version = _split_tag(tag)
    config_desc = image.config_descriptor()
    manifest_desc = image.manifest_descriptor(platform=image.platform)

    def blob_name(digest: str) -> str:
        return blob_relpath(digest)

    docker_manifest = [
        {
            "Config": blob_name(config_desc.digest),
            "RepoTags": [f"{repo}:{version}"],
            "Layers": [blob_name(layer.digest) for layer in image.layers],
        }
    ]
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": [
            Descriptor(
                manifest_desc.media_type,
                manifest_desc.digest,
                manifest_desc.size,
                {REF_NAME: version, "io.containerd.image.name": f"{repo}:{version}"},
                manifest_desc.platform,
            ).to_json()
        ],
    }
    small = {
        "manifest.json": canonical_json(docker_manifest),
        "repositories": canonical_json({repo: {version: image.layers[-1].diff_id.partition(":")[2]}} if image.layers else {}),
        blob_name(config_desc.digest): image.config_bytes(),
    }
    if not omit:
        small.update({"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": canonical_json(index), blob_name(manifest_desc.digest): image.manifest_bytes()})
    for d in ("blobs/", "blobs/sha256/"):
        yield _header(d, 0, directory=True)
    written: set[str] = set()
    for name, data in sorted(small.items()):
        yield _header(name, len(data)) + data + b"\0" * (-len(data) % _BLOCK)
        written.add(name)
    for layer in image.layers:
        name = blob_name(layer.digest)
        if name in written or layer.digest in omit:
            continue
        written.add(name)
        yield _header(name, layer.size)
        left = layer.size
        with open(layer.blob, "rb") as f:
            while left and (data := f.read(min(_CHUNK, left))):
                left -= len(data)
                yield data
        if left:
            raise BuildError(f"cached blob {layer.blob} is shorter than its descriptor says", "run `pyimage cache verify`, then build again")
        yield b"\0" * (-layer.size % _BLOCK)
    yield b"\0" * (2 * _BLOCK)  # end of archive


def write_docker_archive(image: Image, path: Path, tag: str) -> None:
    """Writes ``image`` as a loadable archive at ``path``, tagged ``tag`` (``name:tag``); a temp file beside it
    (locked while written, removed on any failure) is renamed over ``path`` at the end."""
    from pyimage.oci.layout import sweep_stale

    path = Path(path)
    check_output_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"output {path}: cannot create {path.parent} ({exc.strerror})", "check the path and its permissions") from None
    sweep_stale(path.parent, prefix=f".{path.name}.")
    try:
        with atomic.staged(path) as tmp, open(tmp, "xb") as out:
            fcntl.flock(out, fcntl.LOCK_EX)  # a sweep by another run leaves a file that is being written alone
            for chunk in archive_chunks(image, tag):
                out.write(chunk)
            out.flush()
    except OSError as exc:  # a full disk under tarfile's writes carries no path: name the output
        exc.filename = exc.filename or str(path)
        raise


def read_docker_archive(path: Path, store: Store) -> Image:
    """The image in a ``docker save`` archive; each layer goes through ``store`` (which hashes and keeps it).

    The archive is untrusted: members are looked up by name inside the tar only (never on disk), must be regular
    files (a symlink or hard-link member is refused), JSON is bounded, and a layer named ``blobs/<alg>/<hex>``
    must hash to that digest. The config's diff_ids are returned as claimed; the caller verifies them.
    """
    path = Path(path)
    hint = "make it with `docker save` or `skopeo copy … docker-archive:FILE`"
    try:
        with tarfile.open(path) as tar:
            try:
                manifest = json.loads(_member(tar, "manifest.json", MAX_JSON_BYTES).read())
                entry = manifest[0]
                config_name, layer_names = entry["Config"], entry.get("Layers", [])
                if not isinstance(config_name, str) or not isinstance(layer_names, list) or not all(isinstance(n, str) for n in layer_names):
                    raise ValueError("Config/Layers have the wrong types")
                if len(layer_names) > MAX_DESCRIPTORS:
                    raise ValueError(f"more than {MAX_DESCRIPTORS} layers")
                config = parse_json_object(_member(tar, config_name, MAX_JSON_BYTES).read(), "config")
            except (KeyError, IndexError, TypeError, ValueError, UnicodeDecodeError) as exc:
                if isinstance(exc, KeyError) and "manifest.json" in str(exc):  # no manifest.json at all: a root filesystem?
                    hint = f"a tar without manifest.json is no `docker save` archive; a root filesystem is read as rootfs:{path}"
                raise BuildError(f"{path}: no usable manifest.json in the archive ({exc})", hint) from None
            rootfs = config.get("rootfs")
            diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
            if not isinstance(diff_ids, list) or len(diff_ids) != len(layer_names):
                raise BuildError(f"{path}: manifest.json names {len(layer_names)} layers but the config lists {len(diff_ids) if isinstance(diff_ids, list) else 'no'} diff_ids", hint)
            layers = []
            for name, diff_id in zip(layer_names, diff_ids):
                try:
                    parse_digest(diff_id)
                    claimed = _claimed_digest(name)
                    src = _member(tar, name, MAX_BLOB_SIZE)
                except (KeyError, ValueError) as exc:
                    raise BuildError(f"{path}: layer {name[:80]!r}: {exc}", hint) from None
                size = tar.getmember(name).size
                digest, blob = store(src, size, claimed, f"{path}: layer {name[:80]}")
                with open(blob, "rb") as f:
                    head = f.read(4)
                media = MEDIA_OCI_LAYER_GZIP if head[:2] == b"\x1f\x8b" else MEDIA_OCI_LAYER
                if head == b"\x28\xb5\x2f\xfd":
                    media = MEDIA_OCI_LAYER_ZSTD
                layers.append(Layer("base", Descriptor(media, digest, size), diff_id, blob, cached=True, history="base"))
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise BuildError(f"{path}: not a readable docker-archive ({exc})", hint) from None
    return Image(config=config, layers=tuple(layers))


def _claimed_digest(name: str) -> str | None:
    """The digest a member name claims (``blobs/sha256/<hex>``, OCI style), or None (``<id>/layer.tar``)."""
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "blobs":
        digest = f"{parts[1]}:{parts[2]}"
        parse_digest(digest)
        return digest
    return None


def _member(tar: tarfile.TarFile, name: str, limit: int) -> BinaryIO:
    """The member called ``name``: a regular file of at most ``limit`` bytes, or KeyError/ValueError."""
    info = tar.getmember(name)
    if not info.isreg():
        raise ValueError(f"{name[:80]!r} is a link or not a regular file; refused")
    if info.size > limit:
        raise ValueError(f"{name[:80]!r} is {info.size} bytes, more than {limit}")
    f = tar.extractfile(info)
    if f is None:
        raise KeyError(name)
    return f  # type: ignore[return-value]
