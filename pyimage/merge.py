"""``pyimage index``: one image index from single-platform images built apart (a CI matrix, one native runner
per platform), pushed under one tag or written to a layout.

Each source is an image pyimage built — in a registry (``REF``, ``docker://REF``) or in a layout
(``oci:DIR[:TAG]``); an index source adds each of its platforms. The new index lists every source manifest by
the digest it already has: the images are not rebuilt or re-encoded, so each platform keeps the digest its build
reported. A manifest that pyimage could not reproduce byte for byte (one written by another tool, with a Docker
media type or non-canonical JSON) is refused rather than silently changed.

Pushing needs no layer on this machine: the index's layers are checked for (or mounted from the sources'
repositories) in each target; only a layout output downloads blobs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from pyimage.cache import Cache
from pyimage.errors import BuildError, ConfigError
from pyimage.oci.model import INDEX_MEDIA_TYPES, Descriptor, Image, ImageIndex, Platform, layer_names
from pyimage.publish import RegistrySettings

__all__ = ["check_sources", "Source", "load_sources", "merge_index"]


@dataclass(frozen=True)
class Source:
    """One platform's image and where it came from (``shown``); ``repository`` is ``registry/repo`` for a
    registry source (a mount source when pushing), else empty."""

    image: Image
    shown: str
    repository: str = ""


_NOT_SOURCES = {  # what other image names look like, and what to do instead
    "docker-archive": "an image archive",
    "oci-archive": "an image archive",
    "docker-daemon": "an image of the local Docker Engine",
    "podman": "an image of podman's local storage",
    "containers-storage": "an image of podman's local storage",
    "rootfs": "a root filesystem tar, not an image",
    "dir": "a directory of image files",
}


def check_sources(texts: Sequence[str]) -> None:
    """Each source is an ``oci:`` layout or a registry reference; anything else (an archive, an engine's image, a
    tar file here) is one ConfigError saying so, before any work."""
    for text in texts:
        kind, sep, rest = text.strip().partition(":")
        what = _NOT_SOURCES.get(kind) if sep and rest else None
        if what is None and (Path(text).is_file() or (":" not in text and text.endswith((".tar", ".tar.gz", ".tgz")))):
            what = "an image archive"
        if what is None:
            continue
        fix = (
            "push it to a registry (docker load -i FILE, then docker push REF) and name that reference, or build with -o oci:DIR and give oci:DIR"
            if "archive" in what
            else "push it to a registry and name that reference, or build with -o oci:DIR and give oci:DIR"
        )
        raise ConfigError(f"pyimage index {text!r}: that is {what}; index takes oci:DIR[:TAG] layouts and registry references", fix)


def _split(text: str) -> tuple[str, str]:
    text = text.strip()
    if text.startswith("oci:"):
        return "oci", text[4:]
    return "registry", text.removeprefix("docker://")


def load_sources(texts: Sequence[str], cache: Cache, settings: RegistrySettings, *, outputs: bool, push_registries: Sequence[str]) -> list[Source]:
    """Every platform image the sources name, in order. A registry source's layer blobs are downloaded only when
    the index goes to a layout (``outputs``) or to a registry other than the source's (no mount across them)."""
    if not texts:
        raise ConfigError("pyimage index: no images given", "name the per-platform images, e.g. pyimage index --push REG/APP:1.0 REG/APP:amd64 REG/APP:arm64")
    check_sources(texts)
    out: list[Source] = []
    for text in texts:
        kind, rest = _split(text)
        out.extend(_layout_sources(rest, cache) if kind == "oci" else _registry_sources(rest, cache, settings, outputs, push_registries))
    seen: dict[str, str] = {}
    for src in out:
        key = str(src.image.platform)
        if key in seen:
            raise ConfigError(f"pyimage index: {key} comes from both {seen[key]} and {src.shown}", "give one image per platform")
        seen[key] = src.shown
    return out


def _checked(image: Image, digest: str, shown: str) -> Image:
    if image.digest != digest:
        raise BuildError(
            f"{shown}: its manifest ({digest[:19]}…) is not one pyimage wrote, so an index cannot list it unchanged",
            "merge pyimage builds only (pyimage build -o oci:DIR or --push); for other images use `docker buildx imagetools create`",
        )
    return image


def _named(image: Image) -> Image:
    """Layers named from the config's history (``pyimage: app`` → ``app``, the base's ``base``), for reports."""
    named = layer_names(image.config, len(image.layers))
    return replace(image, layers=tuple(replace(l, name=name or "layer") for l, (name, _source) in zip(image.layers, named)))


def _layout_sources(rest: str, cache: Cache) -> list[Source]:
    from pyimage.base import load_base
    from pyimage.oci.layout import layout_platforms, split_layout_ref

    directory, tag = split_layout_ref(rest, default_tag="")
    if not str(directory) or not directory.is_dir():
        raise ConfigError(f"oci:{rest}: no such directory", "give a layout pyimage build wrote, as oci:DIR[:TAG]")
    named = f"oci:{directory}{':' + tag if tag else ''}"
    out = []
    for desc in layout_platforms(directory, tag or None):
        assert desc.platform is not None
        shown = f"{named} ({desc.platform})"
        image, _ = load_base(named, desc.platform, cache)  # every blob verified into the cache
        out.append(Source(_checked(_named(image), desc.digest, shown), shown))
    return out


def _registry_sources(text: str, cache: Cache, settings: RegistrySettings, outputs: bool, push_registries: Sequence[str]) -> list[Source]:
    from pyimage.oci.pull import pull_image
    from pyimage.oci.reference import parse_reference

    ref = parse_reference(text)
    need_blobs = outputs or any(r != ref.registry for r in push_registries)
    factory = settings.client_factory()
    with factory(ref.registry) as client:
        data, media_type, _ = client.get_manifest(ref.repository, ref.reference)
    platforms = _index_platforms(data, str(ref)) if media_type in INDEX_MEDIA_TYPES else [None]
    out = []
    for platform in platforms:
        pulled = pull_image(
            ref,
            platform or Platform("linux", "amd64"),
            cache.blobs_dir,
            client_factory=factory,
            is_valid=lambda path, desc: cache.valid_blob(desc.digest, desc.size) is not None,
            progress=lambda digest, status, _size: cache.mark_verified(digest) if status == "downloaded" else None,
            skip=None if need_blobs else lambda desc: True,
            any_platform=platform is None,
        )
        layers = tuple(replace(l, remote=cache.valid_blob(l.digest, l.size) is None) for l in pulled.layers)
        notes = pulled.manifest.get("annotations")
        image = _named(Image(config=pulled.config, layers=layers, annotations={str(k): str(v) for k, v in notes.items()} if isinstance(notes, dict) else {}))
        shown = f"{ref} ({image.platform})"
        out.append(Source(_checked(image, pulled.digest, shown), shown, f"{ref.registry}/{ref.repository}"))
    return out


def _index_platforms(data: bytes, shown: str) -> list[Platform]:
    import json

    try:
        entries = json.loads(data).get("manifests") or []
        descs = [Descriptor.from_json(e) for e in entries if isinstance(e, dict)]
    except (ValueError, TypeError, KeyError, AttributeError):
        raise BuildError(f"{shown}: the index is malformed", "the image is damaged; push it again") from None
    platforms = [d.platform for d in descs if d.platform is not None and d.platform.os != "unknown"]
    if not platforms:
        raise BuildError(f"{shown}: the index lists no platform images", "give per-platform images")
    return platforms


def merge_index(
    sources: Sequence[Source],
    annotations: dict[str, str],
    outputs: Sequence[str],
    pushes: Sequence[str],
    settings: RegistrySettings,
    cache: Cache,
    events: Callable[[str], None],
) -> tuple[ImageIndex, list[str], list[dict[str, Any]]]:
    """The index of ``sources`` (their order), written to each ``oci:DIR[:TAG]`` output and pushed to each
    reference; returns it with what was written and the push reports."""
    from pyimage.oci.layout import split_layout_ref, write_layout
    from pyimage.publish import push_refs

    index = ImageIndex(tuple(s.image for s in sources), annotations)
    written = []
    for out in outputs:
        directory, tag = split_layout_ref(out.removeprefix("oci:"), default_tag="latest")
        write_layout(index, Path(directory).resolve(), tag, stamps=cache)
        written.append(f"oci:{Path(directory).resolve()}:{tag}")
    pushed = push_refs(index, list(pushes), settings, events, cache, mount_from=[s.repository for s in sources if s.repository]) if pushes else []
    return index, written, pushed
