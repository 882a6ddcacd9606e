"""JSON schemas for the OCI image-spec documents (v1.1): the image layout, index, manifest, descriptor and config.

Written here from the image-spec's text (descriptor.md, manifest.md, image-index.md, config.md, image-layout.md):
the required fields, their types, and the grammars of media types and digests. They serve the image checker
(``pyimage.oci.check``), which validates every document of an image against them with ``jsonschema``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LAYOUT", "INDEX", "MANIFEST", "CONFIG", "DOCKER_MANIFEST_LIST", "DIGEST_PATTERN", "MEDIA_TYPE_PATTERN"]

# descriptor.md: algorithm components joined by separators, a colon, then the encoded part.
DIGEST_PATTERN = r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"
# RFC 6838 restricted names, as the descriptor's mediaType property requires.
MEDIA_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"

_STRINGS = {"type": "array", "items": {"type": "string"}}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT_MAP = {"type": "object", "additionalProperties": {"type": "object"}}
_INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
_MEDIA_TYPE = {"type": "string", "pattern": MEDIA_TYPE_PATTERN}

_PLATFORM: dict[str, Any] = {
    "type": "object",
    "required": ["architecture", "os"],
    "properties": {
        "architecture": {"type": "string"},
        "os": {"type": "string"},
        "os.version": {"type": "string"},
        "os.features": _STRINGS,
        "variant": {"type": "string"},
    },
}

_DESCRIPTOR: dict[str, Any] = {
    "type": "object",
    "required": ["mediaType", "size", "digest"],
    "properties": {
        "mediaType": _MEDIA_TYPE,
        "size": _INT64,
        "digest": {"type": "string", "pattern": DIGEST_PATTERN},
        "urls": _STRINGS,
        "annotations": _STRING_MAP,
        "data": {"type": "string", "pattern": r"^[A-Za-z0-9+/]*={0,2}$"},
        "artifactType": _MEDIA_TYPE,
        "platform": _PLATFORM,
    },
}

LAYOUT: dict[str, Any] = {
    "type": "object",
    "required": ["imageLayoutVersion"],
    "properties": {"imageLayoutVersion": {"type": "string", "enum": ["1.0.0"]}},
}

INDEX: dict[str, Any] = {
    "type": "object",
    "required": ["schemaVersion", "manifests"],
    "properties": {
        "schemaVersion": {"type": "integer", "minimum": 2, "maximum": 2},
        "mediaType": _MEDIA_TYPE,
        "artifactType": _MEDIA_TYPE,
        "subject": _DESCRIPTOR,
        "manifests": {"type": "array", "items": _DESCRIPTOR},
        "annotations": _STRING_MAP,
    },
}

MANIFEST: dict[str, Any] = {
    "type": "object",
    "required": ["schemaVersion", "config", "layers"],
    "properties": {
        "schemaVersion": {"type": "integer", "minimum": 2, "maximum": 2},
        "mediaType": _MEDIA_TYPE,
        "artifactType": _MEDIA_TYPE,
        "config": _DESCRIPTOR,
        "subject": _DESCRIPTOR,
        "layers": {"type": "array", "minItems": 1, "items": _DESCRIPTOR},
        "annotations": _STRING_MAP,
    },
}

_NULLABLE = lambda schema: {"oneOf": [schema, {"type": "null"}]}  # noqa: E731 - a schema combinator

CONFIG: dict[str, Any] = {
    "type": "object",
    "required": ["architecture", "os", "rootfs"],
    "properties": {
        "created": {"type": "string", "format": "date-time"},
        "author": {"type": "string"},
        "architecture": {"type": "string"},
        "variant": {"type": "string"},
        "os": {"type": "string"},
        "os.version": {"type": "string"},
        "os.features": _STRINGS,
        "config": {
            "type": "object",
            "properties": {
                "User": {"type": "string"},
                "ExposedPorts": _OBJECT_MAP,
                "Env": _STRINGS,
                "Entrypoint": _NULLABLE(_STRINGS),
                "Cmd": _NULLABLE(_STRINGS),
                "Volumes": _NULLABLE(_OBJECT_MAP),
                "WorkingDir": {"type": "string"},
                "Labels": _NULLABLE(_STRING_MAP),
                "StopSignal": {"type": "string"},
                "ArgsEscaped": {"type": "boolean"},
            },
        },
        "rootfs": {
            "type": "object",
            "required": ["diff_ids", "type"],
            "properties": {
                "diff_ids": {"type": "array", "items": {"type": "string", "pattern": DIGEST_PATTERN}},
                "type": {"type": "string", "enum": ["layers"]},
            },
        },
        "history": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "created": {"type": "string", "format": "date-time"},
                    "author": {"type": "string"},
                    "created_by": {"type": "string"},
                    "comment": {"type": "string"},
                    "empty_layer": {"type": "boolean"},
                },
            },
        },
    },
}

# Docker's `manifest.json` in `docker save` archives: a list of {Config, RepoTags, Layers}.
DOCKER_MANIFEST_LIST: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["Config", "Layers"],
        "properties": {"Config": {"type": "string"}, "RepoTags": _NULLABLE(_STRINGS), "Layers": _STRINGS},
    },
}
