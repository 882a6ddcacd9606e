"""HTTP to one registry host: TLS, timeouts, the ``/v2/`` ping, and the one retry policy every request obeys.

``RetryPolicy`` decides alone what is retried and how long to wait: dropped connections and timeouts, 5xx and 429
answers (honouring ``Retry-After`` up to a bound), at most ``retries`` times after the first attempt, with
exponential backoff and jitter. ``Transport.send`` applies it to requests that may be replayed; a request that
may not (an upload step with a body the registry may have half-stored) is sent once and its transient failure is
handed back as ``TransientError``, so the caller can ask the registry where it stands before going on, under
the same policy (``RetryPolicy.run``).
"""

from __future__ import annotations

import email.utils
import ipaddress
import os
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

from pyimage import __version__
from pyimage.errors import ConfigError, RegistryError

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "CA_BUNDLE_HINT",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "INSECURE_HINT",
    "RETRY_AFTER_MAX",
    "RETRY_STATUSES",
    "RetryPolicy",
    "TransientError",
    "Transport",
    "error_detail",
    "http_error",
    "is_loopback",
    "netloc",
    "retry_after",
    "status_hint",
    "transport_error",
]

DEFAULT_RETRIES = 4  # attempts after the first: 0.5 + 1 + 2 + 4 s of backoff (before jitter) before giving up
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
RETRY_AFTER_MAX = 30.0  # a longer Retry-After means "come back much later": fail now and say so
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_TIMEOUT = 120.0  # per read/write; a registry may take a while to verify a big blob's digest
CONNECT_TIMEOUT = 15.0
# Where docker and podman look for a registry's private CA; trusting what users already put there is free.
_CERTS_DIRS = ("/etc/docker/certs.d", "/etc/containers/certs.d")

INSECURE_HINT = (
    "check that the registry is running and reachable (for a registry without TLS use --insecure-registry {host}); "
    "offline, use a local base: docker-daemon:NAME:TAG (an image your Docker Engine holds, e.g. docker-daemon:python:3.12-slim), oci:DIR, docker-archive:FILE or rootfs:FILE.tar"
)
PUBLIC_HINT = (
    "check the network (or HTTPS_PROXY) from here to {host}; "
    "offline, use a local base: docker-daemon:NAME:TAG (an image your Docker Engine holds, e.g. docker-daemon:python:3.12-slim), oci:DIR, docker-archive:FILE or rootfs:FILE.tar"
)
# Registries that always speak TLS on the internet: "use plain HTTP" is never the fix for them.
_PUBLIC = ("registry-1.docker.io", "docker.io", "index.docker.io", "ghcr.io", "quay.io", "gcr.io", "mcr.microsoft.com", "public.ecr.aws")
_PUBLIC_SUFFIXES = (".pkg.dev", ".gcr.io", ".amazonaws.com", ".azurecr.io")


def unreachable_hint(host: str) -> str:
    """What to do about a registry that cannot be reached: plain HTTP is offered only for private ones."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name in _PUBLIC or name.endswith(_PUBLIC_SUFFIXES):
        return PUBLIC_HINT.format(host=host)
    if is_loopback(host):  # plain HTTP is tried there already: nothing listens
        return f"start the registry on {host} (nothing answered there over HTTPS or HTTP), or fix the reference's host and port"
    return INSECURE_HINT.format(host=host)


CA_BUNDLE_HINT = (
    "trust the registry's CA with --ca-bundle FILE (or put it in /etc/docker/certs.d/{host}/ca.crt); "
    "for a throwaway test registry, --insecure-registry {host}"
)

T = TypeVar("T")
Body = Callable[[], "bytes | Iterator[bytes]"]


class TransientError(RegistryError):
    """A failure that may pass by itself (a dropped connection, a 5xx or 429), so the step may be tried again.

    ``retry_after`` is the server's wish in seconds, if it said one; ``response`` an answer not yet read, which
    ``RetryPolicy.run`` closes before the next attempt.
    """

    def __init__(
        self, message: str, hint: str = "", *, retry_after: float | None = None, response: httpx.Response | None = None
    ) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after
        self.response = response

    def final(self) -> RegistryError:
        """The same failure once the policy gave up on it: callers up the stack must not retry it again."""
        return RegistryError(self.message, self.hint)


@dataclass(frozen=True)
class RetryPolicy:
    """The one place that says what is retried, how often and after how long; ``sleep`` is injectable for tests."""

    retries: int = DEFAULT_RETRIES
    backoff: float = BACKOFF_BASE
    backoff_cap: float = BACKOFF_CAP
    retry_after_max: float = RETRY_AFTER_MAX
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry ``attempt + 1``, or None: out of attempts, or the server asks too long."""
        if attempt >= self.retries or (retry_after is not None and retry_after > self.retry_after_max):
            return None
        backoff = min(self.backoff_cap, self.backoff * (2**attempt))
        jittered = backoff * (0.5 + random.random() / 2)  # parallel transfers must not retry in lockstep
        return jittered if retry_after is None else max(retry_after, jittered)

    def run(self, attempt: Callable[[int], T]) -> T:
        """``attempt(n)`` for n = 0, 1, …, until it returns; a ``TransientError`` is retried while the policy
        allows and re-raised when it does not, anything else propagates at once. ``n > 0`` tells the attempt it
        follows a failure, so it can first find out how far the last one got."""
        n = 0
        while True:
            try:
                return attempt(n)
            except TransientError as exc:
                wait = self.delay(n, exc.retry_after)
                if wait is None:
                    raise
                if exc.response is not None:
                    exc.response.close()
                self.sleep(wait)
                n += 1


class Transport:
    """Requests to one registry host (and the token realm it names), with its TLS rules and the retry policy.

    HTTPS always, verified against the system roots plus ``ca_bundle`` and docker's ``certs.d`` for the host;
    ``insecure`` (docker's ``--insecure-registry``) allows an unverified certificate and plain HTTP for this host
    only, and loopback hosts may use plain HTTP anyway (HTTPS is tried first). Safe to share between threads.
    """

    def __init__(
        self,
        host: str,
        *,
        name: str | None = None,
        policy: RetryPolicy | None = None,
        insecure: bool = False,
        ca_bundle: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.host = host
        self.name = name or host  # what messages call it: "docker.io" rather than its API host
        self.policy = policy or RetryPolicy()
        self.insecure = insecure
        self.base: str | None = None  # scheme://host once the ping found which scheme answers
        self.base_netloc = ""
        self._lock = threading.Lock()
        self._challenges: list[str] = []
        headers = {"User-Agent": f"pyimage/{__version__} httpx/{httpx.__version__}"}
        limits = httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT))
        self._http = httpx.Client(verify=_ssl_context(host, ca_bundle), timeout=limits, headers=headers)
        self._unverified = httpx.Client(verify=False, timeout=limits, headers=headers) if insecure else None

    def close(self) -> None:
        self._http.close()
        if self._unverified is not None:
            self._unverified.close()

    def connect(self, what: str) -> list[str]:
        """Ping ``/v2/`` once per transport to fix the scheme; returns the ``WWW-Authenticate`` values it sent.

        Plain HTTP is tried only for loopback or insecure hosts, and never after a certificate was distrusted.
        """
        if self.base is not None:
            return self._challenges
        with self._lock:
            if self.base is not None:
                return self._challenges
            url = httpx.URL(f"https://{self.host}/v2/")
            response: httpx.Response | None = None
            if is_loopback(self.host) or self.insecure:
                try:  # a first probe, not retried: where HTTPS does not answer, plain HTTP is allowed
                    response = self._client_for(url).get(url)
                except httpx.TransportError as exc:
                    if _is_cert_error(exc):  # HTTPS is there but not trusted: never fall back past that
                        raise transport_error(exc, what, self.host) from None
                    url = httpx.URL(f"http://{self.host}/v2/")
            if response is None or response.status_code in RETRY_STATUSES:
                if response is not None:
                    response.close()
                response = self.send("GET", url, what)
            response.close()
            if response.status_code in RETRY_STATUSES:
                raise http_error(response, what, status_hint(response.status_code, self.name, self.policy.retries))
            self._challenges = response.headers.get_list("WWW-Authenticate") if response.status_code == 401 else []
            self.base_netloc = netloc(url)
            self.base = f"{url.scheme}://{self.host}"
            return self._challenges

    def url(self, path: str) -> httpx.URL:
        if self.base is None:
            raise RuntimeError("Transport.connect() must come first")
        return httpx.URL(f"{self.base}{path}")

    def send(
        self,
        method: str,
        url: httpx.URL,
        what: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
        form: Mapping[str, str] | None = None,
        stream: bool = False,
        replay: bool = True,
    ) -> httpx.Response:
        """One request; any HTTP answer is returned (a 5xx/429 after the retries the policy allows).

        ``replay`` (the default) retries it as the policy says; ``replay=False`` sends it once and raises a
        dropped connection as ``TransientError``. Other connection failures are one ``RegistryError``.
        """
        client = self._client_for(url)

        def attempt(_: int) -> httpx.Response:
            content = body() if body is not None else None
            request = client.build_request(method, url, headers=headers, content=content, data=form)
            try:
                response = client.send(request, stream=stream, follow_redirects=method in ("GET", "HEAD"))
            except httpx.TransportError as exc:
                raise transport_error(exc, what, self._shown(url)) from None
            if replay and response.status_code in RETRY_STATUSES:
                raise TransientError(what, retry_after=retry_after(response), response=response)
            return response

        if not replay:
            return attempt(0)
        try:
            return self.policy.run(attempt)
        except TransientError as exc:
            if exc.response is not None:
                return exc.response  # the caller words the error: it knows the step and the repository
            raise exc.final() from None

    def _shown(self, url: httpx.URL) -> str:
        """The host to name in an error: the registry as the user wrote it, or the other host (a token realm)."""
        return self.host if netloc(url) == netloc(f"https://{self.host}") else netloc(url)

    def _client_for(self, url: httpx.URL) -> httpx.Client:
        if self._unverified is not None and netloc(url) == netloc(f"https://{self.host}"):
            return self._unverified
        return self._http


# -- errors a user can act on -------------------------------------------------------------------------------


def transport_error(exc: httpx.TransportError, what: str, host: str) -> RegistryError:
    """The connection failure in words; a ``TransientError`` when trying again may help."""
    reason = _reason(exc)
    if _is_cert_error(exc):
        return RegistryError(f"TLS certificate of {host} is not trusted ({reason}) while {what}",
                             CA_BUNDLE_HINT.format(host=host))
    if _is_tls_protocol_error(exc):
        return RegistryError(f"TLS handshake with {host} failed ({reason}) while {what}",
                             f"if {host} serves plain HTTP, use --insecure-registry {host}")
    if isinstance(exc, httpx.TimeoutException):
        message, hint = f"timed out talking to {host} while {what}", unreachable_hint(host)
    elif isinstance(exc, httpx.ConnectError):
        message, hint = f"cannot connect to {host}: {reason}", unreachable_hint(host)
    else:
        message, hint = f"connection to {host} failed while {what}: {reason}", "retry; check the network"
    if isinstance(exc, (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)):
        return TransientError(message, hint)
    return RegistryError(message, hint)


def http_error(response: httpx.Response, what: str, hint: str, *, transient: bool = False) -> RegistryError:
    """``"<status> <reason> <what>: <the registry's words>"``; transient when the step may be resumed."""
    detail = error_detail(response)
    message = f"{response.status_code} {response.reason_phrase} {what}" + (f": {detail}" if detail else "")
    if transient:
        return TransientError(message, hint, retry_after=retry_after(response))
    return RegistryError(message, hint)


def status_hint(status: int, registry: str, retries: int) -> str:
    """The hint for answers that say nothing of who is asking (rate limits, server failures)."""
    if status == 429:
        return "the registry is rate-limiting; wait and retry (log in for a higher limit on Docker Hub)"
    if status >= 500:
        return f"{registry} failed ({retries} retries); retry later or check the registry's health"
    return ""


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None when absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def error_detail(response: httpx.Response) -> str:
    """The registry's own words from an ``{"errors": [...]}`` body, short and single-line."""
    try:
        if not response.is_stream_consumed:
            response.read()
        errors = response.json().get("errors") or []
        parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)]
    except (ValueError, AttributeError, httpx.HTTPError):
        return ""
    text = " ".join("; ".join(p for p in parts if p).split())
    return text if len(text) <= 200 else text[:199] + "…"


# -- hosts and TLS ------------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (with or without a port): the only hosts plain HTTP is ok for."""
    name = _hostname(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def netloc(url: httpx.URL | str) -> str:
    """``host[:port]`` of a URL, lowercased, IPv6 in brackets: what "the same host" is compared by."""
    url = httpx.URL(url)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return (f"{host}:{url.port}" if url.port else host).lower()


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") > 1:
        return host  # a bare IPv6 address
    return host.split(":", 1)[0]


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


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return re.sub(r"\s*\(_ssl\.c:\d+\)|^\[SSL: [A-Z_]+\]\s*", "", text)
