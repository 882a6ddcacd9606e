"""Push an ``Image`` to one or more tags: blobs first (skip, mount or upload), manifests last.

The manifest goes up only after every blob it names is in the repository, so a push that fails half-way
never leaves a tag pointing at missing blobs; rerunning it skips what already arrived.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from pyimage.errors import BuildError, ConfigError
from pyimage.oci.model import MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, Descriptor, Image, ImageIndex
from pyimage.oci.reference import Reference
from pyimage.oci.registry import ClientFactory, RegistryClient, default_client_factory

__all__ = ["PushResult", "push_image", "PUSH_JOBS"]

PUSH_JOBS = 3  # parallel blob transfers; docker uses 5, but a 2-core builder gains nothing past 3 streams


@dataclass(frozen=True)
class PushResult:
    """What a push did: blob counts are per repository pushed to (config included), bytes are what was sent."""

    digest: str
    refs: tuple[Reference, ...]
    uploaded: int
    mounted: int
    skipped: int
    bytes_uploaded: int


def push_image(
    image: Image | ImageIndex,
    refs: Sequence[Reference],
    *,
    client_factory: ClientFactory = default_client_factory,
    mount_from: Sequence[str] = (),
    jobs: int = PUSH_JOBS,
    progress: Callable[[str, str, int], None] | None = None,
) -> PushResult:
    """Push ``image`` to every ref; returns its manifest digest and what was uploaded, mounted or skipped.

    An ``ImageIndex`` goes up as every image's blobs, then each image's manifest by digest, then the index under
    the tags, so no tag ever names a manifest or blob the registry lacks.

    Clients come from ``client_factory(registry_host)`` and are closed when the push ends.
    ``mount_from`` names repositories on the same registry (``org/base`` or ``host/org/base``) that may already
    hold some blobs. ``progress(digest, status, size)`` is called as each blob is done, with status
    ``skipped``, ``mounted`` or ``uploaded``.
    """
    if not refs:
        raise ConfigError("nothing to push to: no image reference given", "pass --push REF (e.g. ghcr.io/org/app:1.0)")
    images = image.images if isinstance(image, ImageIndex) else (image,)
    manifest, media_type = (image.index_bytes(), MEDIA_OCI_INDEX) if isinstance(image, ImageIndex) else (image.manifest_bytes(), MEDIA_OCI_MANIFEST)
    digest = image.digest
    for ref in refs:
        if ref.digest and ref.digest != digest:
            raise ConfigError(
                f"{ref} pins digest {ref.digest}, but the image built is {digest}",
                "push to a tag, or drop the @digest part",
            )
    blobs: list[tuple[Descriptor, Path | bytes | None]] = []  # None: a remote layer, already in the targets
    seen: set[str] = set()
    for one in images:
        if one.config_descriptor().digest not in seen:
            seen.add(one.config_descriptor().digest)
            blobs.append((one.config_descriptor(), one.config_bytes()))
    for layer in image.layers:
        if layer.digest in seen:
            continue
        seen.add(layer.digest)
        if layer.remote and not Path(layer.blob).is_file():
            blobs.append((layer.descriptor, None))
            continue
        if not Path(layer.blob).is_file():
            raise BuildError(f"layer {layer.name} ({layer.digest}) has no blob at {layer.blob}", "rebuild the image")
        blobs.append((layer.descriptor, Path(layer.blob)))

    clients: dict[str, RegistryClient] = {}
    counts = {"uploaded": 0, "mounted": 0, "skipped": 0, "bytes": 0}
    lock = threading.Lock()

    def record(desc: Descriptor, status: str) -> None:
        with lock:
            counts[status] += 1
            if status == "uploaded":
                counts["bytes"] += desc.size
        if progress is not None:
            progress(desc.digest, status, desc.size)

    try:
        pushed: dict[str, list[str]] = {}  # registry -> repositories whose blobs are all in place
        for ref in refs:
            if ref.repository in pushed.get(ref.registry, ()):
                continue
            if ref.registry not in clients:
                clients[ref.registry] = client_factory(ref.registry)
            client = clients[ref.registry]
            sources = _mount_sources(ref, mount_from, pushed.get(ref.registry, []))
            client.prepare_push(ref.repository, sources)
            _push_blobs(client, ref.repository, blobs, sources, jobs, record)
            pushed.setdefault(ref.registry, []).append(ref.repository)
        if isinstance(image, ImageIndex):  # each platform's manifest by digest first: the index names them
            for ref in refs:
                for one in images:
                    clients[ref.registry].put_manifest(ref.repository, one.digest, one.manifest_bytes(), MEDIA_OCI_MANIFEST)
        for ref in refs:
            clients[ref.registry].put_manifest(ref.repository, ref.tag or digest, manifest, media_type)
    finally:
        for client in clients.values():
            client.close()
    return PushResult(
        digest=digest,
        refs=tuple(refs),
        uploaded=counts["uploaded"],
        mounted=counts["mounted"],
        skipped=counts["skipped"],
        bytes_uploaded=counts["bytes"],
    )


def _mount_sources(ref: Reference, mount_from: Sequence[str], done_here: list[str]) -> tuple[str, ...]:
    """Repositories on ``ref``'s registry to mount from: the caller's, then ones this push already filled."""
    out: list[str] = []
    for source in list(mount_from) + done_here:
        if source.startswith(f"{ref.registry}/"):
            source = source[len(ref.registry) + 1 :]
        elif "/" in source and ("." in source.split("/")[0] or ":" in source.split("/")[0]):
            continue  # another registry: a mount cannot cross registries
        if source != ref.repository and source not in out:
            out.append(source)
    return tuple(out)


def _push_blobs(
    client: RegistryClient,
    repository: str,
    blobs: list[tuple[Descriptor, Path | bytes | None]],
    sources: tuple[str, ...],
    jobs: int,
    record: Callable[[Descriptor, str], None],
) -> None:
    """Skip, mount or upload each blob, in parallel; the first failure stops new work and is raised."""
    stop = threading.Event()

    def one(desc: Descriptor, content: Path | bytes | None) -> None:
        if stop.is_set():
            return
        try:
            transfer(desc, content)
        except BaseException:
            stop.set()  # before this future completes, so queued blobs see it and do not start
            raise

    def transfer(desc: Descriptor, content: Path | bytes | None) -> None:
        if client.blob_exists(repository, desc.digest):
            record(desc, "skipped")
            return
        for source in sources:
            if client.mount_blob(repository, desc.digest, source):
                record(desc, "mounted")
                return
        if content is None:
            raise BuildError(
                f"{desc.digest} is no longer in {repository}, and this machine does not hold it",
                "build again: the layer is then built here (or add an output such as -o oci:DIR)",
            )
        client.upload_blob(repository, desc.digest, desc.size, content)
        record(desc, "uploaded")

    # Largest first, so the long uploads start early and the small ones fill the gaps.
    ordered = sorted(blobs, key=lambda b: -b[0].size)
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(ordered))), thread_name_prefix="pyimage-push") as pool:
        futures: list[Future[None]] = [pool.submit(one, desc, content) for desc, content in ordered]
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            future.cancel()  # the ones not started; running ones finish (or fail) on their own
    for future in futures:
        error = None if future.cancelled() else future.exception()
        if error is not None:
            raise error
