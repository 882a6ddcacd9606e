"""Credentials are found where docker, podman and skopeo users keep them, in their order, and never shown."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from pyimage.errors import ConfigError, RegistryError
from pyimage.oci.auth import Credentials, lookup_credentials


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def env(home: Path, tmp_path: Path) -> dict[str, str]:
    """A clean environment: only HOME and a PATH with a bin dir for fake credential helpers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    return {"HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def found(registry: str, *args: str | None, **kwargs: object) -> Credentials:
    creds = lookup_credentials(registry, *args, **kwargs)  # type: ignore[arg-type]
    assert creds is not None, f"no credentials found for {registry}"
    return creds


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def docker_config(home: Path, data: object) -> Path:
    return write_json(home / ".docker" / "config.json", data)


def install_helper(env: dict[str, str], tmp_path: Path, name: str, store: dict[str, dict[str, str]]) -> Path:
    """A real ``docker-credential-NAME`` program on PATH that answers from ``store`` and logs what it was asked."""
    bin_dir = Path(env["PATH"].split(os.pathsep)[0])
    log = tmp_path / f"{name}.log"
    store_file = write_json(tmp_path / f"{name}.json", store)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"server = sys.stdin.read().strip()\n"
        f"open({str(log)!r}, 'a').write(sys.argv[1] + ' ' + server + '\\n')\n"
        f"store = json.load(open({str(store_file)!r}))\n"
        "if server not in store:\n"
        "    print('credentials not found in native keychain')\n"
        "    sys.exit(1)\n"
        "print(json.dumps(dict(ServerURL=server, **store[server])))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return log


def test_nothing_configured_means_anonymous(env: dict[str, str]) -> None:
    assert lookup_credentials("ghcr.io", env=env) is None


def test_explicit_credentials_beat_env_and_files(env: dict[str, str], home: Path) -> None:
    docker_config(home, {"auths": {"ghcr.io": {"auth": _b64("file:filepw")}}})
    env.update({"PYIMAGE_REGISTRY_USERNAME": "envuser", "PYIMAGE_REGISTRY_PASSWORD": "envpw"})
    creds = found("ghcr.io", username="me", password="pw", env=env)
    assert (creds.username, creds.password) == ("me", "pw")


def test_env_credentials_beat_files(env: dict[str, str], home: Path) -> None:
    docker_config(home, {"auths": {"ghcr.io": {"auth": _b64("file:filepw")}}})
    env.update({"PYIMAGE_REGISTRY_USERNAME": "envuser", "PYIMAGE_REGISTRY_PASSWORD": "envpw"})
    creds = found("ghcr.io", env=env)
    assert (creds.username, creds.password, creds.source) == ("envuser", "envpw", "PYIMAGE_REGISTRY_USERNAME")


def test_half_given_credentials_are_a_config_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="a username needs a password"):
        lookup_credentials("ghcr.io", username="me", env=env)
    env["PYIMAGE_REGISTRY_USERNAME"] = "envuser"
    with pytest.raises(ConfigError) as info:
        lookup_credentials("ghcr.io", env=env)
    assert "PYIMAGE_REGISTRY_PASSWORD" in info.value.hint


def test_containers_auth_files_come_before_docker_config_in_podman_order(
    env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    docker_config(home, {"auths": {"quay.io": {"auth": _b64("docker:pw")}}})
    assert found("quay.io", env=env).username == "docker"
    write_json(home / ".config" / "containers" / "auth.json", {"auths": {"quay.io": {"auth": _b64("config:pw")}}})
    assert found("quay.io", env=env).username == "config"
    runtime = tmp_path / "run"
    write_json(runtime / "containers" / "auth.json", {"auths": {"quay.io": {"auth": _b64("runtime:pw")}}})
    env["XDG_RUNTIME_DIR"] = str(runtime)
    assert found("quay.io", env=env).username == "runtime"
    custom = write_json(tmp_path / "custom.json", {"auths": {"quay.io": {"auth": _b64("custom:pw")}}})
    env["REGISTRY_AUTH_FILE"] = str(custom)
    creds = found("quay.io", env=env)
    assert (creds.username, creds.source) == ("custom", "$REGISTRY_AUTH_FILE auths['quay.io']")


def test_a_file_without_this_host_falls_through_to_the_next(env: dict[str, str], home: Path) -> None:
    write_json(home / ".config" / "containers" / "auth.json", {"auths": {"other.io": {"auth": _b64("x:y")}}})
    docker_config(home, {"auths": {"quay.io": {"auth": _b64("docker:pw")}}})
    assert found("quay.io", env=env).username == "docker"


def test_docker_config_env_var_replaces_home_docker(env: dict[str, str], home: Path, tmp_path: Path) -> None:
    docker_config(home, {"auths": {"ghcr.io": {"auth": _b64("home:pw")}}})
    write_json(tmp_path / "dc" / "config.json", {"auths": {"ghcr.io": {"username": "dc", "password": "pw2"}}})
    env["DOCKER_CONFIG"] = str(tmp_path / "dc")
    creds = found("ghcr.io", env=env)
    assert (creds.username, creds.password) == ("dc", "pw2")


def test_auth_with_colon_in_password(env: dict[str, str], home: Path) -> None:
    docker_config(home, {"auths": {"ghcr.io": {"auth": _b64("me:pa:ss")}}})
    assert found("ghcr.io", env=env).password == "pa:ss"


@pytest.mark.parametrize("key", ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"])
@pytest.mark.parametrize("host", ["docker.io", "registry-1.docker.io", "index.docker.io"])
def test_docker_hub_aliases(env: dict[str, str], home: Path, key: str, host: str) -> None:
    docker_config(home, {"auths": {key: {"auth": _b64("hubuser:pw")}}})
    assert found(host, env=env).username == "hubuser"


def test_url_style_keys_match_their_host(env: dict[str, str], home: Path) -> None:
    docker_config(home, {"auths": {"https://localhost:5000/v1/": {"auth": _b64("loc:pw")}}})
    assert found("localhost:5000", env=env).username == "loc"
    assert lookup_credentials("localhost:5001", env=env) is None


def test_repository_scoped_keys_are_more_specific(env: dict[str, str], home: Path) -> None:
    write_json(
        home / ".config" / "containers" / "auth.json",
        {"auths": {"quay.io": {"auth": _b64("general:pw")}, "quay.io/team": {"auth": _b64("team:pw")}}},
    )
    assert found("quay.io", "team/app", env=env).username == "team"
    assert found("quay.io", "other/app", env=env).username == "general"


def test_identity_token(env: dict[str, str], home: Path) -> None:
    entry = {"auth": _b64("00000000-0000:"), "identitytoken": "refresh-xyz"}
    docker_config(home, {"auths": {"myacr.azurecr.io": entry}})
    creds = found("myacr.azurecr.io", env=env)
    assert creds.identity_token == "refresh-xyz"
    assert creds.username == "00000000-0000"
    assert creds.password == ""


def test_cred_helper_for_the_host_is_asked_with_the_host_on_stdin(
    env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    log = install_helper(env, tmp_path, "test", {"ghcr.io": {"Username": "helped", "Secret": "s3cret"}})
    docker_config(home, {"auths": {"ghcr.io": {"auth": _b64("stale:pw")}}, "credHelpers": {"ghcr.io": "test"}})
    creds = found("ghcr.io", env=env)
    assert (creds.username, creds.password) == ("helped", "s3cret")
    assert creds.source == "credential helper docker-credential-test"
    assert log.read_text() == "get ghcr.io\n"


def test_creds_store_is_the_fallback_and_docker_hub_is_asked_by_its_v1_url(
    env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    log = install_helper(env, tmp_path, "store", {"https://index.docker.io/v1/": {"Username": "hub", "Secret": "x"}})
    docker_config(home, {"auths": {"https://index.docker.io/v1/": {}}, "credsStore": "store"})
    assert found("docker.io", env=env).username == "hub"
    assert log.read_text() == "get https://index.docker.io/v1/\n"


def test_helper_token_username_means_identity_token(env: dict[str, str], home: Path, tmp_path: Path) -> None:
    install_helper(env, tmp_path, "test", {"ghcr.io": {"Username": "<token>", "Secret": "refresh"}})
    docker_config(home, {"credHelpers": {"ghcr.io": "test"}})
    creds = found("ghcr.io", env=env)
    assert creds.identity_token == "refresh" and creds.password == ""


def test_helper_without_credentials_means_anonymous(env: dict[str, str], home: Path, tmp_path: Path) -> None:
    install_helper(env, tmp_path, "test", {})
    docker_config(home, {"credsStore": "test"})
    assert lookup_credentials("ghcr.io", env=env) is None


def test_missing_helper_program_means_anonymous(env: dict[str, str], home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docker_config(home, {"credsStore": "not-installed-anywhere"})
    assert lookup_credentials("ghcr.io", env=env) is None
    # said as the command line's other notes are (a new-user trial saw a bare line among them)
    assert capsys.readouterr().err == "note: credential helper docker-credential-not-installed-anywhere is not on PATH; using no credentials for ghcr.io\n"


def test_broken_helper_is_a_registry_error_without_its_output(env: dict[str, str], home: Path, tmp_path: Path) -> None:
    bin_dir = Path(env["PATH"].split(os.pathsep)[0])
    script = bin_dir / "docker-credential-broken"
    script.write_text("#!/bin/sh\necho 'token=supersecret oops' >&2\nexit 3\n")
    script.chmod(0o755)
    docker_config(home, {"credsStore": "broken"})
    with pytest.raises(RegistryError, match=r"^credential helper docker-credential-broken failed for ghcr\.io \(exit 3\)$") as info:
        lookup_credentials("ghcr.io", env=env)
    assert "docker-credential-broken" in info.value.message
    assert "supersecret" not in info.value.message + info.value.hint


def test_malformed_config_is_a_config_error_that_shows_no_secret(env: dict[str, str], home: Path) -> None:
    path = home / ".docker" / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"auths": {"ghcr.io": {"auth": "c2VjcmV0LXBhc3N3b3Jk"}}')  # missing brace
    with pytest.raises(ConfigError) as info:
        lookup_credentials("ghcr.io", env=env)
    assert "config.json" in info.value.message
    assert "c2VjcmV0" not in str(info.value) + info.value.hint


def test_auth_that_is_not_user_colon_password_is_a_config_error(env: dict[str, str], home: Path) -> None:
    docker_config(home, {"auths": {"ghcr.io": {"auth": _b64("no-colon-secret")}}})
    with pytest.raises(ConfigError) as info:
        lookup_credentials("ghcr.io", env=env)
    assert "no-colon-secret" not in info.value.message + info.value.hint


def test_repr_and_str_never_show_the_secret() -> None:
    creds = Credentials("me", "hunter2", source="test")
    token = Credentials("me", identity_token="tok-123", source="test")
    for text in (repr(creds), str(creds), f"{creds}", repr([creds]), repr(token), str(token)):
        assert "hunter2" not in text and "tok-123" not in text
    assert "me" in repr(creds) and "***" in repr(creds)


def test_default_env_is_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYIMAGE_REGISTRY_USERNAME", "u")
    monkeypatch.setenv("PYIMAGE_REGISTRY_PASSWORD", "p")
    assert found("ghcr.io").username == "u"
