"""A client for the OCI distribution API (``/v2/``): manifests and blobs, with docker's auth, TLS and retry rules.

One ``RegistryClient`` talks to one registry host. It knows nothing of images: ``push.py`` and ``pull.py`` build
on it. Every failure a user can act on becomes one ``RegistryError`` naming the registry, the repository and the
step, with a hint; secrets never appear in messages.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import ipaddress
import os
import random
import re
import ssl
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import httpx

from pyimage import __version__
from pyimage.errors import ConfigError, RegistryError
from pyimage.oci.auth import Credentials, lookup_credentials
from pyimage.oci.model import (
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    parse_digest,
)
from pyimage.oci.reference import DOCKER_HUB, DOCKER_HUB_API

__all__ = [
    "RegistryClient",
    "ClientFactory",
    "default_client_factory",
    "MANIFEST_ACCEPT",
    "MONOLITHIC_MAX",
    "CHUNK_SIZE",
    "DEFAULT_RETRIES",
    "CA_BUNDLE_HINT",
    "INSECURE_HINT",
    "LOGIN_HINT",
    "is_loopback",
    "check_digest",
    "short_digest",
]

MANIFEST_ACCEPT = (MEDIA_OCI_MANIFEST, MEDIA_OCI_INDEX, MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_LIST)
MEDIA_DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.v1+prettyjws")
MONOLITHIC_MAX = 32 * 1024 * 1024  # above this a blob goes in chunks, so a dropped connection costs one chunk
CHUNK_SIZE = 16 * 1024 * 1024  # per PATCH; big enough that request overhead is noise, small enough to resume cheaply
MAX_MANIFEST = 4 * 1024 * 1024  # the distribution-spec lets registries refuse larger; we refuse to read larger
DEFAULT_RETRIES = 4  # attempts after the first: 0.5 + 1 + 2 + 4 s of backoff before giving up
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
RETRY_AFTER_MAX = 30.0  # a longer Retry-After means "come back much later": fail now and say so
TOKEN_LEEWAY = 10.0  # seconds before expiry that a cached token is considered stale
DEFAULT_TOKEN_LIFETIME = 60  # docker token-auth spec: expires_in defaults to 60 s
_IO_CHUNK = 1024 * 1024
_OCTET = "application/octet-stream"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_CHALLENGE_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')
# Where docker and podman look for a registry's private CA; trusting what users already put there is free.
_CERTS_DIRS = ("/etc/docker/certs.d", "/etc/containers/certs.d")

_ASK_ACCESS = "ask for access, or use a repository you own"
LOGIN_HINT = "run docker login {registry}, or pass --username and --password-stdin"
INSECURE_HINT = (
    "check that the registry is running and reachable (for a registry without TLS use --insecure-registry {host}); "
    "offline, use a local base: oci:DIR, docker-archive:FILE or rootfs:FILE.tar"
)
CA_BUNDLE_HINT = (
    "trust the registry's CA with --ca-bundle FILE (or put it in /etc/docker/certs.d/{host}/ca.crt); "
    "for a throwaway test registry, --insecure-registry {host}"
)


def default_client_factory(registry: str) -> RegistryClient:
    """A verified-TLS client with the credentials docker/podman/skopeo would use for ``registry``."""
    return RegistryClient(registry, credentials=lookup_credentials(registry))


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (with or without a port): the only hosts plain HTTP is ok for."""
    name = _hostname(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


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
        timeout: float = 120.0,  # per read/write; a registry may take a while to verify a big blob's digest
    ) -> None:
        self.registry = registry_host
        self.host = DOCKER_HUB_API if registry_host == DOCKER_HUB else registry_host
        self.credentials = credentials
        self.insecure = insecure
        self.retries = max(0, retries)
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.monolithic_max = monolithic_max
        self.chunk_size = max(1, chunk_size)
        self._loopback = is_loopback(self.host)
        self._lock = threading.RLock()
        self._auth_lock = threading.Lock()
        self._base: str | None = None
        self._base_netloc = ""
        self._scheme: str | None = None  # "basic", "bearer" or None (anonymous) once the registry has said
        self._realm: str = ""
        self._service: str = ""
        self._tokens: dict[frozenset[str], tuple[str, float]] = {}
        self._push_scopes: dict[str, tuple[str, ...]] = {}
        self.token_requests = 0  # how many tokens were fetched; lets tests and --debug see the cache work
        headers = {"User-Agent": f"pyimage/{__version__} httpx/{httpx.__version__}"}
        limits = httpx.Timeout(timeout, connect=min(timeout, 15.0))
        self._http = httpx.Client(verify=_ssl_context(self.host, ca_bundle), timeout=limits, headers=headers)
        self._http_unverified = (
            httpx.Client(verify=False, timeout=limits, headers=headers) if insecure else None  # noqa: S501
        )

    # -- lifecycle -------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()
        if self._http_unverified is not None:
            self._http_unverified.close()

    def __enter__(self) -> RegistryClient:
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
        scopes = (_scope(repository, "pull,push"), *(_scope(r, "pull") for r in mount_from if r != repository))
        self._push_scopes[repository] = scopes
        self._connect()
        if self._scheme == "bearer":
            self._token(frozenset(scopes), f"pushing to {self._where(repository)}")

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
                    f"{shown} not found ({_error_detail(response) or 'manifest unknown'})",
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
        if repository in self._push_scopes:  # part of a push: say so, that is the step the user ran
            what = f"pushing blob {short_digest(digest)} to {self._where(repository)}"
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
        """Download a blob to ``dest``, verified; it appears there whole (temp file + rename) or not at all."""
        check_digest(digest)
        dest = Path(dest)
        what = f"pulling blob {short_digest(digest)} from {self._where(repository)}"
        algo, expected = digest.split(":", 1)
        dest.parent.mkdir(parents=True, exist_ok=True)
        failures = 0
        while True:
            fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out:
                    response = self._send(
                        "GET", f"/v2/{repository}/blobs/{digest}", self._scopes(repository), what,
                        headers={"Accept-Encoding": "identity"}, stream=True,
                    )
                    with contextlib.closing(response):
                        if response.status_code != 200:
                            raise self._status_error(response, what, repository)
                        hasher, received = hashlib.new(algo), 0
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
                    out.flush()
                    os.fsync(out.fileno())
                if hasher.hexdigest() != expected or (size is not None and received != size):
                    raise RegistryError(
                        f"blob {short_digest(digest)} from {self._where(repository)} does not match its digest",
                        "the registry or a proxy served the wrong bytes; retry, or report it to the registry's owner",
                    )
                os.replace(tmp, dest)
                return dest
            except httpx.TransportError as exc:
                # The response started and then broke off: start the download again (bounded).
                if failures >= self.retries or not _retryable(exc):
                    raise self._transport_error(exc, what) from None
                self._sleep(failures)
                failures += 1
            finally:
                tmp.unlink(missing_ok=True)

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-repository mount: True if the registry linked the blob (201), False if it needs an upload (202)."""
        check_digest(digest)
        what = f"mounting blob {short_digest(digest)} from {from_repository} into {self._where(repository)}"
        scopes = self._push_scopes.get(repository, ())
        if _scope(from_repository, "pull") not in scopes:
            scopes = (_scope(repository, "pull,push"), _scope(from_repository, "pull"))
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

        ``progress(n)`` is called with the bytes the registry has acknowledged so far.
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
        """PUT a manifest or index under a tag or its digest; returns its digest."""
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

    # -- uploads ----------------------------------------------------------------------------------------------

    def _start_upload(self, repository: str, what: str) -> httpx.URL:
        response = self._send("POST", f"/v2/{repository}/blobs/uploads/", self._scopes(repository, push=True), what)
        if response.status_code != 202:
            raise self._status_error(response, what, repository)
        return self._location(response, what)

    def _upload_monolithic(
        self, repository: str, digest: str, size: int, path: Path | bytes, what: str,
        progress: Callable[[int], None] | None,
    ) -> None:
        failures = 0
        while True:
            location = self._start_upload(repository, what)
            try:
                response = self._send(
                    "PUT", location.copy_merge_params({"digest": digest}), self._scopes(repository, push=True), what,
                    headers={"Content-Type": _OCTET, "Content-Length": str(size)},
                    body=functools.partial(_body, path, 0, size), retry=False,
                )
                if response.status_code in (201, 204):
                    if progress is not None:
                        progress(size)
                    return
                failure = self._status_error(response, what, repository)
            except RegistryError as exc:
                failure = exc
            if not _transient(failure) or failures >= self.retries:
                raise failure
            # A broken PUT leaves its session in an unknown state: start a new one (unless the blob made it).
            self._sleep(failures)
            failures += 1
            if self.blob_exists(repository, digest):
                return

    def _upload_chunked(
        self, repository: str, digest: str, size: int, path: Path | bytes, what: str,
        progress: Callable[[int], None] | None,
    ) -> None:
        scopes = self._scopes(repository, push=True)
        location = self._start_upload(repository, what)
        offset, failures = 0, 0
        while True:
            try:
                if offset < size:
                    start, n = offset, min(self.chunk_size, size - offset)
                    response = self._send(
                        "PATCH", location, scopes, what,
                        headers={
                            "Content-Type": _OCTET,
                            "Content-Length": str(n),
                            "Content-Range": f"{start}-{start + n - 1}",
                        },
                        body=functools.partial(_body, path, start, n), retry=False,
                    )
                    if response.status_code == 202:
                        location = self._location(response, what, default=location)
                        end = _parse_range(response.headers.get("Range"))
                        offset = start + n if end is None else end + 1
                        if offset > size:
                            raise RegistryError(
                                f"{self.registry} reports {offset} bytes received for a {size}-byte blob ({what})",
                                "the upload session is corrupt; retry the push",
                            )
                        if progress is not None:
                            progress(offset)
                        continue
                else:
                    response = self._send(
                        "PUT", location.copy_merge_params({"digest": digest}), scopes, what,
                        headers={"Content-Type": _OCTET, "Content-Length": "0"}, body=lambda: b"", retry=False,
                    )
                    if response.status_code in (201, 204):
                        return
                failure = self._status_error(response, what, repository)
                if response.status_code == 416:  # we and the registry disagree on the offset: ask it
                    failure.transient = True  # type: ignore[attr-defined]
            except RegistryError as exc:
                failure = exc
            if not _transient(failure):
                raise failure
            # Transient: back off, then go on from what the registry says it has (or start over if it lost it).
            while True:
                if failures >= self.retries:
                    raise failure
                self._sleep(failures)
                failures += 1
                try:
                    resumed = self._upload_status(location, scopes, what)
                    if resumed is not None:
                        location, offset = resumed
                    elif self.blob_exists(repository, digest):
                        return
                    else:
                        location, offset = self._start_upload(repository, what), 0
                    break
                except RegistryError as exc:
                    if not _transient(exc):
                        raise
                    failure = exc

    def _upload_status(
        self, location: httpx.URL, scopes: tuple[str, ...], what: str
    ) -> tuple[httpx.URL, int] | None:
        """Where an interrupted upload stands: (location, next offset), or None if the registry lost the session."""
        response = self._send("GET", location, scopes, what, retry=False)
        if response.status_code in (200, 204):
            end = _parse_range(response.headers.get("Range"))
            # "0-0" is ambiguous (0 or 1 byte); resending from 0 is always safe, the final PUT checks the digest.
            offset = 0 if end is None or end == 0 else end + 1
            return self._location(response, what, default=location), offset
        if response.status_code in _RETRY_STATUSES:
            raise self._status_error(response, what, "")
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

    # -- requests, retries and auth ---------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str | httpx.URL,
        scopes: tuple[str, ...],
        what: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: Callable[[], bytes | Iterator[bytes]] | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> httpx.Response:
        """Send with auth and retries. Returns any HTTP response; raises ``RegistryError`` for transport failures."""
        self._connect()
        target = httpx.URL(f"{self._base}{url}") if isinstance(url, str) else url
        if params:
            target = target.copy_merge_params(params)
        attempt, reauthed = 0, False
        while True:
            request_headers = dict(headers or {})
            authorization = self._authorization(scopes, target, what)
            if authorization:
                request_headers["Authorization"] = authorization
            client = self._client_for(target)
            request = client.build_request(
                method, target, headers=request_headers, content=body() if body is not None else None
            )
            try:
                response = client.send(request, stream=stream, follow_redirects=method in ("GET", "HEAD"))
            except httpx.TransportError as exc:
                if retry and _retryable(exc) and attempt < self.retries:
                    self._sleep(attempt)
                    attempt += 1
                    continue
                raise self._transport_error(exc, what) from None
            if response.status_code == 401 and not reauthed and self._on_challenge(response, scopes, what):
                response.close()
                reauthed = True
                continue
            if response.status_code in _RETRY_STATUSES:
                delay = self._retry_delay(attempt, response)
                if retry and delay is not None and attempt < self.retries:
                    response.close()
                    time.sleep(delay)
                    attempt += 1
                    continue
            return response

    def _client_for(self, url: httpx.URL) -> httpx.Client:
        if self._http_unverified is not None and _netloc(url) == _netloc(f"https://{self.host}"):
            return self._http_unverified
        return self._http

    def _connect(self) -> None:
        """Find the scheme (https, or http where allowed) and the auth scheme, with one ``GET /v2/``."""
        if self._base is not None:
            return
        with self._lock:
            if self._base is not None:
                return
            schemes = ("https", "http") if (self._loopback or self.insecure) else ("https",)
            for scheme in schemes:
                url = httpx.URL(f"{scheme}://{self.host}/v2/")
                response = self._ping(url, fallback=scheme != schemes[-1])
                if response is None:
                    continue
                if response.status_code == 401:
                    self._read_challenge(response)
                elif response.status_code in _RETRY_STATUSES:
                    raise self._status_error(response, f"connecting to {self.registry}", "")
                self._base_netloc = _netloc(url)
                self._base = f"{scheme}://{self.host}"
                return

    def _ping(self, url: httpx.URL, *, fallback: bool) -> httpx.Response | None:
        """``GET /v2/`` with retries; None means "not here, try the next scheme" (only when ``fallback``)."""
        client = self._client_for(url)
        attempt = 0
        while True:
            try:
                response = client.get(url)
            except httpx.TransportError as exc:
                if fallback and not _is_cert_error(exc):
                    return None  # no HTTPS here (or not up yet): plain HTTP is allowed for this host, and retried
                if _retryable(exc) and attempt < self.retries:
                    self._sleep(attempt)
                    attempt += 1
                    continue
                raise self._transport_error(exc, f"connecting to {self.registry}") from None
            delay = self._retry_delay(attempt, response) if response.status_code in _RETRY_STATUSES else None
            if delay is None or attempt >= self.retries:
                return response
            response.close()
            time.sleep(delay)
            attempt += 1

    def _read_challenge(self, response: httpx.Response) -> dict[str, str] | None:
        for header in response.headers.get_list("WWW-Authenticate"):
            scheme, _, rest = header.strip().partition(" ")
            params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                      for m in _CHALLENGE_PARAM.finditer(rest)}
            if scheme.lower() == "bearer" and params.get("realm"):
                self._scheme, self._realm, self._service = "bearer", params["realm"], params.get("service", "")
                return params
            if scheme.lower() == "basic":
                self._scheme = "basic"
                return params
        return None

    def _on_challenge(self, response: httpx.Response, scopes: tuple[str, ...], what: str) -> bool:
        """A 401: learn the challenge and say whether asking again (with new auth) can help."""
        previous = self._scheme
        params = self._read_challenge(response)
        if params is None:
            return False
        if self._scheme == "basic":
            return previous != "basic" and self.credentials is not None
        wanted = set(scopes) | set((params.get("scope") or "").split())
        key = frozenset(s for s in wanted if s)
        with self._auth_lock:
            self._tokens = {k: v for k, v in self._tokens.items() if not _covers(k, key)}
        self._token(key, what)
        return True

    def _authorization(self, scopes: tuple[str, ...], url: httpx.URL, what: str) -> str | None:
        if _netloc(url) != self._base_netloc:
            return None  # never send the registry's credentials to another host (e.g. a storage redirect)
        if self._scheme == "basic" and self.credentials is not None:
            raw = f"{self.credentials.username}:{self.credentials.password}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        if self._scheme == "bearer":
            return "Bearer " + self._token(frozenset(scopes), what)
        return None

    def _token(self, scopes: frozenset[str], what: str) -> str:
        """A bearer token covering ``scopes``: from the cache if one covers them, else from the realm."""
        with self._auth_lock:
            now = time.monotonic()
            for key, (token, expires) in self._tokens.items():
                if expires > now and _covers(key, scopes):
                    return token
            token, lifetime = self._fetch_token(scopes, what)
            self._tokens[scopes] = (token, now + max(lifetime / 2, lifetime - TOKEN_LEEWAY))
            return token

    def _fetch_token(self, scopes: frozenset[str], what: str) -> tuple[str, float]:
        realm = httpx.URL(self._realm)
        creds = self.credentials
        if creds is not None and realm.scheme != "https" and not (is_loopback(_netloc(realm)) or self.insecure):
            raise RegistryError(
                f"{self.registry} sends credentials to {realm.host} over plain HTTP ({what})",
                f"refusing; if this is a test registry, use --insecure-registry {self.registry}",
            )
        who = f" as {creds.username!r}" if creds is not None and creds.username else ""
        step = f"authenticating to {self.registry}{who} ({what})"
        attempt = 0
        while True:
            self.token_requests += 1
            try:
                if creds is not None and creds.identity_token:
                    # docker's OAuth2 path: an identity token is a refresh token, exchanged by POST.
                    form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                            "service": self._service, "client_id": "pyimage", "scope": " ".join(sorted(scopes))}
                    response = self._http.post(realm, data=form)
                else:
                    params: list[tuple[str, str | int | float | bool | None]] = (
                        [("service", self._service)] if self._service else []
                    )
                    params += [("scope", s) for s in sorted(scopes)]
                    auth = None
                    if creds is not None:
                        params += [("account", creds.username), ("offline_token", "true"), ("client_id", "pyimage")]
                        auth = httpx.BasicAuth(creds.username, creds.password)
                    response = self._http.get(realm, params=params, auth=auth)
            except httpx.TransportError as exc:
                if _retryable(exc) and attempt < self.retries:
                    self._sleep(attempt)
                    attempt += 1
                    continue
                raise self._transport_error(exc, step, host=_netloc(realm)) from None
            delay = self._retry_delay(attempt, response) if response.status_code in _RETRY_STATUSES else None
            if delay is not None and attempt < self.retries:
                time.sleep(delay)
                attempt += 1
                continue
            break
        if response.status_code in (401, 403):
            if creds is None:
                raise RegistryError(f"{response.status_code} {response.reason_phrase} {step}",
                                    LOGIN_HINT.format(registry=self.registry))
            raise RegistryError(
                f"{response.status_code} {response.reason_phrase} {step}: the credentials were rejected",
                f"check the credentials from {creds.source}; " + LOGIN_HINT.format(registry=self.registry),
            )
        if response.status_code != 200:
            raise self._status_error(response, step, "")
        try:
            data = response.json()
            token = data.get("token") or data.get("access_token")
            lifetime = float(data.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError):
            token, lifetime = None, 0.0
        if not isinstance(token, str) or not token:
            raise RegistryError(
                f"the token server {realm.host} gave no token ({step})",
                "it does not follow the docker token-auth spec; report it to the registry's owner",
            )
        return token, lifetime

    def _scopes(self, repository: str, *, push: bool = False) -> tuple[str, ...]:
        scopes = self._push_scopes.get(repository)
        if scopes is not None:
            return scopes
        return (_scope(repository, "pull,push" if push else "pull"),)

    # -- errors and timing ------------------------------------------------------------------------------------

    def _where(self, repository: str) -> str:
        return f"{self.registry}/{repository}"

    def _sleep(self, attempt: int) -> None:
        delay = min(self.backoff_cap, self.backoff * (2**attempt))
        time.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter: parallel uploads should not retry in lockstep

    def _retry_delay(self, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before retrying a 429/5xx, or None when Retry-After asks for too long."""
        backoff = min(self.backoff_cap, self.backoff * (2**attempt))
        header = response.headers.get("Retry-After", "").strip()
        if header.isdigit():
            wanted = float(header)
            return None if wanted > RETRY_AFTER_MAX else max(wanted, backoff)
        return backoff

    def _transport_error(self, exc: httpx.TransportError, what: str, host: str | None = None) -> RegistryError:
        error = self._describe_transport_error(exc, what, host or self.host)
        error.transient = _retryable(exc)  # type: ignore[attr-defined]
        return error

    def _describe_transport_error(self, exc: httpx.TransportError, what: str, host: str) -> RegistryError:
        reason = _reason(exc)
        if _is_cert_error(exc):
            return RegistryError(
                f"TLS certificate of {host} is not trusted ({reason}) while {what}",
                CA_BUNDLE_HINT.format(host=host),
            )
        if _is_tls_protocol_error(exc):
            return RegistryError(
                f"TLS handshake with {host} failed ({reason}) while {what}",
                f"if {host} serves plain HTTP, use --insecure-registry {host}",
            )
        if isinstance(exc, httpx.TimeoutException):
            return RegistryError(f"timed out talking to {host} while {what}", INSECURE_HINT.format(host=host))
        if isinstance(exc, httpx.ConnectError):
            return RegistryError(f"cannot connect to {host}: {reason}", INSECURE_HINT.format(host=host))
        return RegistryError(f"connection to {host} failed while {what}: {reason}", "retry; check the network")

    def _status_error(self, response: httpx.Response, what: str, repository: str) -> RegistryError:
        error = self._describe_status_error(response, what, repository)
        transient = response.status_code in _RETRY_STATUSES and self._retry_delay(0, response) is not None
        error.transient = transient  # type: ignore[attr-defined]
        return error

    def _describe_status_error(self, response: httpx.Response, what: str, repository: str) -> RegistryError:
        detail = _error_detail(response)
        message = f"{response.status_code} {response.reason_phrase} {what}" + (f": {detail}" if detail else "")
        creds = self.credentials
        status = response.status_code
        challenge = " ".join(response.headers.get_list("WWW-Authenticate"))
        action = "push to" if what.startswith(("pushing", "mounting")) else "pull from"
        target = self._where(repository) if repository else self.registry
        if status == 401 and creds is not None and ("insufficient_scope" in challenge or "DENIED" in detail):
            hint = f"the account {creds.username!r} may not {action} {target}; " + _ASK_ACCESS
        elif status == 401 and creds is not None:
            hint = f"the registry rejected the credentials from {creds.source}; " + LOGIN_HINT.format(
                registry=self.registry)
        elif status == 401:
            hint = LOGIN_HINT.format(registry=self.registry)
        elif status == 403:
            who = f"the account {creds.username!r}" if creds is not None and creds.username else "anonymous access"
            hint = f"{who} has no permission to {action} {target}; " + _ASK_ACCESS
        elif status == 404:
            hint = f"check that {target} exists (some registries need a repository created before the first push)"
        elif status == 429:
            hint = "the registry is rate-limiting; wait and retry (log in for a higher limit on Docker Hub)"
        elif status >= 500:
            hint = f"{self.registry} failed ({self.retries} retries); retry later or check the registry's health"
        else:
            hint = ""
        return RegistryError(message, hint)


ClientFactory = Callable[[str], RegistryClient]
"""Makes the client for a registry host (as in a ``Reference``: ``docker.io``, ``localhost:5000``)."""


# -- small pure helpers -------------------------------------------------------------------------------------


def _transient(error: RegistryError) -> bool:
    """Whether a failure may go away by itself (connection drop, 5xx, 429), so an upload should resume."""
    return bool(getattr(error, "transient", False))


def _scope(repository: str, actions: str) -> str:
    return f"repository:{repository}:{actions}"


def _parse_scopes(scopes: frozenset[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for scope in scopes:
        resource, _, actions = scope.rpartition(":")
        out.setdefault(resource, set()).update(a for a in actions.split(",") if a)
    return out


def _covers(have: frozenset[str], want: frozenset[str]) -> bool:
    """Does a token asked for ``have`` also serve ``want``? (``pull,push`` on R covers ``pull`` on R.)"""
    granted = _parse_scopes(have)
    return all(actions <= granted.get(resource, set()) for resource, actions in _parse_scopes(want).items())


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") > 1:
        return host  # a bare IPv6 address
    return host.split(":", 1)[0]


def _netloc(url: httpx.URL | str) -> str:
    url = httpx.URL(url)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return (f"{host}:{url.port}" if url.port else host).lower()


def _ssl_context(host: str, ca_bundle: str | os.PathLike[str] | None) -> ssl.SSLContext | bool:
    """Verification always on: the system/certifi roots, plus ``ca_bundle`` and docker's certs.d for this host."""
    extra = [Path(ca_bundle)] if ca_bundle else []
    for base in _CERTS_DIRS:
        folder = Path(base) / host
        if folder.is_dir():
            extra += sorted(p for p in folder.iterdir() if p.suffix == ".crt")
    if not extra:
        return True
    context = httpx.create_ssl_context()
    for path in extra:
        try:
            if path.is_dir():
                context.load_verify_locations(capath=str(path))
            else:
                context.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the CA bundle {path} for {host}: {getattr(exc, 'strerror', None) or exc}",
                "give a PEM file with the registry's CA certificate",
            ) from None
    return context


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_cert_error(exc: BaseException) -> bool:
    return any(
        isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e)
        for e in _exception_chain(exc)
    )


def _is_tls_protocol_error(exc: BaseException) -> bool:
    """A TLS failure that is not about trust: typically HTTPS spoken to a plain-HTTP server."""
    if _is_cert_error(exc):
        return False
    return any(
        isinstance(e, ssl.SSLError) or "WRONG_VERSION_NUMBER" in str(e) or "record layer failure" in str(e)
        for e in _exception_chain(exc)
    )


def _retryable(exc: httpx.TransportError) -> bool:
    if _is_cert_error(exc) or _is_tls_protocol_error(exc):
        return False
    return isinstance(exc, (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError))


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return re.sub(r"\s*\(_ssl\.c:\d+\)|^\[SSL: [A-Z_]+\]\s*", "", text)


def _error_detail(response: httpx.Response) -> str:
    """The registry's own words from an ``{"errors": [...]}`` body, short and single-line."""
    try:
        if not response.is_stream_consumed:
            response.read()
        errors = response.json().get("errors") or []
        parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)]
    except (ValueError, AttributeError, httpx.HTTPError):
        return ""
    text = "; ".join(p for p in parts if p)
    return text if len(text) <= 200 else text[:199] + "…"


def _media_type_from_body(data: bytes) -> str:
    import json

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
