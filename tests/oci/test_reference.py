"""Image references normalise the way docker does, and a bad one says which part is wrong."""

from __future__ import annotations

import pytest

from pyimage.errors import ConfigError
from pyimage.oci.reference import Reference, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("python", Reference("docker.io", "library/python", "latest")),
        ("python:3.12-slim", Reference("docker.io", "library/python", "3.12-slim")),
        ("docker://python:3.12-slim", Reference("docker.io", "library/python", "3.12-slim")),
        ("library/python:3", Reference("docker.io", "library/python", "3")),
        ("bitnami/redis", Reference("docker.io", "bitnami/redis", "latest")),
        ("docker.io/python", Reference("docker.io", "library/python", "latest")),
        ("index.docker.io/library/python:3", Reference("docker.io", "library/python", "3")),
        ("localhost:5000/x", Reference("localhost:5000", "x", "latest")),
        ("localhost/x:1", Reference("localhost", "x", "1")),
        ("127.0.0.1:5000/team/app:v1.2_3", Reference("127.0.0.1:5000", "team/app", "v1.2_3")),
        ("[::1]:5000/app", Reference("[::1]:5000", "app", "latest")),
        ("ghcr.io/o/r@" + DIGEST, Reference("ghcr.io", "o/r", None, DIGEST)),
        ("ghcr.io/o/r:1.0@" + DIGEST, Reference("ghcr.io", "o/r", "1.0", DIGEST)),
        ("Registry/app", Reference("Registry", "app", "latest")),
        ("quay.io/org/sub-team/app__x.y:tag", Reference("quay.io", "org/sub-team/app__x.y", "tag")),
    ],
)
def test_parse_normalises_like_docker(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text",
    ["python", "python:3.12-slim", "ghcr.io/o/r@" + DIGEST, "ghcr.io/o/r:1@" + DIGEST, "localhost:5000/a/b:c"],
)
def test_str_round_trips(text: str) -> None:
    ref = parse_reference(text)
    assert parse_reference(str(ref)) == ref


def test_str_is_the_normal_form() -> None:
    assert str(parse_reference("python:3.12-slim")) == "docker.io/library/python:3.12-slim"
    assert str(parse_reference("ghcr.io/o/r@" + DIGEST)) == f"ghcr.io/o/r@{DIGEST}"


def test_api_host_for_docker_hub_is_registry_1() -> None:
    assert parse_reference("python").api_host == "registry-1.docker.io"
    assert parse_reference("ghcr.io/o/r").api_host == "ghcr.io"
    assert parse_reference("localhost:5000/x").api_host == "localhost:5000"


def test_reference_property_prefers_the_digest() -> None:
    assert parse_reference("ghcr.io/o/r:1@" + DIGEST).reference == DIGEST
    assert parse_reference("ghcr.io/o/r:1").reference == "1"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("Python:3", "lowercase"),
        ("docker.io/Library/python", "lowercase"),
        ("python:-bad", "tag"),
        ("python@sha256:1234", "digest"),
        ("ghcr.io/o//r", "path component"),
        ("localhost:5000/", "path component"),
        ("ghcr.io/o/r:" + "t" * 129, "tag"),
        ("bad_host:5000/app", "registry host"),
        ("ghcr.io/" + "a" * 300, "longer than"),
    ],
)
def test_invalid_reference_is_a_config_error_with_a_hint(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_reference(text)
    assert needle in info.value.message + info.value.hint
    assert info.value.hint
    assert info.value.exit_code == 2


@pytest.mark.parametrize("text", ["user:s3cr3t@127.0.0.1:5055/app:1", "docker://me:s3cr3t@ghcr.io/org/app", "s3cr3t@registry.example/app@sha256:" + "a" * 64])
def test_credentials_in_a_reference_are_refused_without_repeating_them(text: str) -> None:
    """A new-user trial's ``--push user:pass@host/repo:tag`` was echoed back whole, password included."""
    with pytest.raises(ConfigError) as err:
        parse_reference(text)
    assert "cannot carry credentials" in str(err.value) and "s3cr3t" not in f"{err.value} {err.value.hint}"
