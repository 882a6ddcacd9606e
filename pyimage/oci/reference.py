"""Image references (``python:3.12-slim``, ``ghcr.io/o/r@sha256:…``) parsed and normalised the way docker does.

One normal form means one cache key, one credential lookup and one registry URL for every spelling a user
may type: ``python`` and ``docker.io/library/python:latest`` are the same image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyimage.errors import ConfigError

__all__ = ["DOCKER_HUB", "DOCKER_HUB_API", "Reference", "parse_reference", "is_tag"]

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"  # docker.io itself only redirects; the API lives here
_HUB_ALIASES = ("index.docker.io",)
_MAX_NAME = 255  # distribution-spec: registry/repository must fit in 255 characters

# The grammar of github.com/distribution/reference, anchored piece by piece so errors can say which part is wrong.
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"^(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$")
_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # distribution's [\w][\w.-]{0,127}, where \w is ASCII
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_SHA256_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


@dataclass(frozen=True)
class Reference:
    """A normalised reference: ``tag`` is ``latest`` unless a digest was given alone; ``str()`` round-trips."""

    registry: str
    repository: str
    tag: str | None = "latest"
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``: how messages name the place an image lives."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host that serves the ``/v2/`` API (docker.io's is registry-1.docker.io)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse_reference(text: str) -> Reference:
    """Parse what a user typed (``docker://`` prefix allowed) into a normalised ``Reference``.

    Raises ``ConfigError`` with a hint naming the part that is wrong.
    """
    original = text
    text = text.strip()
    if text.startswith("docker://"):
        text = text[len("docker://") :]
    if not text:
        raise _invalid(original, "it is empty", "give an image such as python:3.12-slim or ghcr.io/org/app:1.0")

    digest: str | None = None
    if "@" in text and "/" in text.split("@", 1)[1]:  # user:password@host/repo: a digest never holds a slash
        where = "***@" + text.split("@", 1)[1]  # the secret is never repeated back
        raise ConfigError(
            f"not an image reference: {where!r}: a registry reference cannot carry credentials",
            "drop them from the reference and pass them with --username/--password-stdin, PYIMAGE_REGISTRY_USERNAME/PASSWORD or `docker login`",
        )
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST_RE.match(digest) or (digest.startswith("sha256:") and not _SHA256_RE.match(digest)):
            raise _invalid(original, f"{digest!r} is not a digest", "a digest looks like sha256:<64 hex digits>")

    tag: str | None = None
    colon, slash = text.rfind(":"), text.rfind("/")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise _invalid(
                original,
                f"{tag!r} is not a valid tag",
                "tags are up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'",
            )

    registry, repository = _split_domain(text)
    if not _DOMAIN_RE.match(registry):
        raise _invalid(original, f"{registry!r} is not a registry host", "write the host as host[:port]")
    for component in repository.split("/"):
        if not _COMPONENT_RE.match(component):
            hint = (
                "repository names are lowercase"
                if component.lower() != component
                else "path components are lowercase letters and digits, separated by '.', '_', '__' or '-'"
            )
            raise _invalid(original, f"{component!r} is not a valid repository path component", hint)
    if len(f"{registry}/{repository}") > _MAX_NAME:
        raise _invalid(original, f"the name is longer than {_MAX_NAME} characters", "use a shorter repository name")

    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, repository, tag, digest)


def _split_domain(name: str) -> tuple[str, str]:
    """docker's rule: the first component is a host only if it has '.' or ':', is localhost, or has capitals."""
    first, sep, rest = name.partition("/")
    if not sep or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        registry, repository = DOCKER_HUB, name
    else:
        registry, repository = first, rest
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


def _invalid(text: str, why: str, hint: str) -> ConfigError:
    return ConfigError(f"not an image reference: {text!r}: {why}", hint)


def is_tag(text: str) -> bool:
    """Whether ``text`` is a tag as registries, engines and skopeo take one (``1.0``, ``dev_2``; ASCII, ≤ 128)."""
    return bool(_TAG_RE.match(text))
