"""Registry settings from the command line, and pushing a built image to its references.

Credentials given on the command line apply to every registry named in this run; otherwise each registry's
credentials come from the docker/podman auth files and helpers (``pyimage.oci.auth``). Secrets are never
printed: reports carry references, digests and counts only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from pyimage.cache import Cache
from pyimage.oci.model import Image

__all__ = ["RegistrySettings", "push_refs"]


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


def push_refs(image: Image, refs: Sequence[str], settings: RegistrySettings, events: Callable[[str], None], cache: Cache | None = None) -> list[dict[str, Any]]:
    """Pushes ``image`` to each reference (blobs first, manifests last); one report dict per reference.

    Repositories this cache pushed to before on the same registry are offered as cross-repository mount
    sources, so a second app's shared heavy layer is mounted there instead of uploaded again.
    """
    from pyimage.oci.push import push_image
    from pyimage.oci.reference import parse_reference

    parsed = [parse_reference(r) for r in refs]
    known: dict[str, list[str]] = (cache.get_meta("pushed-repositories") if cache else None) or {}
    mount_from = sorted({repo for ref in parsed for repo in known.get(ref.registry, []) if repo != ref.repository})
    events(f"pushing to {', '.join(str(r) for r in parsed)}")
    result = push_image(image, parsed, client_factory=settings.client_factory(), mount_from=mount_from)
    if cache is not None:
        for ref in parsed:
            repos = known.setdefault(ref.registry, [])
            if ref.repository not in repos:
                repos.append(ref.repository)
        cache.put_meta("pushed-repositories", known)
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
