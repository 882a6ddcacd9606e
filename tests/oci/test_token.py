"""Challenges as registries send them, and tokens as a real docker token server hands them out.

The token server (``support.registry.TokenServer``) signs real JWTs; a ``FaultProxy`` in front of it fails a
token request on purpose, to show token fetches obey the same retry policy as every other request.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.registry import SERVICE, Fault, FaultProxy, SigningKey, TokenServer

from pyimage.errors import RegistryError
from pyimage.oci.auth import Credentials
from pyimage.oci.token import (
    Authenticator,
    Challenge,
    choose_challenge,
    covers,
    parse_challenges,
)
from pyimage.oci.transport import RetryPolicy, Transport

# -- parsing WWW-Authenticate -----------------------------------------------------------------------------------


def test_docker_hub_bearer_challenge_with_a_scope_holding_commas() -> None:
    header = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
              'scope="repository:library/python:pull,push"')
    [challenge] = parse_challenges([header])
    assert challenge.scheme == "bearer"
    assert challenge.get("realm") == "https://auth.docker.io/token"
    assert challenge.get("service") == "registry.docker.io"
    assert challenge.get("scope") == "repository:library/python:pull,push"
    assert challenge.get("error") == ""


def test_scheme_and_parameter_names_are_case_insensitive_and_escapes_are_read() -> None:
    [challenge] = parse_challenges(['BEARER Realm = "https://t.example/token" , Error="say \\"no\\""'])
    assert challenge == Challenge("bearer", (("realm", "https://t.example/token"), ("error", 'say "no"')))


def test_several_challenges_in_one_header_and_across_headers_keep_their_order() -> None:
    challenges = parse_challenges(['Basic realm="Registry", Bearer realm="https://t/token",service="s"',
                                   'Negotiate'])
    assert [c.scheme for c in challenges] == ["basic", "bearer", "negotiate"]
    assert challenges[1].params == (("realm", "https://t/token"), ("service", "s"))


def test_an_unquoted_realm_url_is_read_whole() -> None:
    [challenge] = parse_challenges(["Bearer realm=https://t.example/token,service=registry"])
    assert (challenge.get("realm"), challenge.get("service")) == ("https://t.example/token", "registry")


@pytest.mark.parametrize(
    ("header", "schemes"),
    [("", []), ("=", []), (",,,", []), ('"', []), ("\x00\x01Basic", []), ("Basic realm=\x00", ["basic"]),
     ('Bearer realm="unterminated', ["bearer"]), ("Bearer realm=@x,\x00 Basic", ["bearer"])],
)
def test_malformed_headers_end_parsing_without_an_exception(header: str, schemes: list[str]) -> None:
    assert [c.scheme for c in parse_challenges([header])] == schemes


def test_the_first_challenge_pyimage_can_answer_is_chosen() -> None:
    no_realm = Challenge("bearer", (("service", "s"),))
    bearer = Challenge("bearer", (("realm", "https://t/token"),))
    assert choose_challenge([Challenge("negotiate"), no_realm, bearer, Challenge("basic")]) == bearer
    assert choose_challenge([Challenge("basic"), bearer]) == Challenge("basic")
    assert choose_challenge([Challenge("negotiate"), no_realm]) is None


def test_a_push_token_covers_pulling_the_same_repository_only() -> None:
    push = frozenset({"repository:team/app:pull,push", "repository:team/base:pull"})
    assert covers(push, frozenset({"repository:team/app:pull"}))
    assert covers(push, frozenset({"repository:team/app:pull", "repository:team/base:pull"}))
    assert not covers(push, frozenset({"repository:team/base:push"}))
    assert not covers(push, frozenset({"repository:other:pull"}))
    assert not covers(frozenset({"repository:team/app:pull"}), frozenset({"repository:team/app:pull,push"}))


# -- fetching tokens ----------------------------------------------------------------------------------------------


@pytest.fixture
def token_server(token_signing_key: SigningKey) -> Iterator[TokenServer]:
    server = TokenServer(token_signing_key, users={"alice": "wonderland"}, acl={"alice": {"*": "pull,push"}},
                         refresh_tokens={"refresh-alice": "alice"}).start()
    yield server
    server.stop()


@pytest.fixture
def proxy(token_server: TokenServer) -> Iterator[FaultProxy]:
    server = FaultProxy(f"http://127.0.0.1:{token_server.port}").start()
    yield server
    server.stop()


@pytest.fixture
def slept() -> list[float]:
    return []


@pytest.fixture
def transport(slept: list[float]) -> Iterator[Transport]:
    made = Transport("127.0.0.1:1", policy=RetryPolicy(retries=2, sleep=slept.append))
    yield made
    made.close()


def authenticator(transport: Transport, realm: str, credentials: Credentials | None) -> Authenticator:
    auth = Authenticator("registry.test", transport, credentials)
    assert auth.learn([f'Bearer realm="{realm}",service="{SERVICE}"']) is not None
    return auth


ALICE = Credentials("alice", "wonderland", source="test")
PULL = frozenset({"repository:app:pull"})
PUSH = frozenset({"repository:app:pull,push"})


def test_a_token_request_that_fails_with_503_is_retried_by_the_same_policy(
    transport: Transport, token_server: TokenServer, proxy: FaultProxy, slept: list[float]
) -> None:
    proxy.faults.append(Fault("GET", "/token", 503))
    auth = authenticator(transport, f"http://{proxy.host}/token", ALICE)

    token = auth.token(PULL, "pulling app")

    assert token.count(".") == 2  # a JWT
    assert [status for _, _, status in proxy.log] == [503, 200]
    assert len(slept) == 1
    assert [(r.user, r.scopes) for r in token_server.requests] == [("alice", ("repository:app:pull",))]


def test_tokens_are_reused_for_every_scope_set_they_cover(
    transport: Transport, token_server: TokenServer, proxy: FaultProxy
) -> None:
    auth = authenticator(transport, f"http://{proxy.host}/token", ALICE)

    push_token = auth.token(PUSH, "pushing app")
    assert auth.token(PULL, "pulling app") == push_token  # pull,push covers pull
    assert auth.token(PUSH, "pushing app") == push_token
    other = auth.token(frozenset({"repository:other:pull"}), "pulling other")

    assert other != push_token
    assert auth.token_requests == 2 and len(token_server.requests) == 2


def test_an_identity_token_is_exchanged_by_post_and_never_sent_as_a_password(
    transport: Transport, token_server: TokenServer, proxy: FaultProxy
) -> None:
    auth = authenticator(transport, f"http://{proxy.host}/token", Credentials(identity_token="refresh-alice"))
    auth.token(PULL, "pulling app")
    assert [(r.method, r.user) for r in token_server.requests] == [("POST", "alice")]
    assert [method for method, _, _ in proxy.log] == ["POST"]


def test_credentials_are_not_sent_to_a_plain_http_realm_on_another_host(transport: Transport) -> None:
    auth = authenticator(transport, "http://192.0.2.1/token", ALICE)  # TEST-NET: nothing may be sent there
    with pytest.raises(RegistryError, match="sends credentials to 192.0.2.1 over plain HTTP") as info:
        auth.token(PULL, "pulling app")
    assert "--insecure-registry registry.test" in info.value.hint
    assert auth.token_requests == 0


@pytest.mark.parametrize("realm", ["ftp://t.example/token", "http://[::1", "/token", "https://"])
def test_a_realm_that_is_no_http_url_is_one_clear_error(transport: Transport, realm: str) -> None:
    auth = authenticator(transport, realm, None)
    with pytest.raises(RegistryError, match="names no usable token server"):
        auth.token(PULL, "pulling app")


def test_rejected_credentials_are_named_by_their_source_never_shown(
    transport: Transport, token_server: TokenServer, proxy: FaultProxy
) -> None:
    wrong = Credentials("alice", "not-it", source="~/.docker/config.json")
    auth = authenticator(transport, f"http://{proxy.host}/token", wrong)
    with pytest.raises(RegistryError, match="^401 Unauthorized authenticating to registry.test as 'alice'") as info:
        auth.token(PULL, "pulling app")
    assert "~/.docker/config.json" in info.value.hint
    assert "not-it" not in info.value.message + info.value.hint
