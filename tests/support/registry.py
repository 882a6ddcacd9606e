"""A real CNCF distribution registry (``docker-registry``) per test, and a tiny docker token server beside it.

``registry_factory`` starts ``docker-registry serve`` on a free loopback port with filesystem storage in the
test's tmp dir, htpasswd (bcrypt) or token auth, optionally TLS from a throwaway CA, and its access log in a
file tests parse to see what the client really sent. The process can be killed and restarted on the same
storage and port, which is how tests cut a push off half-way.

``FaultProxy`` sits in front of a registry to inject 5xx/429 answers, the failures a live registry will not
produce on demand. Small real images (``make_layer``/``make_image``: gzip'd tars from ``tarfile`` and a
matching OCI config) and skopeo helpers are here too, so tests import them rather than a conftest.

The token server implements the docker token-auth spec (GET with Basic credentials, POST for refresh tokens)
and signs RS256 JWTs with ``openssl``; per-user repository ACLs are what htpasswd cannot express.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import httpx
import pytest

from pyimage.oci.auth import Credentials
from pyimage.oci.model import MEDIA_OCI_LAYER_GZIP, Descriptor, Image, Layer, Platform
from pyimage.oci.registry import RegistryClient

__all__ = [
    "AccessLogEntry",
    "Fault",
    "FaultProxy",
    "Registry",
    "SigningKey",
    "TlsFiles",
    "TokenServer",
    "client_factory_for",
    "free_port",
    "inspect_json",
    "make_image",
    "make_layer",
    "make_tls_files",
    "non_loopback_address",
    "registry_factory",
    "skopeo",
    "skopeo_inspect",
    "start_registry",
    "tls_files",
    "token_signing_key",
    "write_htpasswd",
]

REGISTRY_BIN = "docker-registry"
SERVICE = "pyimage-test-registry"
ISSUER = "pyimage-test-issuer"
_ACCESS_RE = re.compile(r'^\S+ \S+ \S+ \[[^\]]+\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-)')


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def non_loopback_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: routing only, nothing is sent for UDP connect
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]


# -- TLS and keys -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1/localhost, with the extensions strict verifiers require."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _run("openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "2",
         "-subj", "/CN=pyimage test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-addext", "subjectKeyIdentifier=hash")
    _run("openssl", "req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return TlsFiles(ca_cert, cert, key)


@dataclass(frozen=True)
class SigningKey:
    key: Path
    cert: Path

    @property
    def x5c(self) -> str:
        """The certificate's DER, base64 (a PEM body is exactly that)."""
        lines = self.cert.read_text().strip().splitlines()
        return "".join(line for line in lines if not line.startswith("-----"))


def make_signing_key(directory: Path) -> SigningKey:
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / "token.key", directory / "token.crt"
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=pyimage test token issuer")
    return SigningKey(key, cert)


def write_htpasswd(path: Path, users: Mapping[str, str]) -> Path:
    """bcrypt entries (the only hash distribution accepts), made by apache's ``htpasswd -Bbn``."""
    lines = [_run("htpasswd", "-Bbn", "-C", "5", user, password).stdout.decode().strip()
             for user, password in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- token server -------------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenRequest:
    method: str
    user: str | None
    scopes: tuple[str, ...]
    status: int


@dataclass
class TokenServer:
    """Docker token auth: ``users`` maps name → password, ``acl`` maps name → repository glob → actions.

    ``refresh_tokens`` maps an identity token to a user (docker's OAuth2 refresh path). ``token_field`` is
    ``token``, ``access_token`` or ``both``, to exercise clients on each spelling the spec allows.
    """

    signing: SigningKey
    users: dict[str, str]
    acl: dict[str, dict[str, str]]
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    token_field: str = "both"
    requests: list[TokenRequest] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def start(self) -> TokenServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                query = urllib.parse.urlparse(self.path).query
                params = urllib.parse.parse_qs(query)
                user: str | None = None
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if server.users.get(name) != password:
                        return self._deny("GET", name, params.get("scope", []))
                    user = name
                self._grant("GET", user, params.get("scope", []), offline="offline_token" in params)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                scopes = " ".join(form.get("scope", [])).split()
                user = server.refresh_tokens.get((form.get("refresh_token") or [""])[0])
                if (form.get("grant_type") or [""])[0] != "refresh_token" or user is None:
                    return self._deny("POST", None, scopes)
                self._grant("POST", user, scopes, offline=False)

            def _deny(self, method: str, user: str | None, scopes: list[str]) -> None:
                server.requests.append(TokenRequest(method, user, tuple(scopes), 401))
                self._reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})

            def _grant(self, method: str, user: str | None, scopes: list[str], offline: bool) -> None:
                server.requests.append(TokenRequest(method, user, tuple(scopes), 200))
                token = server.issue(user, scopes)
                body: dict[str, object] = {"expires_in": 300, "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
                if server.token_field in ("token", "both"):
                    body["token"] = token
                if server.token_field in ("access_token", "both"):
                    body["access_token"] = token
                if offline and user:
                    body["refresh_token"] = f"refresh-{user}"
                self._reply(200, body)

            def _reply(self, status: int, body: dict[str, object]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def granted(self, user: str | None, repository: str, wanted: list[str]) -> list[str]:
        rules = self.acl.get(user or "", {})
        allowed: set[str] = set()
        for pattern, actions in rules.items():
            prefix = pattern[:-1] if pattern.endswith("/*") else None
            if pattern in ("*", repository) or (prefix and repository.startswith(prefix)):
                allowed |= set(actions.split(","))
        return [a for a in wanted if a in allowed]

    def issue(self, user: str | None, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": self.granted(user, name, actions.split(","))})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.signing.x5c]}
        claims = {"iss": ISSUER, "sub": user or "", "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = _run("openssl", "dgst", "-sha256", "-binary", "-sign", str(self.signing.key),
                         input=signing_input.encode()).stdout
        return f"{signing_input}.{_b64url(signature)}"


# -- the registry process -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessLogEntry:
    method: str
    path: str
    status: int

    @property
    def is_blob_upload(self) -> bool:
        return "/blobs/uploads/" in self.path


@dataclass
class Registry:
    """A running ``docker-registry``; ``host`` is what a reference uses (``127.0.0.1:PORT``)."""

    root: Path
    port: int
    config: Path
    storage: Path
    access_log: Path
    error_log: Path
    users: dict[str, str]
    tls: TlsFiles | None = None
    token_server: TokenServer | None = None
    address: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def start(self) -> Registry:
        with self.access_log.open("ab") as out, self.error_log.open("ab") as err:
            self.process = subprocess.Popen([REGISTRY_BIN, "serve", str(self.config)], stdout=out, stderr=err)
        verify: object = ssl.create_default_context(cafile=str(self.tls.ca_cert)) if self.tls else True
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited {self.process.returncode}:\n{self.error_log.read_text()}")
            try:
                httpx.get(f"{self.url}/v2/", verify=verify, timeout=1)  # type: ignore[arg-type]
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.url}:\n{self.error_log.read_text()}")

    def kill(self) -> None:
        """SIGKILL, as a crash or a pulled cable would: no graceful shutdown of in-flight requests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def restart(self) -> Registry:
        self.kill()
        return self.start()

    def requests(self) -> list[AccessLogEntry]:
        """Every request the registry served so far, from its (combined-format) access log. The registry writes a
        line after it has answered, so the log is read once it has stopped growing (a client that just got its
        reply could otherwise count one request short)."""
        import time

        text, deadline = self.access_log.read_text(errors="replace"), time.monotonic() + 2.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
            again = self.access_log.read_text(errors="replace")
            if again == text:
                break
            text = again
        out = []
        for line in text.splitlines():
            match = _ACCESS_RE.match(line)
            if match:
                out.append(AccessLogEntry(match.group(1), match.group(2), int(match.group(3))))
        return out

    def creds(self, user: str | None = None) -> str:
        """``user:password`` for skopeo's ``--creds``."""
        name = user or next(iter(self.users))
        return f"{name}:{self.users[name]}"


def _config_yaml(reg: Registry, secret: str, htpasswd: Path | None) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "  accesslog:",
        "    disabled: false",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {reg.storage}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: {reg.host}",
        # Fixed, so upload sessions (whose state the registry signs with it) survive a restart.
        f"  secret: {secret}",
    ]
    if reg.tls:
        lines += ["  tls:", f"    certificate: {reg.tls.server_cert}", f"    key: {reg.tls.server_key}"]
    if reg.token_server:
        lines += [
            "auth:",
            "  token:",
            f"    realm: {reg.token_server.realm}",
            f"    service: {SERVICE}",
            f"    issuer: {ISSUER}",
            f"    rootcertbundle: {reg.token_server.signing.cert}",
        ]
    elif htpasswd:
        lines += ["auth:", "  htpasswd:", "    realm: pyimage-test", f"    path: {htpasswd}"]
    return "\n".join(lines) + "\n"


def start_registry(
    root: Path,
    *,
    users: Mapping[str, str] | None = None,
    tls: TlsFiles | None = None,
    token_server: TokenServer | None = None,
    anonymous: bool = False,
    address: str = "127.0.0.1",
) -> Registry:
    """Start a registry under ``root``; htpasswd auth for ``users`` unless ``token_server`` or ``anonymous``.

    ``address`` is the one it listens on: loopback unless a test needs a host plain HTTP is not trusted for.
    """
    if shutil.which(REGISTRY_BIN) is None:
        pytest.skip(f"{REGISTRY_BIN} is not installed (apt-get install docker-registry)")
    root.mkdir(parents=True, exist_ok=True)
    users = dict(users or {"alice": "wonderland"})
    reg = Registry(
        root=root,
        port=free_port(address),
        config=root / "config.yml",
        storage=root / "storage",
        access_log=root / "access.log",
        error_log=root / "registry.log",
        users=dict(token_server.users) if token_server else users,
        tls=tls,
        token_server=token_server,
        address=address,
    )
    htpasswd = None if (anonymous or token_server) else write_htpasswd(root / "htpasswd", users)
    reg.config.write_text(_config_yaml(reg, secrets.token_hex(16), htpasswd))
    return reg.start()

# -- what tests push, and how they look at it -------------------------------------------------------------


def make_layer(directory: Path, files: Mapping[str, bytes], name: str = "app") -> Layer:
    """A deterministic gzip'd tar layer of ``files`` (path → content), with its parent directories."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in files if str(Path(p).parent) != "."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name_in_tar, data in sorted(files.items()):
            info = tarfile.TarInfo(name_in_tar)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    blob = gzip.compress(tar_bytes, compresslevel=1, mtime=0)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / digest.split(":")[1]
    path.write_bytes(blob)
    return Layer(name, Descriptor(MEDIA_OCI_LAYER_GZIP, digest, len(blob)),
                 "sha256:" + hashlib.sha256(tar_bytes).hexdigest(), path)


def make_image(layers: Sequence[Layer], platform: Platform = Platform(), label: str = "") -> Image:
    config = {
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {"Cmd": ["/bin/sh"], "Labels": {"test": label} if label else {}},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": f"pyimage test layer {layer.name}"} for layer in layers],
    }
    if platform.variant:
        config["variant"] = platform.variant
    return Image(config=config, layers=tuple(layers))


def client_factory_for(
    reg: Registry, user: str | None = None, **kwargs: object
) -> Callable[[str], RegistryClient]:
    """A factory giving clients with ``user``'s credentials and fast retries (tests must not sleep long)."""
    name = user or next(iter(reg.users))
    options: dict[str, object] = {"retries": 2, "backoff": 0.05, "backoff_cap": 0.2}
    options.update(kwargs)
    creds = Credentials(name, reg.users[name], source="test") if name in reg.users else None

    def make(host: str) -> RegistryClient:
        return RegistryClient(host, credentials=creds, **options)  # type: ignore[arg-type]

    return make


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, check=check, timeout=60)


def skopeo_inspect(
    reg: Registry, ref: str, *, raw: bool = False, check: bool = True
) -> subprocess.CompletedProcess[str]:
    args = ["inspect", "--tls-verify=false", "--creds", reg.creds(), *(["--raw"] if raw else []), f"docker://{ref}"]
    return skopeo(*args, check=check)


def inspect_json(reg: Registry, ref: str) -> dict[str, Any]:
    return json.loads(skopeo_inspect(reg, ref).stdout)


# -- a proxy that fails on purpose ------------------------------------------------------------------------


@dataclass
class Fault:
    """Answer a request whose method matches and whose path contains ``path`` with ``status``, once,
    after letting ``after`` such requests through."""

    method: str
    path: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    after: int = 0


@dataclass
class FaultProxy:
    """A pass-through HTTP proxy in front of a real registry that injects 5xx/429 answers from ``faults``.

    It forwards everything else byte for byte, with the proxy's own Host so the registry's Location headers
    point back through it. ``log`` records (method, path, status) as the client saw them.
    """

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, int]] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _upstream: httpx.Client | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        proxy = self
        upstream = self._upstream = httpx.Client(base_url=self.upstream, timeout=30)  # closed by stop()
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with lock:
                    fault = next((f for f in proxy.faults if f.method == self.command and f.path in self.path), None)
                    if fault is not None and fault.after > 0:
                        fault.after -= 1
                        fault = None
                    elif fault is not None:
                        proxy.faults.remove(fault)
                if fault is not None:
                    data = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "injected"}]}).encode()
                    self._reply(fault.status, {**fault.headers, "Content-Type": "application/json"}, data)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                headers["Host"] = proxy.host
                response = upstream.request(self.command, self.path, headers=headers, content=body)
                keep = {k: v for k, v in response.headers.items()
                        if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding")}
                if self.command == "HEAD":
                    keep["Content-Length"] = response.headers.get("Content-Length", "0")
                self._reply(response.status_code, keep, response.content)

            def _reply(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
                proxy.log.append((self.command, self.path, status))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._upstream is not None:
            self._upstream.close()


# -- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def token_signing_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return make_signing_key(tmp_path_factory.mktemp("token-key"))


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    """``make(users=..., tls=..., token_server=..., anonymous=...)`` → a started ``Registry``, stopped at teardown."""
    started: list[Registry] = []

    def make(**kwargs: object) -> Registry:
        reg = start_registry(tmp_path / f"registry{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(reg)
        return reg

    yield make
    for reg in started:
        reg.stop()
