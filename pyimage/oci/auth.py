"""Registry credentials, found where docker, podman and skopeo users already keep them.

Order (first hit wins): explicit username/password > ``PYIMAGE_REGISTRY_USERNAME``/``PYIMAGE_REGISTRY_PASSWORD`` >
containers auth files (``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
``~/.config/containers/auth.json``) > docker's ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``.
In each file a ``credHelpers`` entry for the host wins over ``auths``, and ``credsStore`` is the fallback, as in docker.
Secrets never reach a repr, a log line or an exception message.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pyimage.tools as tools
from pyimage.errors import BuildError, ConfigError, RegistryError

__all__ = ["Credentials", "lookup_credentials", "auth_file_candidates", "ENV_USERNAME", "ENV_PASSWORD"]

ENV_USERNAME = "PYIMAGE_REGISTRY_USERNAME"
ENV_PASSWORD = "PYIMAGE_REGISTRY_PASSWORD"
_HELPER_TIMEOUT = 30  # seconds; helpers may prompt a keychain unlock, but must not hang a build forever
_TOKEN_USERNAME = "<token>"  # credential helpers' marker for an identity (refresh) token

# docker stores Docker Hub credentials under its v1 index URL; users and other tools use these spellings too.
_DOCKER_HUB_KEYS = (
    "https://index.docker.io/v1/",
    "index.docker.io",
    "docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
)

_log = logging.getLogger(__name__)


class _Note(logging.Handler):
    """This module's warnings as the command line's other notes: one ``note:`` line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"note: {record.getMessage()}\n")
        sys.stderr.flush()


_log.addHandler(_Note())
_log.propagate = False


@dataclass(frozen=True, repr=False)
class Credentials:
    """A username with a password, or an identity (OAuth2 refresh) token; ``source`` says where they came from.

    ``repr`` and ``str`` show the username and source only, so a value can be logged or put in an error safely.
    """

    username: str = ""
    password: str = ""
    identity_token: str = ""
    source: str = ""

    def __repr__(self) -> str:
        secret = "identity_token=***" if self.identity_token else "password=***"
        return f"Credentials(username={self.username!r}, {secret}, source={self.source!r})"

    __str__ = __repr__


def auth_file_candidates(env: Mapping[str, str] | None = None) -> list[tuple[Path, str]]:
    """The auth files to read, in order, each with the label errors and hints use for it."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    out: list[tuple[Path, str]] = []
    if env.get("REGISTRY_AUTH_FILE"):
        out.append((Path(env["REGISTRY_AUTH_FILE"]), "$REGISTRY_AUTH_FILE"))
    if env.get("XDG_RUNTIME_DIR"):
        out.append((Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json", "$XDG_RUNTIME_DIR/containers/auth.json"))
    out.append((home / ".config" / "containers" / "auth.json", "~/.config/containers/auth.json"))
    if env.get("DOCKER_CONFIG"):
        out.append((Path(env["DOCKER_CONFIG"]) / "config.json", "$DOCKER_CONFIG/config.json"))
    else:
        out.append((home / ".docker" / "config.json", "~/.docker/config.json"))
    return out


def lookup_credentials(
    registry: str,
    repository: str | None = None,
    *,
    username: str | None = None,
    password: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials | None:
    """Credentials for ``registry`` (as in a reference: ``docker.io``, ``localhost:5000``), or None for anonymous.

    ``repository`` lets podman-style keys such as ``quay.io/org`` match more specifically than ``quay.io``.
    Raises ``ConfigError`` for half-given credentials or an unreadable auth file.
    """
    env = os.environ if env is None else env
    if username is not None or password is not None:
        if not username or password is None:
            raise ConfigError(
                f"incomplete credentials for {registry}: a username needs a password",
                "pass both --username and --password-stdin",
            )
        return Credentials(username, password, source="--username/--password-stdin")
    env_user, env_pass = env.get(ENV_USERNAME), env.get(ENV_PASSWORD)
    if env_user or env_pass:
        if not env_user or env_pass is None:
            present, missing = (ENV_USERNAME, ENV_PASSWORD) if env_user else (ENV_PASSWORD, ENV_USERNAME)
            raise ConfigError(
                f"{present} is set but {missing} is not", f"set {missing} too, or unset {present}"
            )
        return Credentials(env_user, env_pass, source=ENV_USERNAME)

    keys = _lookup_keys(registry, repository)
    for path, label in auth_file_candidates(env):
        config = _read_auth_file(path, label)
        if config is None:
            continue
        creds = _from_config(config, registry, keys, label, env)
        if creds is not None:
            return creds
    return None


def _lookup_keys(registry: str, repository: str | None) -> list[str]:
    """Keys to try, most specific first: ``host/org/repo``, ``host/org``, ``host`` (and Docker Hub's aliases)."""
    hosts = list(_DOCKER_HUB_KEYS) if _is_docker_hub(registry) else [registry]
    keys: list[str] = []
    if repository:
        parts = repository.split("/")
        for n in range(len(parts), 0, -1):
            keys += [f"{host}/{'/'.join(parts[:n])}" for host in hosts if "://" not in host]
    return keys + hosts


def _is_docker_hub(registry: str) -> bool:
    return _normalize_key(registry) in {_normalize_key(k) for k in _DOCKER_HUB_KEYS}


def _normalize_key(key: str) -> str:
    """docker's ``ConvertToHostname`` for URL keys (``https://host/v1/`` → ``host``); path keys keep their path."""
    if "://" in key:
        return key.split("://", 1)[1].split("/", 1)[0]
    return key.rstrip("/")


def _read_auth_file(path: Path, label: str) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {label} ({path}): {exc.strerror}", "fix its permissions or remove it") from None
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # The message carries only the position, never the text around it (it may hold a secret).
        raise ConfigError(
            f"{label} ({path}) is not valid JSON (line {exc.lineno}, column {exc.colno})",
            "fix the file, or log in again with docker login / podman login to rewrite it",
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{label} ({path}) is not a JSON object", "log in again to rewrite it")
    return data


def _from_config(
    config: Mapping[str, Any], registry: str, keys: list[str], label: str, env: Mapping[str, str]
) -> Credentials | None:
    helpers = config.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for key in keys:
            for name, helper in helpers.items():
                if _normalize_key(name) == _normalize_key(key) and isinstance(helper, str) and helper:
                    return _from_helper(helper, _helper_server(registry, name), env)

    auths = config.get("auths") or {}
    if isinstance(auths, dict):
        normalized = {_normalize_key(k): v for k, v in auths.items()}
        for key in keys:
            entry = normalized.get(_normalize_key(key))
            if isinstance(entry, dict):
                creds = _from_entry(entry, f"{label} auths[{key!r}]")
                if creds is not None:
                    return creds

    store = config.get("credsStore")
    if isinstance(store, str) and store:
        return _from_helper(store, _helper_server(registry, None), env)
    return None


def _helper_server(registry: str, configured_key: str | None) -> str:
    """What to send a helper on stdin: docker keys Docker Hub by its v1 URL and other registries by host."""
    if _is_docker_hub(registry):
        return _DOCKER_HUB_KEYS[0]
    return configured_key or registry


def _from_entry(entry: Mapping[str, Any], where: str) -> Credentials | None:
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        username = str(entry.get("username") or "")
        if not username and isinstance(entry.get("auth"), str):
            try:
                username = _decode_auth(entry["auth"], where)[0]
            except ConfigError:
                pass  # the token is what counts; a username only makes messages friendlier
        return Credentials(username, identity_token=token, source=where)
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        user, password = _decode_auth(auth, where)
        return Credentials(user, password, source=where)
    plain_user, plain_password = entry.get("username"), entry.get("password")
    if isinstance(plain_user, str) and plain_user and isinstance(plain_password, str):
        return Credentials(plain_user, plain_password, source=where)
    return None


def _decode_auth(auth: str, where: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(auth, validate=False).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        raise ConfigError(
            f"{where}: 'auth' is not base64 of username:password",
            "log in again (docker login / podman login) to rewrite it",
        )
    return user, password


def _from_helper(helper: str, server: str, env: Mapping[str, str]) -> Credentials | None:
    """Run ``docker-credential-<helper> get``; "not found" is anonymous, a broken helper is an error."""
    program = f"docker-credential-{helper}"
    path = shutil.which(program, path=env.get("PATH"))
    if path is None:
        # docker fails hard here; we go on anonymously so public pulls still work, and say why a push may fail.
        _log.warning("credential helper %s is not on PATH; using no credentials for %s", program, server)
        return None
    doing = f"asking for the credentials of {server}"
    try:  # the helper's own words are never shown: they may hold the secret
        proc = tools.run([path, "get"], tool=program, doing=doing, base_env=env, input=server, timeout=_HELPER_TIMEOUT)
    except BuildError as exc:  # it cannot be started, or it hangs
        raise RegistryError(f"credential helper {program} failed for {server}: {exc.message.removeprefix(doing + ': ')}", f"check that `echo {server} | {program} get` works") from None
    out = proc.stdout.strip()
    if not proc.ok:
        if "credentials not found" in (out + proc.stderr).lower():
            return None
        raise RegistryError(
            f"credential helper {program} failed for {server} (exit {proc.returncode})",
            f"check that `echo {server} | {program} get` works, or log in again",
        )
    try:
        data = json.loads(out)
        user, secret = data.get("Username", ""), data["Secret"]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise RegistryError(
            f"credential helper {program} gave an unreadable answer for {server}",
            f"check that `echo {server} | {program} get` prints JSON with Username and Secret",
        ) from None
    source = f"credential helper {program}"
    if user == _TOKEN_USERNAME:
        return Credentials("", identity_token=secret, source=source)
    return Credentials(user, secret, source=source)
