"""``WWW-Authenticate`` challenges and the ``Authorization`` they call for: none, Basic, or a Bearer token.

Docker token auth: the token comes from the challenge's realm by GET with the scopes (and Basic credentials, if
any), or by an OAuth2 POST that exchanges an identity (refresh) token. A token is reused for every later request
whose scopes it covers (``pull,push`` on R covers ``pull`` on R) until shortly before it expires. Token requests
go through the registry's ``Transport``, so they are retried by the same policy; secrets never reach a message.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import httpx

from pyimage.errors import RegistryError
from pyimage.oci.auth import ENV_PASSWORD, ENV_USERNAME, Credentials
from pyimage.oci.transport import (
    Transport,
    http_error,
    is_loopback,
    netloc,
    status_hint,
)

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "LOGIN_HINT",
    "TOKEN_LEEWAY",
    "Authenticator",
    "Challenge",
    "choose_challenge",
    "covers",
    "parse_challenges",
    "rejected_hint",
    "scope",
]

TOKEN_LEEWAY = 10.0  # seconds before expiry that a cached token is considered stale
DEFAULT_TOKEN_LIFETIME = 60  # docker token-auth spec: expires_in defaults to 60 s
LOGIN_HINT = "run docker login {registry}, or pass --username and --password-stdin"


def rejected_hint(creds: Credentials, registry: str, doing: str = "") -> str:
    """What to check when the registry refuses credentials: the ones given on the command line or in the
    environment are the user's to fix (logging in again would not change them); stored ones may be stale."""
    if creds.source.startswith("--"):
        given = "--username and --password-stdin"
    elif creds.source == ENV_USERNAME:
        given = f"{ENV_USERNAME} and {ENV_PASSWORD}"
    elif creds.source.startswith("$REGISTRY_AUTH_FILE"):  # read before docker's file: `docker login` would not replace them
        return f"the registry rejected the credentials from {creds.source}; run podman login --authfile \"$REGISTRY_AUTH_FILE\" {registry} (or skopeo login), or unset REGISTRY_AUTH_FILE, or pass --username and --password-stdin"
    elif "containers/auth.json" in creds.source:
        return f"the registry rejected the credentials from {creds.source}; run podman login {registry} (or skopeo login), or pass --username and --password-stdin"
    else:
        return f"the registry rejected the credentials from {creds.source}; " + LOGIN_HINT.format(registry=registry)
    user = f" (user {creds.username!r})" if creds.username else ""
    scope_text = f"allowed to {doing}" if doing else "its scope covers the repository"
    return f"the registry rejected the user name and password given with {given}{user}: check both, or for an access token, that it is current and {scope_text}"


# RFC 9110 §11: a challenge is a scheme token, then comma-separated ``name=value`` (token or quoted string).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_BARE = re.compile(r'[^,\s"]*')  # laxer than a token: some registries send an unquoted realm URL


@dataclass(frozen=True)
class Challenge:
    """One challenge: ``scheme`` lowercased (``bearer``, ``basic``), ``params`` with lowercased names."""

    scheme: str
    params: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str:
        return next((value for key, value in self.params if key == name), "")


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Every challenge in the ``WWW-Authenticate`` values, in order (one header may hold several).

    Malformed text ends the header it is in; what was read before it is kept.
    """
    out: list[Challenge] = []
    for value in values:
        scheme: str | None = None
        params: list[tuple[str, str]] = []
        pos = 0
        while pos < len(value):
            pos = _skip(value, pos, " \t,")
            token = _TOKEN.match(value, pos)
            if token is None:
                break
            pos = _skip(value, token.end(), " \t")
            if scheme is not None and value.startswith("=", pos):
                pos = _skip(value, pos + 1, " \t")
                quoted = _QUOTED.match(value, pos)
                if quoted is not None:
                    params.append((token.group().lower(), re.sub(r"\\(.)", r"\1", quoted.group(1))))
                    pos = quoted.end()
                else:
                    bare = _BARE.match(value, pos)
                    assert bare is not None  # [^…]* matches the empty string
                    params.append((token.group().lower(), bare.group()))
                    pos = bare.end()
            else:  # a new scheme starts (a token68 after a scheme would land here too, and be ignored)
                if scheme is not None:
                    out.append(Challenge(scheme, tuple(params)))
                scheme, params = token.group().lower(), []
        if scheme is not None:
            out.append(Challenge(scheme, tuple(params)))
    return out


def choose_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """The first challenge pyimage can answer: Bearer with a realm, or Basic."""
    for challenge in challenges:
        if (challenge.scheme == "bearer" and challenge.get("realm")) or challenge.scheme == "basic":
            return challenge
    return None


def scope(repository: str, actions: str) -> str:
    return f"repository:{repository}:{actions}"


def covers(have: frozenset[str], want: frozenset[str]) -> bool:
    """Does a token asked for ``have`` also serve ``want``? (``pull,push`` on R covers ``pull`` on R.)"""
    granted = _parse_scopes(have)
    return all(actions <= granted.get(resource, set()) for resource, actions in _parse_scopes(want).items())


class Authenticator:
    """The ``Authorization`` for requests to one registry, from the challenge it sent; tokens cached per scopes.

    Safe to share between threads; ``token_requests`` counts the tokens fetched (for tests and ``--debug``).
    """

    def __init__(self, registry: str, transport: Transport, credentials: Credentials | None) -> None:
        self.registry = registry
        self.credentials = credentials
        self.challenge: Challenge | None = None  # None: anonymous, until the registry says otherwise
        self.token_requests = 0
        self._transport = transport
        self._lock = threading.Lock()
        self._tokens: dict[frozenset[str], tuple[str, float]] = {}

    @property
    def scheme(self) -> str | None:
        return self.challenge.scheme if self.challenge is not None else None

    def learn(self, values: Sequence[str]) -> Challenge | None:
        """Take the challenge from ``WWW-Authenticate`` values; None (and nothing learnt) if none is usable."""
        challenge = choose_challenge(parse_challenges(values))
        if challenge is not None:
            self.challenge = challenge
        return challenge

    def authorization(self, scopes: Sequence[str], url: httpx.URL, what: str) -> str | None:
        if netloc(url) != self._transport.base_netloc:
            return None  # never send the registry's credentials to another host (e.g. a storage redirect)
        if self.scheme == "basic" and self.credentials is not None:
            raw = f"{self.credentials.username}:{self.credentials.password}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        if self.scheme == "bearer":
            return "Bearer " + self.token(frozenset(scopes), what)
        return None

    def renew(self, response: httpx.Response, scopes: Sequence[str], what: str) -> bool:
        """After a 401: learn its challenge and say whether asking again (with new auth) can help."""
        previous = self.scheme
        challenge = self.learn(response.headers.get_list("WWW-Authenticate"))
        if challenge is None:
            return False
        if challenge.scheme == "basic":
            return previous != "basic" and self.credentials is not None
        key = frozenset(s for s in {*scopes, *challenge.get("scope").split()} if s)
        with self._lock:  # the tokens that cover these scopes were just refused
            self._tokens = {k: v for k, v in self._tokens.items() if not covers(k, key)}
        self.token(key, what)
        return True

    def token(self, scopes: frozenset[str], what: str) -> str:
        """A bearer token covering ``scopes``: from the cache if one covers them, else from the realm."""
        with self._lock:
            now = time.monotonic()
            for key, (token, expires) in self._tokens.items():
                if expires > now and covers(key, scopes):
                    return token
            token, lifetime = self._fetch(scopes, what)
            self._tokens[scopes] = (token, now + max(lifetime / 2, lifetime - TOKEN_LEEWAY))
            return token

    def _fetch(self, scopes: frozenset[str], what: str) -> tuple[str, float]:
        realm = self._realm(what)
        creds = self.credentials
        if creds is not None and realm.scheme != "https" and not (is_loopback(netloc(realm)) or self._transport.insecure):
            raise RegistryError(
                f"{self.registry} sends credentials to {realm.host} over plain HTTP ({what})",
                f"refusing; if this is a test registry, use --insecure-registry {self.registry}",
            )
        who = f" as {creds.username!r}" if creds is not None and creds.username else ""
        step = f"authenticating to {self.registry}{who} ({what})"
        service = self.challenge.get("service") if self.challenge is not None else ""
        self.token_requests += 1
        if creds is not None and creds.identity_token:
            # docker's OAuth2 path: an identity token is a refresh token, exchanged by POST.
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "service": service, "client_id": "pyimage", "scope": " ".join(sorted(scopes))}
            response = self._transport.send("POST", realm, step, form=form)
        else:
            params = [("service", service)] if service else []
            params += [("scope", s) for s in sorted(scopes)]
            headers = {}
            if creds is not None:
                params += [("account", creds.username), ("offline_token", "true"), ("client_id", "pyimage")]
                raw = f"{creds.username}:{creds.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
            response = self._transport.send("GET", realm.copy_merge_params(tuple(params)), step, headers=headers)
        try:
            return self._read_token(response, realm, step)
        finally:
            response.close()

    def _read_token(self, response: httpx.Response, realm: httpx.URL, step: str) -> tuple[str, float]:
        creds = self.credentials
        if response.status_code in (401, 403):
            if creds is None:
                raise RegistryError(f"{response.status_code} {response.reason_phrase} {step}",
                                    LOGIN_HINT.format(registry=self.registry))
            raise RegistryError(
                f"{response.status_code} {response.reason_phrase} {step}: the credentials were rejected",
                rejected_hint(creds, self.registry),
            )
        if response.status_code != 200:
            hint = status_hint(response.status_code, self.registry, self._transport.policy.retries)
            raise http_error(response, step, hint or f"the token server {realm.host} gave no token; retry later")
        try:
            data = response.json()
            token = data.get("token") or data.get("access_token")
            lifetime = float(data.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, TypeError, AttributeError):
            token, lifetime = None, 0.0
        if not isinstance(token, str) or not token:
            raise RegistryError(
                f"the token server {realm.host} gave no token ({step})",
                "it does not follow the docker token-auth spec; report it to the registry's owner",
            )
        return token, lifetime

    def _realm(self, what: str) -> httpx.URL:
        """The challenge's realm as a URL; it comes from the registry, so anything but http(s) is refused."""
        text = self.challenge.get("realm") if self.challenge is not None else ""
        try:
            realm = httpx.URL(text)
        except (httpx.InvalidURL, ValueError, TypeError):
            realm = None
        if realm is None or realm.scheme not in ("http", "https") or not realm.host:
            raise RegistryError(
                f"{self.registry} names no usable token server in its challenge ({what})",
                "the registry does not follow the docker token-auth spec; report it to the registry's owner",
            )
        return realm


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _parse_scopes(scopes: frozenset[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for item in scopes:
        resource, _, actions = item.rpartition(":")
        out.setdefault(resource, set()).update(a for a in actions.split(",") if a)
    return out
