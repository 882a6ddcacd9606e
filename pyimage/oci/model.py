"""The image as data: descriptors, layers, config and manifest, serialized canonically.

Writers (OCI layout, docker-archive, registry) only serialize an ``Image``; nothing here does I/O
beyond reading a blob file that a ``Layer`` points at.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = [
    "HISTORY_PREFIX",
    "layer_names",
    "MEDIA_OCI_INDEX",
    "MEDIA_OCI_MANIFEST",
    "MEDIA_OCI_CONFIG",
    "MEDIA_OCI_LAYER",
    "MEDIA_OCI_LAYER_GZIP",
    "MEDIA_OCI_LAYER_ZSTD",
    "MEDIA_DOCKER_MANIFEST",
    "MEDIA_DOCKER_LIST",
    "MEDIA_DOCKER_CONFIG",
    "MEDIA_DOCKER_LAYER_GZIP",
    "MANIFEST_MEDIA_TYPES",
    "INDEX_MEDIA_TYPES",
    "Platform",
    "Descriptor",
    "Layer",
    "Image",
    "ImageIndex",
    "canonical_json",
    "sha256_digest",
    "oci_layer_media_type",
    "DIGEST_ALGORITHMS",
    "MAX_JSON_BYTES",
    "MAX_DESCRIPTORS",
    "MAX_BLOB_SIZE",
    "DEFAULT_VARIANT",
    "match_platform",
    "parse_digest",
    "blob_relpath",
    "parse_json_object",
]

# Bounds on what an untrusted manifest, index or config may make us read or hold: far above any real image
# (the largest configs seen are ~100 KB of history; runtimes refuse more than ~127 layers).
MAX_JSON_BYTES = 8 << 20
MAX_DESCRIPTORS = 1024  # entries of an index, layers of a manifest, annotations of a descriptor
MAX_BLOB_SIZE = 1 << 40  # 1 TiB: a descriptor claiming more is a lie or an attack

# The digest algorithms the OCI image spec registers, with their hex length. A digest becomes a file name
# (``blobs/<alg>/<hex>``) and a URL path, so it is parsed here, strictly, before either is made.
DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")


def parse_digest(value: object) -> tuple[str, str]:
    """``(algorithm, hex)`` of a well-formed digest (``sha256:`` + 64 lowercase hex, or ``sha512:`` + 128).

    Anything else (another algorithm, upper case, a ``/`` or ``..``, a non-string) raises ValueError. This is
    the one place a digest is checked; every path and URL built from a digest goes through it.
    """
    if isinstance(value, str):
        algo, sep, hexpart = value.partition(":")
        if sep and DIGEST_ALGORITHMS.get(algo) == len(hexpart) and _HEX.fullmatch(hexpart):
            return algo, hexpart
    shown = value[:80] if isinstance(value, str) else type(value).__name__
    raise ValueError(f"not a valid digest: {shown!r} (expected sha256:<64 lowercase hex digits>)")


def blob_relpath(digest: str) -> str:
    """``blobs/<alg>/<hex>``: where a blob lives in an OCI layout or a content store (the digest is checked)."""
    algo, hexpart = parse_digest(digest)
    return f"blobs/{algo}/{hexpart}"


def parse_json_object(data: bytes, what: str, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """An untrusted JSON document that must be an object of at most ``limit`` bytes; ValueError naming ``what``."""
    if len(data) > limit:
        raise ValueError(f"{what} is {len(data)} bytes, more than the {limit} a manifest, index or config may have")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValueError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_MEDIA_TYPES = (MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)
INDEX_MEDIA_TYPES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST)

# Docker schema 2 layer types carry the same bytes as their OCI counterparts.
_TO_OCI_LAYER = {
    MEDIA_DOCKER_LAYER_GZIP: MEDIA_OCI_LAYER_GZIP,
    MEDIA_DOCKER_LAYER_FOREIGN: MEDIA_OCI_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar": MEDIA_OCI_LAYER,
}


def oci_layer_media_type(media_type: str) -> str:
    """The OCI media type for a layer of ``media_type`` (Docker schema 2 types map 1:1)."""
    return _TO_OCI_LAYER.get(media_type, media_type)


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys and no spaces: the same value always gives the same bytes (and digest)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Platform:
    """An OCI platform; ``parse("linux/amd64")`` and ``str()`` round-trip."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> "Platform":
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"not a platform: {text!r} (expected os/arch[/variant], e.g. linux/amd64)")
        return cls(*parts)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out

    @classmethod
    def from_json(cls, data: Any) -> "Descriptor":
        """A descriptor from untrusted JSON: every field checked (types, digest form, size range); ValueError names
        the field that is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError("a descriptor is not a JSON object")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        if not isinstance(media_type, str) or not media_type or len(media_type) > 255:
            raise ValueError("a descriptor has no valid mediaType")
        parse_digest(digest)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_BLOB_SIZE:
            raise ValueError(f"descriptor {digest}: size {size!r} is not a byte count")
        annotations = data.get("annotations") or {}
        if not isinstance(annotations, Mapping) or len(annotations) > MAX_DESCRIPTORS or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise ValueError(f"descriptor {digest}: annotations are not a table of strings")
        plat = data.get("platform")
        if plat is not None and not (isinstance(plat, Mapping) and all(isinstance(plat.get(k, ""), str) for k in ("os", "architecture", "variant"))):
            raise ValueError(f"descriptor {digest}: platform is not an object of strings")
        return cls(
            media_type=media_type,
            digest=digest,  # type: ignore[arg-type]
            size=size,
            annotations=dict(annotations),
            platform=Platform(plat.get("os", ""), plat.get("architecture", ""), plat.get("variant", "")) if plat else None,
        )


@dataclass(frozen=True)
class Layer:
    """A built (or pulled) layer: its compressed blob on disk and the identity of its content.

    ``name`` is what reports call it (``base``, ``interpreter``, ``heavy:torch``, ``site-packages``, ``app``);
    ``diff_id`` is the sha256 of the uncompressed tar, as the image config's ``rootfs.diff_ids`` needs.
    """

    name: str
    descriptor: Descriptor
    diff_id: str
    blob: Path
    packages: tuple[str, ...] = ()
    cached: bool = False
    history: str = ""
    uncompressed_size: int | None = None  # the tar's size, when pyimage built (or ingested) the layer
    # Not on this machine: a push-only build found it in every push target (``blob`` does not exist).
    remote: bool = False

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    @property
    def size(self) -> int:
        return self.descriptor.size


@dataclass(frozen=True)
class Image:
    """A single-platform image: an ordered layer list and the config that describes it.

    ``config`` is the OCI image config as a JSON-able dict whose ``rootfs.diff_ids`` and ``history``
    already match ``layers``; ``annotations`` go on the manifest.
    """

    config: Mapping[str, Any]
    layers: tuple[Layer, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)

    def config_bytes(self) -> bytes:
        return canonical_json(self.config)

    def config_descriptor(self) -> Descriptor:
        data = self.config_bytes()
        return Descriptor(MEDIA_OCI_CONFIG, sha256_digest(data), len(data))

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": self.config_descriptor().to_json(),
            "layers": [
                replace(layer.descriptor, media_type=oci_layer_media_type(layer.descriptor.media_type)).to_json()
                for layer in self.layers
            ],
        }
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    def manifest_bytes(self) -> bytes:
        return canonical_json(self.manifest())

    def manifest_descriptor(self, platform: Platform | None = None) -> Descriptor:
        data = self.manifest_bytes()
        return Descriptor(MEDIA_OCI_MANIFEST, sha256_digest(data), len(data), platform=platform)

    @property
    def digest(self) -> str:
        return self.manifest_descriptor().digest

    @property
    def platform(self) -> Platform:
        return Platform(
            self.config.get("os", "linux"), self.config.get("architecture", "amd64"), self.config.get("variant", "")
        )

    @property
    def size(self) -> int:
        """Bytes a registry stores for this image: manifest + config + layer blobs."""
        return len(self.manifest_bytes()) + len(self.config_bytes()) + sum(layer.size for layer in self.layers)


@dataclass(frozen=True)
class ImageIndex:
    """Several single-platform images under one tag: an OCI image index listing each manifest by platform.

    Writers place every image's blobs, configs and manifests, then the index; layers the images share (a
    pure-Python ``site-packages``) are one blob.
    """

    images: tuple[Image, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)

    def index(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_INDEX,
            "manifests": [image.manifest_descriptor(platform=image.platform).to_json() for image in self.images],
        }
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    def index_bytes(self) -> bytes:
        return canonical_json(self.index())

    def descriptor(self) -> Descriptor:
        data = self.index_bytes()
        return Descriptor(MEDIA_OCI_INDEX, sha256_digest(data), len(data))

    @property
    def digest(self) -> str:
        return self.descriptor().digest

    @property
    def layers(self) -> tuple[Layer, ...]:
        """Every layer of every image, each blob once."""
        seen: dict[str, Layer] = {}
        for image in self.images:
            for layer in image.layers:
                seen.setdefault(layer.digest, layer)
        return tuple(seen.values())

    @property
    def size(self) -> int:
        return len(self.index_bytes()) + sum(len(i.manifest_bytes()) + len(i.config_bytes()) for i in self.images) + sum(l.size for l in self.layers)


DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}  # what an index entry without a variant means for these


def match_platform(manifests: Sequence[Descriptor], platform: Platform) -> Descriptor | None:
    """The one rule, for registries and layouts alike, of which index entry serves ``platform``: same os and
    architecture, the variant equal once defaults are applied (arm64 means v8); with no variant asked for, the
    first of that os/architecture; entries of os ``unknown`` (attestations) never. An index whose entries carry no
    platform at all (a one-image layout) serves any. None when nothing fits."""
    with_platform = [d for d in manifests if d.platform is not None and d.platform.os != "unknown"]
    want = platform.variant or DEFAULT_VARIANT.get(platform.architecture, "")
    same = [d for d in with_platform if d.platform is not None and (d.platform.os, d.platform.architecture) == (platform.os, platform.architecture)]
    for desc in same:
        assert desc.platform is not None
        if (desc.platform.variant or DEFAULT_VARIANT.get(desc.platform.architecture, "")) == want:
            return desc
    if same and not platform.variant:
        return same[0]
    bare = [d for d in manifests if d.platform is None]
    return bare[0] if bare else None


HISTORY_PREFIX = "pyimage: "  # the history line of each layer pyimage writes: "pyimage: site-packages"


def layer_names(config: Mapping[str, Any], count: int) -> list[tuple[str, str]]:
    """(name, source) of each of an image's ``count`` layers, read from its config's history: pyimage's layers by
    the names it gave them ("pyimage: app" -> "app"), every layer below the first of them "base" with its own
    history line as the source (build's names; a pyimage-built base's layers too); an image pyimage did not build
    keeps its history lines as names. ("", "") for each when the history does not line up with the layers."""
    history = config.get("history") or []
    created = [str(h.get("created_by", "")) for h in history if isinstance(h, dict) and not h.get("empty_layer")]
    if len(created) != count:
        return [("", "")] * count
    # This build's layers are the run of pyimage lines at the top; a base that pyimage built carries such lines too
    # (its own app, site-packages...). One build never names two layers alike, so the run ends below the first
    # name seen twice walking down: that layer, and all below it, are the base's.
    first, seen = None, set()
    for i in range(len(created) - 1, -1, -1):
        if not created[i].startswith(HISTORY_PREFIX) or created[i] in seen:
            break
        seen.add(created[i])
        first = i
    if first is None:  # another tool's layers on top (a Dockerfile FROM a pyimage image): below pyimage's first
        first = next((i for i, line in enumerate(created) if line.startswith(HISTORY_PREFIX)), None)
    out = []
    for i, line in enumerate(created):
        if first is not None and i >= first:
            out.append((line.removeprefix(HISTORY_PREFIX), ""))  # another tool's line above stays as it is
        elif first is not None:
            out.append(("base", line))
        else:
            out.append((line, ""))
    return out
