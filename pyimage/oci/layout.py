"""OCI image layouts on disk: read an image from one, write an image into one.

Writing is safe to interrupt: blobs go in under temp names and are renamed, and ``index.json`` (the only file
that makes a tag visible) is replaced last, so a reader sees the old image or the new one, never half of one.
Blobs are hard-linked from the cache when the layout is on the same filesystem.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from pyimage.errors import BuildError, ConfigError
from pyimage.oci.model import (
    INDEX_MEDIA_TYPES,
    MEDIA_OCI_INDEX,
    Descriptor,
    Image,
    Layer,
    Platform,
)

__all__ = ["write_layout", "read_layout", "split_layout_ref", "REF_NAME"]

REF_NAME = "org.opencontainers.image.ref.name"


def split_layout_ref(text: str, default_tag: str = "latest") -> tuple[Path, str]:
    """``DIR[:TAG]`` -> (DIR, TAG). A colon followed by a path separator belongs to the path."""
    path, sep, tag = text.rpartition(":")
    if sep and tag and "/" not in tag:
        return Path(path), tag
    return Path(text), default_tag


def _place_blob(src: Path, dest: Path) -> None:
    if dest.exists() and dest.stat().st_size == src.stat().st_size:
        return
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _write_bytes(dest: Path, data: bytes) -> None:
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)


def write_layout(image: Image, directory: Path, tag: str) -> Descriptor:
    """Adds ``image`` to the layout at ``directory`` (created if missing) under ``tag``; returns its descriptor.

    An existing entry with the same tag is replaced; other tags stay.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise BuildError(f"output {directory} exists and is not a directory", "choose another --output path")
    if not directory.exists():  # a new layout is made beside its destination and renamed into place whole
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:8]}.tmp")
        staging.mkdir()
        try:
            entry = write_layout(image, staging, tag)
            os.rename(staging, directory)
            return entry
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for layer in image.layers:
        _place_blob(layer.blob, blobs / layer.digest.partition(":")[2])
    config = image.config_bytes()
    _write_bytes(blobs / image.config_descriptor().digest.partition(":")[2], config)
    manifest = image.manifest_bytes()
    _write_bytes(blobs / image.manifest_descriptor().digest.partition(":")[2], manifest)
    _write_bytes(directory / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')

    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": []}
    if (directory / "index.json").exists():
        try:
            index = json.loads((directory / "index.json").read_text())
        except ValueError as exc:
            raise BuildError(f"{directory}/index.json is not valid JSON", "delete the output directory and build again") from exc
    kept = [m for m in index.get("manifests", []) if (m.get("annotations") or {}).get(REF_NAME) != tag]
    desc = image.manifest_descriptor(platform=image.platform)
    entry = Descriptor(desc.media_type, desc.digest, desc.size, {REF_NAME: tag}, desc.platform)
    index["manifests"] = kept + [entry.to_json()]
    index.setdefault("mediaType", MEDIA_OCI_INDEX)
    _write_bytes(directory / "index.json", json.dumps(index, indent=2, sort_keys=True).encode())
    return entry


def _load(directory: Path, desc: dict[str, Any]) -> bytes:
    algo, _, hexdigest = desc["digest"].partition(":")
    path = directory / "blobs" / algo / hexdigest
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise BuildError(f"{directory}: blob {desc['digest']} is missing", "the layout is incomplete; re-export it") from exc


def _pick(manifests: list[dict[str, Any]], platform: Platform, where: str) -> dict[str, Any]:
    def plat(m: dict[str, Any]) -> Platform | None:
        p = m.get("platform")
        return Platform(p.get("os", ""), p.get("architecture", ""), p.get("variant", "")) if p else None

    exact = [m for m in manifests if plat(m) is None or (plat(m).os, plat(m).architecture) == (platform.os, platform.architecture)]  # type: ignore[union-attr]
    if not exact:
        found = ", ".join(str(plat(m)) for m in manifests) or "none"
        raise ConfigError(f"{where}: no image for platform {platform} (has: {found})", "choose a base image built for the target platform, or set platform to one it has")
    return exact[0]


def read_layout(directory: Path, tag: str | None, platform: Platform) -> Image:
    """The image tagged ``tag`` (or the only one) in the layout at ``directory``, its layers named ``base``."""
    directory = Path(directory)
    try:
        index = json.loads((directory / "index.json").read_text())
    except (OSError, ValueError) as exc:
        raise BuildError(f"{directory} is not an OCI image layout (no readable index.json)", "point base at a directory made by `skopeo copy … oci:DIR`") from exc
    manifests = index.get("manifests", [])
    if tag is not None:
        tagged = [m for m in manifests if (m.get("annotations") or {}).get(REF_NAME) == tag]
        if not tagged and len(manifests) == 1 and not (manifests[0].get("annotations") or {}).get(REF_NAME):
            tagged = manifests
        if not tagged:
            tags = sorted((m.get("annotations") or {}).get(REF_NAME, "?") for m in manifests)
            raise BuildError(f"{directory}: no image tagged {tag!r} (tags: {', '.join(tags) or 'none'})", f"use oci:{directory}:<tag>")
        manifests = tagged
    desc = _pick(manifests, platform, str(directory))
    while desc["mediaType"] in INDEX_MEDIA_TYPES:
        desc = _pick(json.loads(_load(directory, desc))["manifests"], platform, str(directory))
    manifest = json.loads(_load(directory, desc))
    config = json.loads(_load(directory, manifest["config"]))
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    layers = []
    for i, ld in enumerate(manifest.get("layers", [])):
        d = Descriptor.from_json(ld)
        algo, _, hexdigest = d.digest.partition(":")
        layers.append(Layer("base", d, diff_ids[i], directory / "blobs" / algo / hexdigest, cached=True, history="base"))
    return Image(config=config, layers=tuple(layers))
