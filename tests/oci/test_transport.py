"""The one retry policy and the transport, against a tiny real HTTP server that answers from a script.

Each scripted answer is a status (with headers) or ``DROP``: the connection closes without a word, as when a
registry crashes or a cable is cut. The policy's ``sleep`` is a list's ``append``, so tests see every wait the
policy chose without spending it.
"""

from __future__ import annotations

import email.utils
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from support.registry import free_port, non_loopback_address

from pyimage.errors import RegistryError
from pyimage.oci.transport import RetryPolicy, TransientError, Transport

DROP = "drop"


@dataclass
class ScriptedServer:
    """Answers request N with ``script[N]`` (200 once the script runs out); ``seen`` is (method, path, body)."""

    script: list[object]
    address: str = "127.0.0.1"
    seen: list[tuple[str, str, bytes]] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    def url(self, path: str = "/v2/thing") -> httpx.URL:
        return httpx.URL(f"http://{self.host}{path}")

    def start(self) -> ScriptedServer:
        server = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def handle(self) -> None:
                if self.request.recv(1, socket.MSG_PEEK) == b"\x16":
                    return  # a TLS ClientHello at a plain-HTTP server: hang up, as real ones do
                super().handle()

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    server.seen.append((self.command, self.path, body))
                    answer = server.script.pop(0) if server.script else 200
                if answer == DROP:
                    self.close_connection = True
                    return
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                self.send_response(int(status))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _handle

        self._server = ThreadingHTTPServer((self.address, 0), Handler)
        self._server.daemon_threads, self._server.block_on_close = True, False  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


Serve = Callable[..., ScriptedServer]


@pytest.fixture
def serve() -> Iterator[Serve]:
    started: list[ScriptedServer] = []

    def make(*script: object, address: str = "127.0.0.1") -> ScriptedServer:
        started.append(ScriptedServer(list(script), address).start())
        return started[-1]

    yield make
    for server in started:
        server.stop()


MakeTransport = Callable[..., Transport]


@pytest.fixture
def transport_for() -> Iterator[MakeTransport]:
    """``make(server, slept, retries=4, insecure=False)``: a transport whose policy sleeps into ``slept``."""
    made: list[Transport] = []

    def make(server: ScriptedServer, slept: list[float], retries: int = 4, insecure: bool = False) -> Transport:
        policy = RetryPolicy(retries=retries, backoff=0.5, backoff_cap=8.0, sleep=slept.append)
        made.append(Transport(server.host, policy=policy, insecure=insecure, timeout=5))
        return made[-1]

    yield make
    for transport in made:
        transport.close()


# -- the policy -----------------------------------------------------------------------------------------------


def test_backoff_doubles_from_the_base_with_jitter_up_to_the_cap_then_stops() -> None:
    policy = RetryPolicy(retries=6, backoff=0.5, backoff_cap=4.0)
    for attempt, full in enumerate([0.5, 1.0, 2.0, 4.0, 4.0, 4.0]):
        waits = [policy.delay(attempt) for _ in range(200)]
        assert all(w is not None and full / 2 <= w <= full for w in waits)
        assert len(set(waits)) > 1, "jittered, so parallel transfers do not retry in lockstep"
    assert policy.delay(6) is None


def test_retry_after_sets_the_wait_unless_it_is_longer_than_the_bound() -> None:
    policy = RetryPolicy(retries=3, backoff=0.5, retry_after_max=30.0)
    assert policy.delay(0, retry_after=7.0) == 7.0
    assert policy.delay(0, retry_after=30.0) == 30.0
    assert policy.delay(0, retry_after=31.0) is None
    assert policy.delay(3, retry_after=1.0) is None  # out of attempts all the same


def test_run_retries_transient_failures_and_nothing_else() -> None:
    slept: list[float] = []
    policy = RetryPolicy(retries=4, sleep=slept.append)
    calls: list[int] = []

    def flaky(n: int) -> str:
        calls.append(n)
        if n < 2:
            raise TransientError("dropped")
        return "done"

    assert policy.run(flaky) == "done"
    assert calls == [0, 1, 2] and len(slept) == 2

    def refused(n: int) -> str:
        calls.append(n)
        raise RegistryError("401 Unauthorized", "log in")

    calls.clear()
    with pytest.raises(RegistryError, match="401 Unauthorized"):
        policy.run(refused)
    assert calls == [0] and len(slept) == 2


# -- requests that may be replayed ---------------------------------------------------------------------------


def test_5xx_and_429_answers_are_retried_until_one_succeeds(serve: Serve, transport_for: MakeTransport) -> None:
    server = serve(500, 502, 503, 429, 200)
    slept: list[float] = []
    with_retries = transport_for(server, slept, retries=4)

    response = with_retries.send("GET", server.url(), "pulling thing")

    assert response.status_code == 200
    assert len(server.seen) == 5
    assert [0.25 <= slept[0] <= 0.5, 0.5 <= slept[1] <= 1, 1 <= slept[2] <= 2, 2 <= slept[3] <= 4] == [True] * 4


@pytest.mark.parametrize("status", [400, 401, 403, 404, 416])
def test_other_client_errors_are_answers_not_retried(serve: Serve, transport_for: MakeTransport, status: int) -> None:
    server = serve(status)
    slept: list[float] = []
    assert transport_for(server, slept).send("GET", server.url(), "pulling thing").status_code == status
    assert len(server.seen) == 1 and slept == []


def test_retry_after_in_seconds_is_honoured(serve: Serve, transport_for: MakeTransport) -> None:
    server = serve((429, {"Retry-After": "7"}), 200)
    slept: list[float] = []
    assert transport_for(server, slept).send("GET", server.url(), "pulling thing").status_code == 200
    assert slept == [7.0]


def test_retry_after_as_an_http_date_is_honoured(serve: Serve, transport_for: MakeTransport) -> None:
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    server = serve((503, {"Retry-After": when}), 200)
    slept: list[float] = []
    assert transport_for(server, slept).send("GET", server.url(), "pulling thing").status_code == 200
    assert len(slept) == 1 and 18 <= slept[0] <= 21


def test_a_retry_after_beyond_the_bound_is_returned_at_once(serve: Serve, transport_for: MakeTransport) -> None:
    server = serve((429, {"Retry-After": "3600"}), 200)
    slept: list[float] = []
    response = transport_for(server, slept).send("GET", server.url(), "pulling thing")
    assert response.status_code == 429 and response.headers["Retry-After"] == "3600"
    assert len(server.seen) == 1 and slept == []


def test_attempts_are_bounded_and_the_last_answer_is_returned(serve: Serve, transport_for: MakeTransport) -> None:
    server = serve(*[503] * 10)
    slept: list[float] = []
    response = transport_for(server, slept, retries=2).send("GET", server.url(), "pulling thing")
    assert response.status_code == 503
    assert len(server.seen) == 3 and len(slept) == 2  # the first try and 2 retries


def test_a_replayed_request_sends_its_whole_body_each_time(serve: Serve, transport_for: MakeTransport) -> None:
    server = serve(503, 201)
    slept: list[float] = []
    response = transport_for(server, slept).send(
        "PUT", server.url("/v2/app/manifests/v1"), "pushing manifest", body=lambda: b'{"schemaVersion": 2}'
    )
    assert response.status_code == 201
    assert [body for _, _, body in server.seen] == [b'{"schemaVersion": 2}'] * 2


def test_a_dropped_connection_is_retried(serve: Serve, transport_for: MakeTransport) -> None:
    server = serve(DROP, 200)
    slept: list[float] = []
    assert transport_for(server, slept).send("HEAD", server.url(), "checking blob").status_code == 200
    assert len(server.seen) == 2 and len(slept) == 1


def test_connections_that_keep_dropping_end_in_one_final_error(serve: Serve, transport_for: MakeTransport) -> None:
    server = serve(*[DROP] * 10)
    slept: list[float] = []
    with pytest.raises(RegistryError, match=f"^connection to {server.host} failed while checking blob") as info:
        transport_for(server, slept, retries=2).send("HEAD", server.url(), "checking blob")
    assert not isinstance(info.value, TransientError), "spent: nobody up the stack may retry it again"
    assert len(server.seen) == 3


def test_a_refused_connection_is_retried_then_named() -> None:
    host = f"127.0.0.1:{free_port()}"
    slept: list[float] = []
    transport = Transport(host, policy=RetryPolicy(retries=1, sleep=slept.append))
    with pytest.raises(RegistryError, match=f"^cannot connect to {host}: ") as info:
        transport.send("GET", httpx.URL(f"http://{host}/v2/"), "connecting")
    transport.close()
    assert info.value.hint.startswith(f"start the registry on {host}")  # loopback: plain HTTP was tried already
    assert len(slept) == 1


# -- requests that may not be replayed (an upload step with a body) --------------------------------------------


def test_a_step_that_may_not_be_replayed_is_sent_once_and_its_5xx_returned(serve: Serve, transport_for: MakeTransport) -> None:
    server = serve(502, 202)
    slept: list[float] = []
    response = transport_for(server, slept).send(
        "PATCH", server.url("/v2/app/blobs/uploads/u1"), "pushing blob", body=lambda: b"chunk", replay=False
    )
    assert response.status_code == 502
    assert [(m, body) for m, _, body in server.seen] == [("PATCH", b"chunk")] and slept == []


def test_a_step_that_may_not_be_replayed_raises_a_dropped_connection_as_transient(serve: Serve, transport_for: MakeTransport) -> None:
    server = serve(DROP, 202)
    slept: list[float] = []
    with pytest.raises(TransientError, match=f"^connection to {server.host} failed while pushing blob"):
        transport_for(server, slept).send(
            "PATCH", server.url("/v2/app/blobs/uploads/u1"), "pushing blob", body=lambda: b"chunk", replay=False
        )
    assert len(server.seen) == 1 and slept == []  # the caller asks the registry where it stands, then decides


# -- the ping: which scheme, and plain HTTP only where allowed -------------------------------------------------


def test_a_loopback_registry_without_tls_is_reached_over_plain_http(serve: Serve, transport_for: MakeTransport) -> None:
    server = serve((401, {"WWW-Authenticate": 'Basic realm="test"'}))
    transport = transport_for(server, [])

    challenges = transport.connect("connecting")

    assert transport.base == f"http://{server.host}"
    assert challenges == ['Basic realm="test"']
    assert [(m, p) for m, p, _ in server.seen] == [("GET", "/v2/")]


def test_plain_http_is_refused_for_other_hosts_unless_insecure(serve: Serve, transport_for: MakeTransport) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    server = serve(200, address=address)

    with pytest.raises(RegistryError, match=f"^TLS handshake with {server.host} failed") as info:
        transport_for(server, []).connect("connecting")
    assert f"--insecure-registry {server.host}" in info.value.hint
    assert server.seen == []  # not one request in plain HTTP

    insecure = transport_for(server, [], insecure=True)
    insecure.connect("connecting")
    assert insecure.base == f"http://{server.host}"


@pytest.mark.parametrize("host", ["registry-1.docker.io", "ghcr.io", "europe-docker.pkg.dev", "123.dkr.ecr.eu-west-1.amazonaws.com"])
def test_an_unreachable_public_registry_is_never_told_to_use_plain_http(host: str) -> None:
    from pyimage.oci.transport import unreachable_hint

    assert "--insecure-registry" not in unreachable_hint(host) and "network" in unreachable_hint(host)
    assert "--insecure-registry registry.internal:5000" in unreachable_hint("registry.internal:5000")


def test_an_unreachable_loopback_registry_is_not_told_to_use_plain_http() -> None:
    """Loopback registries get plain HTTP already; the hint says nothing answered rather than --insecure-registry."""
    from pyimage.oci.transport import unreachable_hint

    for host in ("localhost:5999", "127.0.0.1:5000"):
        hint = unreachable_hint(host)
        assert "--insecure-registry" not in hint and host in hint
    assert "--insecure-registry registry.internal:5000" in unreachable_hint("registry.internal:5000")
