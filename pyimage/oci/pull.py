"""Pull a base image for one platform into a content-addressed blob directory.

The result is data the build appends to (``mutate.Append`` style): the pinned manifest digest, the config, and
the base layers as ``Layer`` values whose blobs are on disk, verified. Blobs already there (right size and sha256)
are not fetched again.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from pyimage.errors import RegistryError
from pyimage.oci.model import INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, Descriptor, Layer, Platform, match_platform
from pyimage.oci.reference import Reference
from pyimage.oci.registry import ClientFactory, RegistryClient, check_digest, default_client_factory

__all__ = ["PulledImage", "pull_image", "select_platform", "blob_path", "PULL_JOBS"]

PULL_JOBS = 3  # parallel blob downloads; a few streams saturate most links, more only add contention

# Variants a platform has when its index entry names none (containerd's normalisation).


@dataclass(frozen=True)
class PulledImage:
    """A single-platform image as pulled: ``digest`` pins the platform's manifest (``index_digest`` the index)."""

    reference: Reference
    digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    layers: tuple[Layer, ...]
    media_type: str = ""
    index_digest: str | None = None

    @property
    def pinned(self) -> Reference:
        """The reference with the manifest digest: pulling it again gives exactly these bytes."""
        return Reference(self.reference.registry, self.reference.repository, self.reference.tag, self.digest)


def blob_path(blobs_dir: Path, digest: str) -> Path:
    """Where a blob lives in a content-addressed directory (OCI layout's ``blobs/<alg>/<hex>``)."""
    algo, hexpart = check_digest(digest).split(":", 1)
    return Path(blobs_dir) / algo / hexpart


def pull_image(
    ref: Reference,
    platform: Platform,
    blobs_dir: Path,
    *,
    client_factory: ClientFactory = default_client_factory,
    jobs: int = PULL_JOBS,
    progress: Callable[[str, str, int], None] | None = None,
    is_valid: Callable[[Path, Descriptor], bool] | None = None,
    skip: Callable[[Descriptor], bool] | None = None,
    any_platform: bool = False,
) -> PulledImage:
    """Resolve ``ref`` (a tag, a digest, an index) to ``platform``'s image and make its blobs present in ``blobs_dir``.

    ``progress(digest, status, size)`` reports each blob as ``cached`` or ``downloaded``. ``is_valid(path, desc)``
    decides whether a blob already on disk can be reused (default: size and sha256 match); a content store
    that tracks what it verified passes its own cheaper check. A layer blob that is not on disk and for which
    ``skip(desc)`` is true is not downloaded (its path is still returned): a push-only build whose targets hold it.
    ``any_platform``: a single image is taken whatever its platform (``platform`` still picks from an index).
    """
    shown = str(ref)
    with client_factory(ref.registry) as client:
        data, media_type, digest = client.get_manifest(ref.repository, ref.reference)
        index_digest = None
        if media_type in INDEX_MEDIA_TYPES:
            index_digest = digest
            chosen = select_platform(_json(data, f"index {shown}"), platform, shown)
            data, media_type, digest = client.get_manifest(ref.repository, chosen.digest)
        if media_type not in MANIFEST_MEDIA_TYPES:
            raise RegistryError(
                f"{shown} is a {media_type or 'manifest of unknown type'}, not an image manifest",
                "use an image reference (OCI or Docker schema 2)",
            )
        manifest = _json(data, f"manifest {shown}")
        try:
            config_desc = Descriptor.from_json(manifest["config"])
            layer_descs = [Descriptor.from_json(d) for d in manifest.get("layers") or []]
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"manifest {shown} is malformed ({exc})", "the image is corrupt") from None

        config_file = _ensure_blob(client, ref.repository, config_desc, blobs_dir, progress, is_valid or _is_valid)
        config = _json(config_file.read_bytes(), f"config of {shown}")
        if not any_platform or index_digest is not None:
            _check_platform(config, platform, shown)
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(layer_descs):
            raise RegistryError(
                f"{shown} has {len(layer_descs)} layers but its config lists {len(diff_ids)} diff_ids",
                "the image is corrupt; use another tag",
            )
        unique = list({d.digest: d for d in layer_descs}.values())  # images may repeat a layer (empty tars)
        workers = max(1, min(jobs, len(unique)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pyimage-pull") as pool:
            fetched = dict(
                zip(
                    (d.digest for d in unique),
                    pool.map(lambda d: _ensure_blob(client, ref.repository, d, blobs_dir, progress, is_valid or _is_valid, skip), unique),
                    strict=True,
                )
            )
        paths = [fetched[d.digest] for d in layer_descs]
    history = [h.get("created_by", "") for h in config.get("history") or [] if not h.get("empty_layer")]
    if len(history) != len(layer_descs):
        history = [""] * len(layer_descs)
    layers = tuple(
        Layer(name="base", descriptor=desc, diff_id=diff_id, blob=path, history=created_by)
        for desc, diff_id, path, created_by in zip(layer_descs, diff_ids, paths, history, strict=True)
    )
    return PulledImage(ref, digest, manifest, config, layers, media_type, index_digest)


def select_platform(index: Mapping[str, Any], platform: Platform, shown: str = "the index") -> Descriptor:
    """The index entry for ``platform``; an unset variant prefers the default one (arm64 → v8).

    Raises ``RegistryError`` listing the platforms the index does have.
    """
    entries = []
    for raw in index.get("manifests") or []:
        try:
            desc = Descriptor.from_json(raw)
        except (KeyError, TypeError, ValueError):
            continue
        if desc.platform is None or desc.media_type not in MANIFEST_MEDIA_TYPES or desc.platform.os == "unknown":
            continue  # attestation manifests (unknown/unknown) and nested indexes are not images to run
        entries.append(desc)
    chosen = match_platform(entries, platform)
    if chosen is not None:
        return chosen
    available = ", ".join(sorted({str(d.platform) for d in entries})) or "none"
    raise RegistryError(
        f"{shown} has no image for {platform}; it has: {available}",
        f"pick one of those with --platform, or use a base image built for {platform}",
    )


def _check_platform(config: Mapping[str, Any], platform: Platform, shown: str) -> None:
    os_, arch = config.get("os"), config.get("architecture")
    if os_ and arch and (os_ != platform.os or arch != platform.architecture):
        raise RegistryError(
            f"{shown} is a {os_}/{arch} image, not {platform.os}/{platform.architecture}",
            f"use a multi-platform base image, or build for --platform {os_}/{arch}",
        )


def _ensure_blob(
    client: RegistryClient,
    repository: str,
    desc: Descriptor,
    blobs_dir: Path,
    progress: Callable[[str, str, int], None] | None,
    is_valid: Callable[[Path, Descriptor], bool],
    skip: Callable[[Descriptor], bool] | None = None,
) -> Path:
    path = blob_path(blobs_dir, desc.digest)
    if is_valid(path, desc):
        if progress is not None:
            progress(desc.digest, "cached", desc.size)
        return path
    if skip is not None and skip(desc):
        if progress is not None:
            progress(desc.digest, "skipped", desc.size)
        return path
    client.fetch_blob(repository, desc.digest, path, size=desc.size)
    if progress is not None:
        progress(desc.digest, "downloaded", desc.size)
    return path


def _is_valid(path: Path, desc: Descriptor) -> bool:
    """A blob already on disk is reused only if its size and sha256 match; hashing costs ~0.1 s per 50 MB and
    catches what a (size, mtime) check cannot: a same-size rewrite within the clock tick of the last check."""
    try:
        if path.stat().st_size != desc.size:
            return False
    except FileNotFoundError:
        return False
    algo, expected = desc.digest.split(":", 1)
    hasher = hashlib.new(algo)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            hasher.update(chunk)
    return hasher.hexdigest() == expected  # if not, fetch_blob replaces it atomically


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        value = None
    if not isinstance(value, dict):
        raise RegistryError(f"the {what} is not a JSON object", "the image is corrupt; use another tag or digest")
    return value
