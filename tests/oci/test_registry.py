"""The registry client against a real ``docker-registry`` process: push, pull, auth, TLS, failures and resume.

No network mocks: every test talks HTTP to a registry started for it (see ``support/registry.py``), checks the
result with skopeo/umoci or the registry's own access log, and cuts connections by killing the process.
Per-user permissions come from a small docker token server (htpasswd has no ACLs), and 5xx/429 answers from a
pass-through proxy in front of the registry, since a healthy registry will not produce them on demand.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from support.registry import (
    Fault,
    FaultProxy,
    Registry,
    SigningKey,
    TlsFiles,
    TokenServer,
    client_factory_for,
    free_port,
    inspect_json,
    make_image,
    make_layer,
    non_loopback_address,
    skopeo,
    skopeo_inspect,
)

from pyimage.errors import RegistryError
from pyimage.oci.auth import Credentials, lookup_credentials
from pyimage.oci.model import (
    MEDIA_DOCKER_CONFIG,
    MEDIA_DOCKER_LAYER_GZIP,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    Image,
    Platform,
    canonical_json,
)
from pyimage.oci.pull import pull_image
from pyimage.oci.push import push_image
from pyimage.oci.reference import Reference, parse_reference
from pyimage.oci.registry import RegistryClient

pytestmark = pytest.mark.registry

RegistryFactory = Callable[..., Registry]
ImageFactory = Callable[..., Image]
KiB = 1024


def ref(reg: Registry, name: str) -> Reference:
    return parse_reference(f"{reg.host}/{name}")


def small_image(image_factory: ImageFactory, label: str = "", **kwargs: object) -> Image:
    return image_factory(
        {"app/hello.txt": b"hello from pyimage\n"},
        {"app/data.bin": os.urandom(20 * KiB)},
        label=label,
        **kwargs,
    )


def blob_requests(reg: Registry, method: str) -> list[str]:
    return [e.path for e in reg.requests() if e.method == method and "/blobs/" in e.path]


# -- push -------------------------------------------------------------------------------------------------


def test_push_is_readable_by_skopeo_and_unpackable_by_umoci(
    registry: Registry, image_factory: ImageFactory, tmp_path: Path
) -> None:
    for tool in ("skopeo", "umoci"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    image = small_image(image_factory)
    result = push_image(image, [ref(registry, "app:v1"), ref(registry, "app:latest")],
                        client_factory=client_factory_for(registry))

    assert result.digest == image.digest
    assert (result.uploaded, result.mounted, result.skipped) == (3, 0, 0)
    assert result.bytes_uploaded == sum(layer.size for layer in image.layers) + len(image.config_bytes())
    info = inspect_json(registry, f"{registry.host}/app:v1")
    assert info["Digest"] == image.digest
    assert info["Layers"] == [layer.digest for layer in image.layers]
    assert sorted(info["RepoTags"]) == ["latest", "v1"]
    # The manifest went up last, once per tag.
    puts = [e for e in registry.requests() if e.method == "PUT"]
    assert [e.path for e in puts[-2:]] == ["/v2/app/manifests/v1", "/v2/app/manifests/latest"]

    layout = tmp_path / "layout"
    skopeo("copy", "--src-tls-verify=false", "--src-creds", registry.creds(),
           f"docker://{registry.host}/app:v1", f"oci:{layout}:v1")
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:v1", str(bundle)], check=True, capture_output=True)
    assert (bundle / "rootfs" / "app" / "hello.txt").read_bytes() == b"hello from pyimage\n"


def test_second_push_of_the_same_image_uploads_nothing(registry: Registry, image_factory: ImageFactory) -> None:
    image = small_image(image_factory)
    factory = client_factory_for(registry)
    push_image(image, [ref(registry, "app:v1")], client_factory=factory)
    uploads_before = len(blob_requests(registry, "POST"))

    again = push_image(image, [ref(registry, "app:v1")], client_factory=factory)

    assert (again.uploaded, again.mounted, again.skipped, again.bytes_uploaded) == (0, 0, 3, 0)
    assert len(blob_requests(registry, "POST")) == uploads_before


def test_second_repository_mounts_the_shared_layer(
    registry: Registry, image_factory: ImageFactory, layer_dir: Path
) -> None:
    shared = make_layer(layer_dir, {"base/os-release": b"ID=test\n"}, name="base")
    first = make_image([shared, make_layer(layer_dir, {"app/a": b"a"})], label="a")
    second = make_image([shared, make_layer(layer_dir, {"app/b": b"b"})], label="b")
    factory = client_factory_for(registry)
    push_image(first, [ref(registry, "team/first:1")], client_factory=factory)

    result = push_image(second, [ref(registry, "team/second:1")], client_factory=factory, mount_from=["team/first"])

    assert (result.uploaded, result.mounted, result.skipped) == (2, 1, 0)
    mounts = [e for e in registry.requests() if e.method == "POST" and "mount=" in e.path]
    assert any(shared.digest.replace(":", "%3A") in e.path and e.status == 201 for e in mounts)
    assert inspect_json(registry, f"{registry.host}/team/second:1")["Layers"][0] == shared.digest


def test_pushing_to_two_repositories_at_once_mounts_into_the_second(
    registry: Registry, image_factory: ImageFactory
) -> None:
    image = small_image(image_factory)
    result = push_image(image, [ref(registry, "one:1"), ref(registry, "two:1")],
                        client_factory=client_factory_for(registry))
    assert (result.uploaded, result.mounted) == (3, 3)
    assert inspect_json(registry, f"{registry.host}/two:1")["Digest"] == image.digest


def test_large_blob_goes_up_in_chunks(registry: Registry, image_factory: ImageFactory) -> None:
    image = image_factory({"app/big.bin": os.urandom(300 * KiB)})
    factory = client_factory_for(registry, monolithic_max=64 * KiB, chunk_size=64 * KiB)

    result = push_image(image, [ref(registry, "big:1")], client_factory=factory)

    assert result.uploaded == 2
    patches = [e for e in registry.requests() if e.method == "PATCH"]
    assert len(patches) == 5  # 300 KiB of random data gzips to ~300 KiB: five 64 KiB chunks
    assert all(e.status == 202 for e in patches)
    assert inspect_json(registry, f"{registry.host}/big:1")["Digest"] == image.digest


def test_chunked_upload_resumes_from_the_registry_range_after_a_restart(registry: Registry, tmp_path: Path) -> None:
    data = os.urandom(5 * 64 * KiB + 123)
    path = tmp_path / "blob"
    path.write_bytes(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    client = client_factory_for(
        registry, monolithic_max=64 * KiB, chunk_size=64 * KiB, retries=10, backoff=0.05, backoff_cap=0.4
    )(registry.host)
    acknowledged: list[int] = []
    restarted = threading.Event()

    def restart() -> None:
        registry.start()
        restarted.set()

    def progress(done: int) -> None:
        acknowledged.append(done)
        if len(acknowledged) == 2:  # two chunks stored: pull the plug, bring it back a moment later
            registry.kill()
            threading.Timer(0.3, restart).start()

    with client:
        client.upload_blob("resume", digest, len(data), path, progress=progress)
        assert restarted.wait(15)
        assert client.blob_exists("resume", digest)
        out = tmp_path / "back"
        client.fetch_blob("resume", digest, out)
    assert out.read_bytes() == data

    log = registry.requests()
    assert len([e for e in log if e.method == "POST"]) == 1, "resumed, not restarted"
    status_checks = [e for e in log if e.method == "GET" and "/blobs/uploads/" in e.path]
    assert status_checks and all(e.status == 204 for e in status_checks)
    assert acknowledged[-1] == len(data)
    patches = [e for e in log if e.method == "PATCH"]
    assert len(patches) == 6  # 5 full chunks + the 123-byte tail, none sent twice


def test_push_over_tls_trusts_the_ca_bundle(
    registry_factory: RegistryFactory, tls_files: TlsFiles, image_factory: ImageFactory
) -> None:
    reg = registry_factory(tls=tls_files)
    image = small_image(image_factory)

    factory = client_factory_for(reg, ca_bundle=tls_files.ca_cert)
    result = push_image(image, [ref(reg, "secure:1")], client_factory=factory)

    assert result.uploaded == 3
    assert inspect_json(reg, f"{reg.host}/secure:1")["Digest"] == image.digest


def test_tls_without_the_ca_is_a_clear_error_and_never_falls_back_to_http(
    registry_factory: RegistryFactory, tls_files: TlsFiles, image_factory: ImageFactory
) -> None:
    reg = registry_factory(tls=tls_files)
    before = len(reg.requests())

    with pytest.raises(RegistryError) as info:
        push_image(small_image(image_factory), [ref(reg, "secure:1")], client_factory=client_factory_for(reg))

    assert info.value.message.startswith(f"TLS certificate of {reg.host} is not trusted")
    assert "--ca-bundle" in info.value.hint
    assert len(reg.requests()) == before  # not a single request went over plain HTTP


def test_insecure_accepts_a_self_signed_registry(
    registry_factory: RegistryFactory, tls_files: TlsFiles, image_factory: ImageFactory
) -> None:
    reg = registry_factory(tls=tls_files)
    image = small_image(image_factory)
    result = push_image(image, [ref(reg, "lab:1")], client_factory=client_factory_for(reg, insecure=True))
    assert result.digest == image.digest


def test_plain_http_is_only_used_for_loopback_or_insecure_registries(
    registry_factory: RegistryFactory, image_factory: ImageFactory
) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    reg = registry_factory(address=address)
    image = small_image(image_factory)
    before = len(reg.requests())

    with pytest.raises(RegistryError) as info:
        push_image(image, [ref(reg, "app:1")], client_factory=client_factory_for(reg))
    assert info.value.message.startswith(f"TLS handshake with {reg.host} failed")
    assert f"--insecure-registry {reg.host}" in info.value.hint
    assert len(reg.requests()) == before  # nothing, credentials least of all, went over plain HTTP

    result = push_image(image, [ref(reg, "app:1")], client_factory=client_factory_for(reg, insecure=True))
    assert result.digest == image.digest


# -- pull -------------------------------------------------------------------------------------------------


def test_pull_by_tag_and_by_digest(registry: Registry, image_factory: ImageFactory, tmp_path: Path) -> None:
    image = small_image(image_factory)
    factory = client_factory_for(registry)
    push_image(image, [ref(registry, "app:v1")], client_factory=factory)
    blobs = tmp_path / "blobs"

    pulled = pull_image(ref(registry, "app:v1"), Platform(), blobs, client_factory=factory)

    assert pulled.digest == image.digest and pulled.index_digest is None
    assert pulled.config == json.loads(image.config_bytes())
    assert pulled.manifest == image.manifest()
    assert [layer.name for layer in pulled.layers] == ["base", "base"]
    for mine, theirs in zip(image.layers, pulled.layers, strict=True):
        assert theirs.descriptor.digest == mine.digest and theirs.diff_id == mine.diff_id
        assert theirs.blob == blobs / "sha256" / mine.digest.split(":")[1]
        assert theirs.blob.read_bytes() == mine.blob.read_bytes()
        assert theirs.history == f"pyimage test layer {mine.name}"
    assert not list(blobs.rglob("*.part"))

    by_digest = pull_image(ref(registry, f"app@{image.digest}"), Platform(), blobs, client_factory=factory)
    assert by_digest.digest == image.digest
    assert by_digest.layers == pulled.layers


def test_pull_reuses_verified_blobs_and_replaces_corrupt_ones(
    registry: Registry, image_factory: ImageFactory, tmp_path: Path
) -> None:
    image = small_image(image_factory)
    factory = client_factory_for(registry)
    push_image(image, [ref(registry, "app:v1")], client_factory=factory)
    blobs = tmp_path / "blobs"
    pulled = pull_image(ref(registry, "app:v1"), Platform(), blobs, client_factory=factory)
    fetched = len(blob_requests(registry, "GET"))

    pull_image(ref(registry, "app:v1"), Platform(), blobs, client_factory=factory)
    assert len(blob_requests(registry, "GET")) == fetched

    victim = pulled.layers[1].blob
    victim.write_bytes(b"\0" * victim.stat().st_size)  # right size, wrong bytes
    again = pull_image(ref(registry, "app:v1"), Platform(), blobs, client_factory=factory)
    assert len(blob_requests(registry, "GET")) == fetched + 1
    assert again.layers[1].blob.read_bytes() == image.layers[1].blob.read_bytes()


def test_pull_picks_the_platform_from_an_index(
    registry: Registry, image_factory: ImageFactory, tmp_path: Path
) -> None:
    factory = client_factory_for(registry)
    amd64 = small_image(image_factory, label="amd64", platform=Platform("linux", "amd64"))
    arm64 = small_image(image_factory, label="arm64", platform=Platform("linux", "arm64", "v8"))
    for image in (amd64, arm64):
        push_image(image, [Reference(registry.host, "multi", None, image.digest)], client_factory=factory)
    index = canonical_json({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": [amd64.manifest_descriptor(amd64.platform).to_json(),
                      arm64.manifest_descriptor(arm64.platform).to_json()],
    })
    with factory(registry.host) as client:
        index_digest = client.put_manifest("multi", "latest", index, MEDIA_OCI_INDEX)

    pulled = pull_image(ref(registry, "multi"), Platform("linux", "arm64"), tmp_path / "blobs", client_factory=factory)

    assert pulled.digest == arm64.digest
    assert pulled.index_digest == index_digest
    assert pulled.config["architecture"] == "arm64"
    assert [layer.digest for layer in pulled.layers] == [layer.digest for layer in arm64.layers]

    with pytest.raises(RegistryError) as info:
        pull_image(ref(registry, "multi"), Platform("linux", "s390x"), tmp_path / "blobs", client_factory=factory)
    assert "has no image for linux/s390x" in info.value.message
    assert "linux/amd64, linux/arm64/v8" in info.value.message
    assert "--platform" in info.value.hint


def test_pull_reads_docker_schema2_manifests(registry: Registry, image_factory: ImageFactory, tmp_path: Path) -> None:
    image = small_image(image_factory)
    factory = client_factory_for(registry)
    push_image(image, [ref(registry, "legacy:oci")], client_factory=factory)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_DOCKER_MANIFEST,
        "config": {**image.config_descriptor().to_json(), "mediaType": MEDIA_DOCKER_CONFIG},
        "layers": [{**layer.descriptor.to_json(), "mediaType": MEDIA_DOCKER_LAYER_GZIP} for layer in image.layers],
    }
    data = json.dumps(manifest, indent=3).encode()  # docker's own spacing: the digest is of these exact bytes
    with factory(registry.host) as client:
        digest = client.put_manifest("legacy", "docker", data, MEDIA_DOCKER_MANIFEST)

    pulled = pull_image(ref(registry, "legacy:docker"), Platform(), tmp_path / "blobs", client_factory=factory)

    assert pulled.digest == digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert pulled.media_type == MEDIA_DOCKER_MANIFEST
    assert [layer.descriptor.media_type for layer in pulled.layers] == [MEDIA_DOCKER_LAYER_GZIP] * 2
    assert [layer.diff_id for layer in pulled.layers] == [layer.diff_id for layer in image.layers]


def test_missing_tag_is_a_clear_error(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as info:
        pull_image(ref(registry, "nothing:here"), Platform(), tmp_path, client_factory=client_factory_for(registry))
    assert info.value.message.startswith(f"{registry.host}/nothing:here not found")


def test_fetch_of_a_corrupted_blob_leaves_no_file(
    registry: Registry, image_factory: ImageFactory, tmp_path: Path
) -> None:
    image = small_image(image_factory)
    push_image(image, [ref(registry, "app:v1")], client_factory=client_factory_for(registry))
    layer = image.layers[1]
    hexpart = layer.digest.split(":")[1]
    stored = next(registry.storage.rglob(f"blobs/sha256/{hexpart[:2]}/{hexpart}/data"))
    stored.write_bytes(b"x" * layer.size)  # the registry's disk rots under it
    dest = tmp_path / "out" / "blob"

    with client_factory_for(registry)(registry.host) as client, pytest.raises(RegistryError) as info:
        client.fetch_blob("app", layer.digest, dest, size=layer.size)

    assert "does not match its digest" in info.value.message
    assert list(dest.parent.iterdir()) == []


# -- auth and failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "check"),
    [
        ("--username/--password-stdin", "given with --username and --password-stdin (user 'alice'): check both"),
        ("PYIMAGE_REGISTRY_USERNAME", "given with PYIMAGE_REGISTRY_USERNAME and PYIMAGE_REGISTRY_PASSWORD (user 'alice'): check both"),
    ],
)
def test_wrong_password_given_is_one_clear_error_naming_the_step_and_what_to_check(registry: Registry, image_factory: ImageFactory, source: str, check: str) -> None:
    def factory(host: str) -> RegistryClient:
        return RegistryClient(host, credentials=Credentials("alice", "not-it", source=source), retries=0)

    with pytest.raises(RegistryError) as info:
        push_image(small_image(image_factory), [ref(registry, "app:v1")], client_factory=factory)

    # the first request of the push is the existence check (HEAD), and the message says so
    assert info.value.message.startswith("401 Unauthorized checking blob sha256:")
    assert info.value.message.endswith(f"… in {registry.host}/app before pushing it")
    assert f"the registry rejected the user name and password {check}" in info.value.hint
    assert f"allowed to push to {registry.host}/app" in info.value.hint
    assert "docker login" not in info.value.hint  # the credentials given are used before any stored ones: logging in changes nothing
    assert "not-it" not in info.value.message + info.value.hint


def test_wrong_stored_password_says_to_log_in_again(registry: Registry, image_factory: ImageFactory) -> None:
    def factory(host: str) -> RegistryClient:
        return RegistryClient(host, credentials=Credentials("alice", "not-it", source="~/.docker/config.json"), retries=0)

    with pytest.raises(RegistryError) as info:
        push_image(small_image(image_factory), [ref(registry, "app:v1")], client_factory=factory)
    assert info.value.hint == f"the registry rejected the credentials from ~/.docker/config.json; run docker login {registry.host}, or pass --username and --password-stdin"


@pytest.mark.parametrize(
    ("variable", "file", "login"),
    [
        ("REGISTRY_AUTH_FILE", "auth.json", 'run podman login --authfile "$REGISTRY_AUTH_FILE" {host} (or skopeo login), or unset REGISTRY_AUTH_FILE'),
        ("XDG_RUNTIME_DIR", "containers/auth.json", "run podman login {host} (or skopeo login)"),
    ],
)
def test_wrong_password_in_a_containers_auth_file_names_the_login_that_rewrites_it(
    registry: Registry, image_factory: ImageFactory, tmp_path: Path, variable: str, file: str, login: str
) -> None:
    """New-user trial: credentials from $REGISTRY_AUTH_FILE were rejected and the hint said `docker login`, which
    writes ~/.docker/config.json, a file read after it: logging in that way changed nothing."""
    import base64

    auth = tmp_path / file
    auth.parent.mkdir(parents=True, exist_ok=True)
    auth.write_text(json.dumps({"auths": {registry.host: {"auth": base64.b64encode(b"alice:not-it").decode()}}}))
    env = {"HOME": str(tmp_path / "home"), variable: str(auth if variable == "REGISTRY_AUTH_FILE" else tmp_path)}
    creds = lookup_credentials(registry.host, "app", env=env)
    assert creds is not None

    with pytest.raises(RegistryError) as info:
        push_image(small_image(image_factory), [ref(registry, "app:v1")], client_factory=lambda host: RegistryClient(host, credentials=creds, retries=0))
    assert info.value.hint.startswith(f"the registry rejected the credentials from ${variable}")
    assert login.format(host=registry.host) in info.value.hint and "docker login" not in info.value.hint
    assert "not-it" not in info.value.message + info.value.hint


def test_no_credentials_for_a_registry_that_needs_them(registry: Registry, image_factory: ImageFactory) -> None:
    with pytest.raises(RegistryError) as info:
        push_image(small_image(image_factory), [ref(registry, "app:v1")],
                   client_factory=lambda host: RegistryClient(host, retries=0))
    assert info.value.message.startswith("401 Unauthorized")
    assert f"docker login {registry.host}" in info.value.hint


@pytest.fixture
def token_server(token_signing_key: SigningKey) -> Iterator[TokenServer]:
    server = TokenServer(
        token_signing_key,
        users={"alice": "wonderland", "bob": "builder"},
        acl={"alice": {"*": "pull,push"}, "bob": {"*": "pull"}, "": {"public/*": "pull"}},
        refresh_tokens={"refresh-alice": "alice"},
        token_field="access_token",
    ).start()
    yield server
    server.stop()


def test_token_auth_push_and_pull_reuse_one_token_per_scope(
    registry_factory: RegistryFactory, token_server: TokenServer, image_factory: ImageFactory, tmp_path: Path
) -> None:
    reg = registry_factory(token_server=token_server)
    image = small_image(image_factory)
    factory = client_factory_for(reg, "alice")

    push_image(image, [ref(reg, "team/app:1"), ref(reg, "team/app:2")], client_factory=factory)
    assert [(r.user, r.scopes) for r in token_server.requests] == [("alice", ("repository:team/app:pull,push",))]

    pull_image(ref(reg, "team/app:1"), Platform(), tmp_path / "blobs", client_factory=factory)
    assert len(token_server.requests) == 2
    assert token_server.requests[1].scopes == ("repository:team/app:pull",)

    other = small_image(image_factory, label="other")
    result = push_image(other, [ref(reg, "team/other:1")], client_factory=factory, mount_from=["team/app"])
    assert result.mounted == 1  # the hello.txt layer is the same in both images
    assert len(token_server.requests) == 3  # one token covers pushing to team/other and mounting from team/app
    assert token_server.requests[-1].scopes == ("repository:team/app:pull", "repository:team/other:pull,push")


def test_identity_token_is_exchanged_by_oauth2_post(
    registry_factory: RegistryFactory, token_server: TokenServer, image_factory: ImageFactory
) -> None:
    reg = registry_factory(token_server=token_server)

    def factory(host: str) -> RegistryClient:
        return RegistryClient(host, credentials=Credentials(identity_token="refresh-alice", source="test"), retries=0)

    image = small_image(image_factory)
    assert push_image(image, [ref(reg, "app:1")], client_factory=factory).digest == image.digest
    assert [(r.method, r.user) for r in token_server.requests] == [("POST", "alice")]


def test_wrong_password_at_the_token_server_is_one_clear_error(
    registry_factory: RegistryFactory, token_server: TokenServer, image_factory: ImageFactory
) -> None:
    reg = registry_factory(token_server=token_server)

    def factory(host: str) -> RegistryClient:
        creds = Credentials("alice", "wrong", source="~/.docker/config.json")
        return RegistryClient(host, credentials=creds, retries=0)

    with pytest.raises(RegistryError) as info:
        push_image(small_image(image_factory), [ref(reg, "app:1")], client_factory=factory)
    assert info.value.message.startswith(f"401 Unauthorized authenticating to {reg.host} as 'alice'")
    assert "~/.docker/config.json" in info.value.hint
    given = Credentials("alice", "wrong", source="--username/--password-stdin")
    with pytest.raises(RegistryError) as info:
        push_image(small_image(image_factory), [ref(reg, "app:1")], client_factory=lambda host: RegistryClient(host, credentials=given, retries=0))
    assert info.value.hint.startswith("the registry rejected the user name and password given with --username and --password-stdin (user 'alice'): check both")
    assert "docker login" not in info.value.hint


def test_user_without_push_permission_gets_a_permission_hint(
    registry_factory: RegistryFactory, token_server: TokenServer, image_factory: ImageFactory
) -> None:
    reg = registry_factory(token_server=token_server)

    with pytest.raises(RegistryError) as info:
        push_image(small_image(image_factory), [ref(reg, "app:1")], client_factory=client_factory_for(reg, "bob"))

    assert info.value.message.startswith("401 Unauthorized pushing blob sha256:")  # the upload: bob may check (pull)
    assert f"to {reg.host}/app" in info.value.message
    assert f"'bob' may not push to {reg.host}/app" in info.value.hint
    assert not any(e.method == "PUT" and "/manifests/" in e.path for e in reg.requests())


def test_anonymous_pull_of_a_public_repository_uses_an_anonymous_token(
    registry_factory: RegistryFactory, token_server: TokenServer, image_factory: ImageFactory, tmp_path: Path
) -> None:
    reg = registry_factory(token_server=token_server)
    image = small_image(image_factory)
    push_image(image, [ref(reg, "public/base:1")], client_factory=client_factory_for(reg, "alice"))

    token_server.token_field = "token"  # the spec's other spelling
    pulled = pull_image(ref(reg, "public/base:1"), Platform(), tmp_path / "blobs",
                        client_factory=lambda host: RegistryClient(host, retries=0))

    assert pulled.digest == image.digest
    assert token_server.requests[-1].user is None


def test_unreachable_registry_is_one_clear_error(image_factory: ImageFactory) -> None:
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryError) as info:
        push_image(small_image(image_factory), [parse_reference(f"{host}/app:1")],
                   client_factory=lambda h: RegistryClient(h, retries=1, backoff=0.01))
    assert info.value.message.startswith(f"cannot connect to {host}: ")
    assert info.value.hint.startswith(f"start the registry on {host}")  # loopback: plain HTTP was tried already


def test_registry_killed_mid_push_leaves_no_tag_and_a_rerun_completes(
    registry: Registry, image_factory: ImageFactory
) -> None:
    image = image_factory({"a": os.urandom(30 * KiB)}, {"b": os.urandom(20 * KiB)}, {"c": os.urandom(10 * KiB)})
    target = ref(registry, "crash:1")
    done: list[str] = []

    def kill_after_first_blob(digest: str, status: str, size: int) -> None:
        done.append(digest)
        if len(done) == 1:
            registry.kill()

    with pytest.raises(RegistryError) as info:
        push_image(image, [target], client_factory=client_factory_for(registry), jobs=1, progress=kill_after_first_blob)
    assert info.value.message.startswith(f"cannot connect to {registry.host}: ")

    registry.start()  # same storage, same port
    gone = skopeo_inspect(registry, str(target), check=False)
    assert gone.returncode != 0 and "manifest unknown" in gone.stderr

    result = push_image(image, [target], client_factory=client_factory_for(registry))
    assert result.skipped == 1 and result.uploaded == 3
    assert inspect_json(registry, str(target))["Digest"] == image.digest


# -- 5xx and 429, injected by a proxy in front of the real registry ----------------------------------------


@pytest.fixture
def proxy(registry: Registry) -> Iterator[FaultProxy]:
    server = FaultProxy(registry.url).start()
    yield server
    server.stop()


def proxied_factory(registry: Registry, proxy: FaultProxy, **kwargs: object) -> Callable[[str], RegistryClient]:
    inner = client_factory_for(registry, None, **kwargs)
    return lambda host: inner(proxy.host)


def test_5xx_and_429_are_retried_and_retry_after_is_respected(
    registry: Registry, proxy: FaultProxy, image_factory: ImageFactory
) -> None:
    image = small_image(image_factory)
    proxy.faults += [
        Fault("HEAD", "/blobs/", 500),
        Fault("PUT", "/blobs/uploads/", 503),
        Fault("PUT", "/manifests/v1", 429, {"Retry-After": "1"}),
    ]
    target = Reference(proxy.host, "app", "v1")
    started = time.monotonic()

    result = push_image(image, [target], client_factory=proxied_factory(registry, proxy), jobs=1)

    assert time.monotonic() - started >= 1.0  # waited as Retry-After asked
    assert result.uploaded == 3 and not proxy.faults
    statuses = [status for method, path, status in proxy.log if method == "PUT" and "/manifests/" in path]
    assert statuses == [429, 201]
    assert inspect_json(registry, f"{registry.host}/app:v1")["Digest"] == image.digest


def test_a_long_retry_after_fails_at_once_with_a_rate_limit_hint(
    registry: Registry, proxy: FaultProxy, image_factory: ImageFactory
) -> None:
    proxy.faults.append(Fault("PUT", "/manifests/v1", 429, {"Retry-After": "3600"}))
    started = time.monotonic()

    with pytest.raises(RegistryError) as info:
        push_image(small_image(image_factory), [Reference(proxy.host, "app", "v1")],
                   client_factory=proxied_factory(registry, proxy))

    assert time.monotonic() - started < 10
    assert info.value.message.startswith(f"429 Too Many Requests pushing manifest {proxy.host}/app:v1")
    assert "rate-limiting" in info.value.hint


def test_a_registry_that_keeps_failing_gets_a_bounded_number_of_attempts(
    registry: Registry, proxy: FaultProxy, image_factory: ImageFactory
) -> None:
    proxy.faults += [Fault("HEAD", "/blobs/", 503) for _ in range(10)]

    with pytest.raises(RegistryError) as info:
        push_image(small_image(image_factory), [Reference(proxy.host, "app", "v1")],
                   client_factory=proxied_factory(registry, proxy, retries=2), jobs=1)

    assert info.value.message.startswith("503 Service Unavailable checking blob sha256:")
    assert len([1 for method, _, _ in proxy.log if method == "HEAD"]) == 3  # the first try and 2 retries


def test_a_failed_chunk_resumes_from_the_reported_range(
    registry: Registry, proxy: FaultProxy, tmp_path: Path
) -> None:
    data = os.urandom(4 * 64 * KiB)
    path = tmp_path / "blob"
    path.write_bytes(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    proxy.faults.append(Fault("PATCH", "/blobs/uploads/", 502, after=1))  # the second chunk fails
    factory = proxied_factory(registry, proxy, monolithic_max=64 * KiB, chunk_size=64 * KiB)

    with factory(proxy.host) as client:
        client.upload_blob("chunky", digest, len(data), path)
        assert client.blob_exists("chunky", digest)

    patches = [status for method, _, status in proxy.log if method == "PATCH"]
    assert patches == [202, 502, 202, 202, 202]  # chunk 2 sent again after the status check, chunk 1 not
    assert [st for m, p, st in proxy.log if m == "GET" and "/blobs/uploads/" in p] == [204]
    assert len([1 for m, _, _ in proxy.log if m == "POST"]) == 1


def test_a_failed_monolithic_put_is_never_resent_to_the_same_session(
    registry: Registry, proxy: FaultProxy, tmp_path: Path
) -> None:
    data = os.urandom(10 * KiB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    proxy.faults.append(Fault("PUT", "/blobs/uploads/", 500))

    with proxied_factory(registry, proxy)(proxy.host) as client:
        client.upload_blob("mono", digest, len(data), data)
        assert client.blob_exists("mono", digest)

    steps = [(m, p.split("?")[0], st) for m, p, st in proxy.log if "/blobs/" in p]
    puts = [(p, st) for m, p, st in steps if m == "PUT"]
    assert [st for _, st in puts] == [500, 201]
    assert puts[0][0] != puts[1][0], "the second PUT went to a new upload session"
    # Between them: did the blob land after all? (no) then a new session.
    assert [(m, st) for m, _, st in steps] == [("POST", 202), ("PUT", 500), ("HEAD", 404), ("POST", 202),
                                               ("PUT", 201), ("HEAD", 200)]


def test_a_rate_limited_chunk_waits_as_retry_after_asks_then_resumes(
    registry: Registry, proxy: FaultProxy, tmp_path: Path
) -> None:
    data = os.urandom(4 * 64 * KiB)
    path = tmp_path / "blob"
    path.write_bytes(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    proxy.faults.append(Fault("PATCH", "/blobs/uploads/", 429, {"Retry-After": "1"}, after=1))
    factory = proxied_factory(registry, proxy, monolithic_max=64 * KiB, chunk_size=64 * KiB)
    started = time.monotonic()

    with factory(proxy.host) as client:
        client.upload_blob("limited", digest, len(data), path)

    assert time.monotonic() - started >= 1.0  # the one retry policy honours Retry-After for upload steps too
    assert [st for m, _, st in proxy.log if m == "PATCH"] == [202, 429, 202, 202, 202]
    assert len([1 for m, _, _ in proxy.log if m == "POST"]) == 1


def test_inspect_shows_a_one_platform_registry_image_whatever_its_platform(registry_factory: RegistryFactory, image_factory: ImageFactory, tmp_path: Path) -> None:
    """An arm64-only image in a registry: ``pyimage inspect REF`` shows it without ``--platform`` (it asked for one
    before, as if the image had to run here); a platform it is not is still an error naming the one it is."""
    import sys

    reg = registry_factory(anonymous=True)
    image = small_image(image_factory, platform=Platform("linux", "arm64", "v8"))
    push_image(image, [ref(reg, "arm/app:1")], client_factory=client_factory_for(reg))
    cmd = [sys.executable, "-m", "pyimage", "inspect", "--json", "--cache-dir", str(tmp_path / "cache"), f"{reg.host}/arm/app:1"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["platform"] == "linux/arm64/v8"
    wrong = subprocess.run([*cmd, "--platform", "linux/amd64"], capture_output=True, text=True)
    assert wrong.returncode == 1 and "is a linux/arm64 image, not linux/amd64" in wrong.stderr
