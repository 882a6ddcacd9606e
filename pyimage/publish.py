"""Registry settings from the command line, and pushing a built image to its references.

Credentials given on the command line apply to every registry named in this run; otherwise each registry's
credentials come from the docker/podman auth files and helpers (``pyimage.oci.auth``). Secrets are never
printed: reports carry references, digests and counts only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from pyimage.cache import Cache, Meta, strings
from pyimage.oci.model import Image, ImageIndex

__all__ = ["RegistrySettings", "push_refs", "push_targets", "TargetBlobs"]


@dataclass(frozen=True, repr=False)
class RegistrySettings:
    username: str | None = None
    password: str | None = None
    insecure: frozenset[str] = field(default_factory=frozenset)
    ca_bundle: str | None = None
    # Registries the command-line credentials are for (the --push targets); None: any registry in this run.
    # Sending them elsewhere (a docker.io base pull) would turn an anonymous pull into a 401.
    credentials_for: frozenset[str] | None = None

    def __repr__(self) -> str:
        return f"RegistrySettings(username={self.username!r}, insecure={sorted(self.insecure)}, ca_bundle={self.ca_bundle!r})"

    def client_factory(self) -> Callable[[str], Any]:
        from pyimage.oci.auth import lookup_credentials
        from pyimage.oci.registry import RegistryClient

        def make(registry: str) -> RegistryClient:
            mine = self.credentials_for is None or registry in self.credentials_for
            creds = lookup_credentials(registry, username=self.username if mine else None, password=self.password if mine else None)
            return RegistryClient(registry, credentials=creds, insecure=registry in self.insecure, ca_bundle=self.ca_bundle)

        return make


def push_targets(refs: Sequence[str], repository: str | None) -> list[str]:
    """The repositories a build pushes to (``--push`` references, else the ``repository`` key), known before it
    builds anything, since tags may name the app's version."""
    return list(refs) or ([repository] if repository else [])


def _pushed(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise TypeError("not a map of registries")
    return {registry: list(strings(repos)) for registry, repos in value.items()}


PUSHED: Meta[dict[str, list[str]]] = Meta("pushed", _pushed)  # registry -> repositories this cache pushed to


def _mount_sources(cache: Cache | None, registry: str, repository: str) -> list[str]:
    known: dict[str, list[str]] = (cache.get_meta(PUSHED) if cache else None) or {}
    return sorted(repo for repo in known.get(registry, []) if repo != repository)


class TargetBlobs:
    """Answers "does every push target already hold this blob?" for a push-only build, before it builds a
    layer whose blob is no longer on this machine. A blob is held when the target repository has it, or when it
    can be mounted there from a repository on the same registry this cache pushed to before (the mount is done
    now; the push would do it anyway). Any registry error answers "no": the layer is then built here, and the
    push reports the error in its own words."""

    def __init__(self, refs: Sequence[str], settings: RegistrySettings, cache: Cache | None) -> None:
        from pyimage.oci.reference import parse_reference

        self._targets = [parse_reference(r) for r in refs]
        self._make = settings.client_factory()
        self._cache = cache
        self._clients: dict[str, Any] = {}
        self._answers: dict[str, bool] = {}
        self._prepared: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, digest: str) -> bool:
        from pyimage.errors import PyimageError

        with self._lock:  # layers are built in parallel; the answers and the clients are shared
            if digest not in self._answers:
                try:
                    self._answers[digest] = all(self._held(ref, digest) for ref in self._targets)
                except (PyimageError, OSError):
                    self._answers[digest] = False
            return self._answers[digest]

    def _held(self, ref: Any, digest: str) -> bool:
        sources = _mount_sources(self._cache, ref.registry, ref.repository)
        client = self._clients.get(ref.registry)
        if client is None:
            client = self._clients[ref.registry] = self._make(ref.registry)
        if (ref.registry, ref.repository) not in self._prepared:
            client.prepare_push(ref.repository, sources)
            self._prepared.add((ref.registry, ref.repository))
        if client.blob_exists(ref.repository, digest):
            return True
        return any(client.mount_blob(ref.repository, digest, source) for source in sources)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def push_refs(
    image: Image | ImageIndex,
    refs: Sequence[str],
    settings: RegistrySettings,
    events: Callable[[str], None],
    cache: Cache | None = None,
    mount_from: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Pushes ``image`` to each reference (blobs first, manifests last); one report dict per reference.

    Repositories this cache pushed to before on the same registry are offered as cross-repository mount
    sources, so a second app's shared heavy layer is mounted there instead of uploaded again.
    """
    from pyimage.oci.push import push_image
    from pyimage.oci.reference import parse_reference

    parsed = [parse_reference(r) for r in refs]
    known: dict[str, list[str]] = (cache.get_meta(PUSHED) if cache else None) or {}
    mount_from = sorted({repo for ref in parsed for repo in _mount_sources(cache, ref.registry, ref.repository)} | set(mount_from))
    events(f"pushing to {', '.join(str(r) for r in parsed)}")
    result = push_image(image, parsed, client_factory=settings.client_factory(), mount_from=mount_from)
    if cache is not None:
        for ref in parsed:
            repos = known.setdefault(ref.registry, [])
            if ref.repository not in repos:
                repos.append(ref.repository)
        cache.put_meta(PUSHED, known)
    return [
        {
            "reference": str(ref),
            "digest": result.digest,
            "uploaded": result.uploaded,
            "mounted": result.mounted,
            "skipped": result.skipped,
            "bytes_uploaded": result.bytes_uploaded,
        }
        for ref in result.refs
    ]
