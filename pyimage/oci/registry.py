"""The OCI distribution API (``/v2/``) for one registry: manifests and blobs, pulled and pushed.

``RegistryClient`` is the blob and manifest operations; the HTTP, TLS and the one retry policy are
``transport.py``'s, the challenges and tokens ``token.py``'s. It knows nothing of images: ``push.py`` and
``pull.py`` build on it. Every failure a user can act on becomes one ``RegistryError`` naming the registry,
the repository and the step, with a hint; secrets never appear in messages.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import httpx

import pyimage.atomic as atomic
from pyimage.errors import RegistryError
from pyimage.oci.auth import Credentials, lookup_credentials
from pyimage.oci.model import (
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    parse_digest,
)
from pyimage.oci.reference import DOCKER_HUB, DOCKER_HUB_API
from pyimage.oci.token import LOGIN_HINT, Authenticator, rejected_hint, scope
from pyimage.oci.transport import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    CA_BUNDLE_HINT,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    INSECURE_HINT,
    RETRY_STATUSES,
    Body,
    RetryPolicy,
    Transport,
    error_detail,
    http_error,
    is_loopback,
    status_hint,
    transport_error,
)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "CA_BUNDLE_HINT",
    "CHUNK_SIZE",
    "DEFAULT_RETRIES",
    "INSECURE_HINT",
    "LOGIN_HINT",
    "MANIFEST_ACCEPT",
    "MONOLITHIC_MAX",
    "ClientFactory",
    "RegistryClient",
    "check_digest",
    "default_client_factory",
    "is_loopback",
    "short_digest",
]

MANIFEST_ACCEPT = (MEDIA_OCI_MANIFEST, MEDIA_OCI_INDEX, MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_LIST)
MEDIA_DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.v1+prettyjws")
MONOLITHIC_MAX = 32 * 1024 * 1024  # above this a blob goes in chunks, so a dropped connection costs one chunk
CHUNK_SIZE = 16 * 1024 * 1024  # per PATCH; big enough that request overhead is noise, small enough to resume cheaply
MAX_MANIFEST = 4 * 1024 * 1024  # the distribution-spec lets registries refuse larger; we refuse to read larger
_IO_CHUNK = 1024 * 1024
_OCTET = "application/octet-stream"
_ASK_ACCESS = "ask for access, or use a repository you own"


def default_client_factory(registry: str) -> RegistryClient:
    """A verified-TLS client with the credentials docker/podman/skopeo would use for ``registry``."""
    return RegistryClient(registry, credentials=lookup_credentials(registry))


def check_digest(digest: str) -> str:
    """``digest`` if it is a well-formed sha256/sha512 digest; it goes into URLs and file names, so this guards both."""
    try:
        parse_digest(digest)
    except ValueError:
        raise RegistryError(f"not a valid digest: {str(digest)[:80]!r}", "a digest looks like sha256:<64 lowercase hex digits>") from None
    return digest


def short_digest(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}…" if len(hexpart) > 12 else digest


class RegistryClient:
    """One registry host: anonymous first, then Basic or Bearer as the registry asks; tokens cached per scope.

    ``insecure`` allows plain HTTP and an untrusted certificate for this host only, as docker's
    ``--insecure-registry`` does; loopback hosts may use plain HTTP anyway (HTTPS is tried first).
    ``retries``, ``backoff`` and ``backoff_cap`` make the ``RetryPolicy`` every request and upload obeys.
    Safe to share between threads.
    """

    def __init__(
        self,
        registry_host: str,
        *,
        credentials: Credentials | None = None,
        insecure: bool = False,
        ca_bundle: str | os.PathLike[str] | None = None,
        retries: int = DEFAULT_RETRIES,
        backoff: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
        monolithic_max: int = MONOLITHIC_MAX,
        chunk_size: int = CHUNK_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.registry = registry_host
        self.host = DOCKER_HUB_API if registry_host == DOCKER_HUB else registry_host
        self.credentials = credentials
        self.insecure = insecure
        self.policy = RetryPolicy(max(0, retries), backoff, backoff_cap)
        self.monolithic_max = monolithic_max
        self.chunk_size = max(1, chunk_size)
        self._transport = Transport(
            self.host, name=registry_host, policy=self.policy, insecure=insecure, ca_bundle=ca_bundle, timeout=timeout
        )
        self._auth = Authenticator(registry_host, self._transport, credentials)
        self._connected = False
        self._connect_lock = threading.Lock()
        self._push_scopes: dict[str, tuple[str, ...]] = {}

    @property
    def token_requests(self) -> int:
        """How many tokens were fetched; lets tests and ``--debug`` see the cache work."""
        return self._auth.token_requests

    # -- lifecycle -------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.registry!r}, credentials={self.credentials!r}, insecure={self.insecure})"

    # -- public API -------------------------------------------------------------------------------------------

    def prepare_push(self, repository: str, mount_from: Sequence[str] = ()) -> None:
        """Ask for one token that covers pushing to ``repository`` and mounting from ``mount_from``.

        Every later call on ``repository`` reuses it, and bad credentials fail here, before any upload.
        """
        scopes = (scope(repository, "pull,push"), *(scope(r, "pull") for r in mount_from if r != repository))
        self._push_scopes[repository] = scopes
        self._connect()
        if self._auth.scheme == "bearer":
            self._auth.token(frozenset(scopes), f"pushing to {self._where(repository)}")

    def get_manifest(
        self, repository: str, reference: str, accept: Sequence[str] = MANIFEST_ACCEPT
    ) -> tuple[bytes, str, str]:
        """``(bytes, media_type, digest)`` of a manifest or index; a digest ``reference`` is checked against it."""
        shown = f"{self._where(repository)}{'@' if ':' in reference else ':'}{reference}"
        what = f"pulling manifest {shown}"
        if ":" in reference:
            check_digest(reference)
        response = self._send(
            "GET", f"/v2/{repository}/manifests/{reference}", self._scopes(repository), what,
            headers={"Accept": ", ".join(accept)}, stream=True,
        )
        with contextlib.closing(response):
            if response.status_code == 404:
                raise RegistryError(
                    f"{shown} not found ({error_detail(response) or 'manifest unknown'})",
                    "check the image name and tag; `skopeo list-tags docker://"
                    f"{self.registry}/{repository}` lists the tags",
                )
            if response.status_code != 200:
                raise self._status_error(response, what, repository)
            data = _read_limited(response, MAX_MANIFEST, what)
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in MANIFEST_ACCEPT and media_type not in MEDIA_DOCKER_SCHEMA1:
            media_type = _media_type_from_body(data) or media_type
        if media_type in MEDIA_DOCKER_SCHEMA1:
            raise RegistryError(
                f"{shown} uses the Docker schema 1 manifest format, which pyimage does not read",
                "use an image pushed by a current tool (docker 1.10+, buildah, skopeo, pyimage)",
            )
        if ":" in reference:
            algo = reference.split(":", 1)[0]
            digest = f"{algo}:{hashlib.new(algo, data).hexdigest()}"
            if digest != reference:
                raise RegistryError(
                    f"manifest {shown} does not match its digest (got {short_digest(digest)})",
                    "the registry or a proxy served the wrong content; retry, or report it to the registry's owner",
                )
        else:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return data, media_type, digest

    def blob_exists(self, repository: str, digest: str) -> bool:
        """HEAD the blob: True if ``repository`` already has it (so a push can skip it)."""
        check_digest(digest)
        if repository in self._push_scopes:  # part of a push: the step is the check before the upload
            what = f"checking blob {short_digest(digest)} in {self._where(repository)} before pushing it"
        else:
            what = f"checking blob {short_digest(digest)} in {self._where(repository)}"
        response = self._send("HEAD", f"/v2/{repository}/blobs/{digest}", self._scopes(repository), what)
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._status_error(response, what, repository)

    def fetch_blob(
        self,
        repository: str,
        digest: str,
        dest: Path,
        *,
        size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Path:
        """Download a blob to ``dest``, verified; it appears there whole (temp file + rename) or not at all.

        A download that breaks off after it started is started again, as the retry policy allows.
        """
        check_digest(digest)
        dest = Path(dest)
        what = f"pulling blob {short_digest(digest)} from {self._where(repository)}"
        dest.parent.mkdir(parents=True, exist_ok=True)

        def attempt(_: int) -> Path:
            fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            with atomic.staged(dest, Path(tmp_name)), os.fdopen(fd, "wb") as out:
                self._download(repository, digest, size, out, what, progress)
            return dest

        return self.policy.run(attempt)

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-repository mount: True if the registry linked the blob (201), False if it needs an upload (202)."""
        check_digest(digest)
        what = f"mounting blob {short_digest(digest)} from {from_repository} into {self._where(repository)}"
        scopes = self._push_scopes.get(repository, ())
        if scope(from_repository, "pull") not in scopes:
            scopes = (scope(repository, "pull,push"), scope(from_repository, "pull"))
        response = self._send(
            "POST", f"/v2/{repository}/blobs/uploads/", scopes, what,
            params={"mount": digest, "from": from_repository},
        )
        if response.status_code == 201:
            return True
        if response.status_code == 202:
            # The registry opened an upload session instead; leave it (registries purge stale sessions):
            # a DELETE would need the ``delete`` action, which a pusher often lacks.
            response.close()
            return False
        if response.status_code in (401, 403, 404):
            return False  # no read access to the source, or no such repository: an upload will tell the real story
        raise self._status_error(response, what, repository)

    def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        path: Path | bytes,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Upload a blob from a file (or bytes): one PUT up to ``monolithic_max``, resumable PATCH chunks above.

        ``progress(n)`` is called with the bytes the registry has acknowledged so far. A step with a body is
        never sent twice blindly: after a failure the registry is asked first what it already has.
        """
        check_digest(digest)
        actual = len(path) if isinstance(path, bytes) else Path(path).stat().st_size
        if actual != size:
            raise RegistryError(
                f"blob {short_digest(digest)} is {actual} bytes on disk but its descriptor says {size}",
                "the local blob changed after it was built; rebuild the image",
            )
        what = f"pushing blob {short_digest(digest)} to {self._where(repository)}"
        if size <= self.monolithic_max:
            self._upload_monolithic(repository, digest, size, path, what, progress)
        else:
            self._upload_chunked(repository, digest, size, path, what, progress)

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT a manifest or index under a tag or its digest; returns its digest (replaying it is harmless)."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if ":" in reference and reference != digest:
            raise ValueError(f"manifest digest {digest} does not match the reference {reference}")
        shown = f"{self._where(repository)}{'@' if ':' in reference else ':'}{reference}"
        what = f"pushing manifest {shown}"
        response = self._send(
            "PUT", f"/v2/{repository}/manifests/{reference}", self._scopes(repository, push=True), what,
            headers={"Content-Type": media_type}, body=lambda: data,
        )
        if response.status_code not in (200, 201, 202):
            raise self._status_error(response, what, repository)
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored.startswith("sha256:") and stored != digest:
            raise RegistryError(
                f"{self.registry} stored manifest {shown} as {short_digest(stored)}, not {short_digest(digest)}",
                "the registry rewrote the manifest; it may not support OCI manifests",
            )
        return digest

    # -- downloads and uploads --------------------------------------------------------------------------------

    def _download(
        self, repository: str, digest: str, size: int | None, out: BinaryIO, what: str,
        progress: Callable[[int], None] | None,
    ) -> None:
        """Stream one GET of the blob into ``out``, checking size and digest; a broken-off answer is transient."""
        algo, expected = digest.split(":", 1)
        response = self._send(
            "GET", f"/v2/{repository}/blobs/{digest}", self._scopes(repository), what,
            headers={"Accept-Encoding": "identity"}, stream=True,
        )
        with contextlib.closing(response):
            if response.status_code != 200:
                raise self._status_error(response, what, repository)
            hasher, received = hashlib.new(algo), 0
            try:
                for chunk in response.iter_raw(_IO_CHUNK):
                    received += len(chunk)
                    if size is not None and received > size:
                        raise RegistryError(
                            f"blob {short_digest(digest)} from {self._where(repository)} is larger than "
                            f"its descriptor says ({size} bytes)",
                            "the manifest or the registry is corrupt; report it to the image's publisher",
                        )
                    hasher.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress(received)
            except httpx.TransportError as exc:  # the answer started and then broke off
                raise transport_error(exc, what, self.host) from None
        out.flush()
        os.fsync(out.fileno())
        if hasher.hexdigest() != expected or (size is not None and received != size):
            raise RegistryError(
                f"blob {short_digest(digest)} from {self._where(repository)} does not match its digest",
                "the registry or a proxy served the wrong bytes; retry, or report it to the registry's owner",
            )

    def _start_upload(self, repository: str, what: str) -> httpx.URL:
        """Open an upload session (replaying this POST is harmless: an unused session is purged)."""
        response = self._send("POST", f"/v2/{repository}/blobs/uploads/", self._scopes(repository, push=True), what)
        if response.status_code != 202:
            raise self._status_error(response, what, repository)
        return self._location(response, what)

    def _upload_monolithic(
        self, repository: str, digest: str, size: int, path: Path | bytes, what: str,
        progress: Callable[[int], None] | None,
    ) -> None:
        scopes = self._scopes(repository, push=True)

        def attempt(n: int) -> None:
            # A broken PUT leaves its session in an unknown state: start a new one, unless the blob made it.
            if n and self.blob_exists(repository, digest):
                return
            location = self._start_upload(repository, what)
            response = self._send(
                "PUT", location.copy_merge_params({"digest": digest}), scopes, what,
                headers={"Content-Type": _OCTET, "Content-Length": str(size)},
                body=functools.partial(_body, path, 0, size), replay=False,
            )
            if response.status_code not in (201, 204):
                raise self._status_error(response, what, repository, transient=response.status_code in RETRY_STATUSES)
            if progress is not None:
                progress(size)

        self.policy.run(attempt)

    def _upload_chunked(
        self, repository: str, digest: str, size: int, path: Path | bytes, what: str,
        progress: Callable[[int], None] | None,
    ) -> None:
        scopes = self._scopes(repository, push=True)
        upload = _Upload(self._start_upload(repository, what))

        def attempt(n: int) -> None:
            if n:  # go on from what the registry says it has (or start over if it lost the session)
                resumed = self._upload_status(upload.location, scopes, what)
                if resumed is not None:
                    upload.location, upload.offset = resumed
                elif self.blob_exists(repository, digest):
                    return
                else:
                    upload.location, upload.offset = self._start_upload(repository, what), 0
            while upload.offset < size:
                self._send_chunk(upload, size, path, scopes, what, repository)
                if progress is not None:
                    progress(upload.offset)
            response = self._send(
                "PUT", upload.location.copy_merge_params({"digest": digest}), scopes, what,
                headers={"Content-Type": _OCTET, "Content-Length": "0"}, body=lambda: b"", replay=False,
            )
            if response.status_code not in (201, 204):
                raise self._status_error(response, what, repository, transient=response.status_code in RETRY_STATUSES)

        self.policy.run(attempt)

    def _send_chunk(
        self, upload: _Upload, size: int, path: Path | bytes, scopes: tuple[str, ...], what: str, repository: str
    ) -> None:
        """PATCH the next chunk, once, and move ``upload`` to where the registry says it now stands."""
        start, n = upload.offset, min(self.chunk_size, size - upload.offset)
        response = self._send(
            "PATCH", upload.location, scopes, what,
            headers={"Content-Type": _OCTET, "Content-Length": str(n), "Content-Range": f"{start}-{start + n - 1}"},
            body=functools.partial(_body, path, start, n), replay=False,
        )
        if response.status_code != 202:
            # 416: we and the registry disagree on the offset; the status check before the next attempt settles it.
            transient = response.status_code in RETRY_STATUSES or response.status_code == 416
            raise self._status_error(response, what, repository, transient=transient)
        upload.location = self._location(response, what, default=upload.location)
        end = _parse_range(response.headers.get("Range"))
        upload.offset = start + n if end is None else end + 1
        if upload.offset > size:
            raise RegistryError(
                f"{self.registry} reports {upload.offset} bytes received for a {size}-byte blob ({what})",
                "the upload session is corrupt; retry the push",
            )

    def _upload_status(
        self, location: httpx.URL, scopes: tuple[str, ...], what: str
    ) -> tuple[httpx.URL, int] | None:
        """Where an interrupted upload stands: (location, next offset), or None if the registry lost the session."""
        response = self._send("GET", location, scopes, what, replay=False)
        if response.status_code in (200, 204):
            end = _parse_range(response.headers.get("Range"))
            # "0-0" is ambiguous (0 or 1 byte); resending from 0 is always safe, the final PUT checks the digest.
            offset = 0 if end is None or end == 0 else end + 1
            return self._location(response, what, default=location), offset
        if response.status_code in RETRY_STATUSES:
            raise self._status_error(response, what, "", transient=True)
        return None

    def _location(self, response: httpx.Response, what: str, default: httpx.URL | None = None) -> httpx.URL:
        location = response.headers.get("Location")
        if not location:
            if default is not None:
                return default
            raise RegistryError(
                f"{self.registry} answered {response.status_code} without a Location header ({what})",
                "the registry does not follow the distribution spec for uploads; report it to its owner",
            )
        return response.url.join(location)  # relative or absolute, as the spec allows

    # -- requests and auth ------------------------------------------------------------------------------------

    def _connect(self) -> None:
        """The ``/v2/`` ping (once): fixes the scheme, and its challenge tells how to authenticate."""
        if self._connected:
            return
        with self._connect_lock:  # no thread sends before the challenge is learnt
            if not self._connected:
                self._auth.learn(self._transport.connect(f"connecting to {self.registry}"))
                self._connected = True

    def _send(
        self,
        method: str,
        url: str | httpx.URL,
        scopes: tuple[str, ...],
        what: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: Body | None = None,
        stream: bool = False,
        replay: bool = True,
    ) -> httpx.Response:
        """Send with auth (asking again once after a 401 with a new challenge or token) through the transport,
        which retries as the policy says when ``replay``. Returns any HTTP answer."""
        self._connect()
        target = self._transport.url(url) if isinstance(url, str) else url
        if params:
            target = target.copy_merge_params(params)

        def once() -> httpx.Response:
            request_headers = dict(headers or {})
            authorization = self._auth.authorization(scopes, target, what)
            if authorization:
                request_headers["Authorization"] = authorization
            return self._transport.send(
                method, target, what, headers=request_headers, body=body, stream=stream, replay=replay
            )

        response = once()
        if response.status_code == 401 and self._auth.renew(response, scopes, what):
            response.close()
            response = once()
        return response

    def _scopes(self, repository: str, *, push: bool = False) -> tuple[str, ...]:
        scopes = self._push_scopes.get(repository)
        if scopes is not None:
            return scopes
        return (scope(repository, "pull,push" if push else "pull"),)

    # -- errors -----------------------------------------------------------------------------------------------

    def _where(self, repository: str) -> str:
        return f"{self.registry}/{repository}"

    def _status_error(
        self, response: httpx.Response, what: str, repository: str, *, transient: bool = False
    ) -> RegistryError:
        """The answer in words, with the hint for who is asking; ``transient`` when the step may be resumed."""
        creds = self.credentials
        status = response.status_code
        detail = error_detail(response)
        challenge = " ".join(response.headers.get_list("WWW-Authenticate"))
        action = "push to" if what.startswith(("pushing", "mounting")) or repository in self._push_scopes else "pull from"
        target = self._where(repository) if repository else self.registry
        if status == 401 and creds is not None and ("insufficient_scope" in challenge or "DENIED" in detail):
            hint = f"the account {creds.username!r} may not {action} {target}; " + _ASK_ACCESS
        elif status == 401 and creds is not None:
            hint = rejected_hint(creds, self.registry, f"{action} {target}")
        elif status == 401:
            hint = LOGIN_HINT.format(registry=self.registry)
        elif status == 403:
            who = f"the account {creds.username!r}" if creds is not None and creds.username else "anonymous access"
            hint = f"{who} has no permission to {action} {target}; " + _ASK_ACCESS
        elif status == 404:
            hint = f"check that {target} exists (some registries need a repository created before the first push)"
        else:
            hint = status_hint(status, self.registry, self.policy.retries)
        return http_error(response, what, hint, transient=transient)


ClientFactory = Callable[[str], RegistryClient]
"""Makes the client for a registry host (as in a ``Reference``: ``docker.io``, ``localhost:5000``)."""


@dataclass
class _Upload:
    """Where a chunked upload stands: its session URL and the next byte the registry expects."""

    location: httpx.URL
    offset: int = 0


# -- small pure helpers -------------------------------------------------------------------------------------


def _media_type_from_body(data: bytes) -> str:
    try:
        value = json.loads(data).get("mediaType", "")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def _read_limited(response: httpx.Response, limit: int, what: str) -> bytes:
    chunks, total = [], 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > limit:
            raise RegistryError(f"manifest is larger than {limit} bytes ({what})", "this is not an image manifest")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_range(header: str | None) -> int | None:
    """The last byte offset from a ``Range: 0-N`` (or ``bytes=0-N``) upload status header."""
    if not header:
        return None
    match = re.match(r"^(?:bytes=)?(\d+)-(\d+)$", header.strip())
    return int(match.group(2)) if match else None


def _body(source: Path | bytes, offset: int, length: int) -> bytes | Iterator[bytes]:
    if isinstance(source, bytes):
        return source[offset : offset + length]
    return _file_range(Path(source), offset, length)


def _file_range(path: Path, offset: int, length: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(offset)
        remaining = length
        while remaining > 0:
            chunk = f.read(min(_IO_CHUNK, remaining))
            if not chunk:
                raise OSError(f"{path} ended {remaining} bytes early")
            remaining -= len(chunk)
            yield chunk
