"""``docker save``-style archives: write one that ``docker load``/``podman load`` take, read one as a base.

The archive written is both formats at once, as ``docker save`` writes since Docker 25: ``manifest.json`` and
``repositories`` for loaders of the classic format, ``oci-layout`` and ``index.json`` for OCI readers, with the
blobs under ``blobs/sha256/``. Layers stay compressed (loaders detect the compression). The tar itself is
deterministic and written to a temp file renamed at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator

from pyimage.errors import BuildError
from pyimage.oci.layout import REF_NAME
from pyimage.oci.model import (
    MEDIA_OCI_INDEX,
    MEDIA_OCI_LAYER,
    MEDIA_OCI_LAYER_GZIP,
    Descriptor,
    Image,
    Layer,
    canonical_json,
)

__all__ = ["archive_chunks", "write_docker_archive", "read_docker_archive"]

_BLOCK = 512
_CHUNK = 1 << 20


def _header(name: str, size: int, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


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
        return "blobs/sha256/" + digest.partition(":")[2]

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
    """Writes ``image`` as a loadable archive at ``path``, tagged ``tag`` (``name:tag``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as out:
            for chunk in archive_chunks(image, tag):
                out.write(chunk)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_docker_archive(path: Path, blobs_dir: Path) -> Image:
    """The image in a ``docker save`` archive, its layer blobs extracted into ``blobs_dir`` by digest."""
    path = Path(path)
    try:
        tar = tarfile.open(path)
    except (OSError, tarfile.TarError) as exc:
        raise BuildError(f"{path}: not a readable docker-archive ({exc})", "make one with `docker save` or `skopeo copy … docker-archive:FILE`") from exc
    with tar:
        try:
            manifest = json.loads(_member(tar, "manifest.json").read())
            entry = manifest[0]
            config = json.loads(_member(tar, entry["Config"]).read())
        except (KeyError, IndexError, ValueError) as exc:
            raise BuildError(f"{path}: no usable manifest.json in the archive", "make it with `docker save` or skopeo") from exc
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        layers = []
        blobs_dir.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(entry.get("Layers", [])):
            tmp = blobs_dir / f".{uuid.uuid4().hex}.tmp"
            src = _member(tar, name)
            h = hashlib.sha256()
            with open(tmp, "wb") as out:
                head = src.read(2)
                h.update(head)
                out.write(head)
                while data := src.read(1 << 20):
                    h.update(data)
                    out.write(data)
            digest = "sha256:" + h.hexdigest()  # hashed on the way: the extracted blob is not read again
            dest = blobs_dir / digest.partition(":")[2]
            os.replace(tmp, dest)
            media = MEDIA_OCI_LAYER_GZIP if head == b"\x1f\x8b" else MEDIA_OCI_LAYER
            if head == b"\x28\xb5":
                media = "application/vnd.oci.image.layer.v1.tar+zstd"
            layers.append(Layer("base", Descriptor(media, digest, dest.stat().st_size), diff_ids[i], dest, cached=True, history="base"))
    return Image(config=config, layers=tuple(layers))


def _member(tar: tarfile.TarFile, name: str) -> BinaryIO:
    f = tar.extractfile(name)
    if f is None:
        raise KeyError(name)
    return f  # type: ignore[return-value]
