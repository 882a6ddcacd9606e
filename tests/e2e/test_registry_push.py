"""pyimage against a real registry: push, read back with skopeo, run, re-push nothing, mount shared layers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.registry import start_registry
from support.runc import run_image

from .conftest import Pyimage, copy_example

pytestmark = [pytest.mark.e2e, pytest.mark.registry]


def _build_push(pyimage: Pyimage, project: Path, ref: str, password: str = "wonderland", base: str | None = None) -> subprocess.CompletedProcess[str]:
    # A registry base here is an image pyimage pushed (no Docker Hub): its venv is /opt/venv, so this one's is another.
    venv = ["--set", "venv=/opt/venv-app"] if base else []
    cmd = [sys.executable, "-m", "pyimage", "build", "--json", "--cache-dir", str(pyimage.cache_dir), "-C", str(project),
           "--base", base or f"rootfs:{pyimage.base}", "--push", ref, "--username", "alice", "--password-stdin", *venv]
    return subprocess.run(cmd, input=password + "\n", capture_output=True, text=True)


def test_push_skopeo_reads_it_back_and_it_runs(pyimage: Pyimage, tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "reg")
    try:
        project = copy_example("hello-cli", tmp_path)
        done = _build_push(pyimage, project, f"{reg.host}/apps/hello:1.0")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        pushed = report["pushed"][0]
        assert pushed["digest"] == report["image"]["digest"] and pushed["uploaded"] >= 4
        assert "wonderland" not in done.stdout + done.stderr
        inspect = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--creds", reg.creds(), f"docker://{reg.host}/apps/hello:1.0"], capture_output=True, text=True, check=True).stdout)
        assert inspect["Digest"] == report["image"]["digest"]
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--src-creds", reg.creds(), f"docker://{reg.host}/apps/hello:1.0", f"oci:{tmp_path / 'pulled'}:x"], check=True)
        assert "hello, world" in run_image(tmp_path / "pulled", "x").stdout

        again = json.loads(_build_push(pyimage, project, f"{reg.host}/apps/hello:1.0").stdout)["pushed"][0]
        assert again["uploaded"] == 0 and again["bytes_uploaded"] == 0

        other = copy_example("hello-cli", tmp_path / "b", new_name="hello-two")
        second = json.loads(_build_push(pyimage, other, f"{reg.host}/apps/hello-two:1.0").stdout)["pushed"][0]
        assert second["mounted"] >= 3  # base, interpreter and site-packages come from apps/hello; only app + config upload
        assert second["uploaded"] == 2

        wrong = _build_push(pyimage, project, f"{reg.host}/apps/hello:1.0", password="nope")
        assert wrong.returncode == 1
        lines = wrong.stderr.strip().splitlines()
        assert lines[-2].startswith("error:") and reg.host in lines[-2] and lines[-1].startswith("hint:")
        assert "nope" not in wrong.stderr and "Traceback" not in wrong.stderr
    finally:
        reg.stop()


def test_image_in_a_registry_is_used_as_base(pyimage: Pyimage, tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "reg")
    try:
        project = copy_example("hello-cli", tmp_path)
        first = json.loads(_build_push(pyimage, project, f"{reg.host}/base/hello:1").stdout)
        # the pushed image (Debian + python3 + a venv) serves as the base of another build
        other = copy_example("web-service", tmp_path / "w")
        (other / "pylock.pyimage.toml").unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "pyimage", "build", "--json", "--cache-dir", str(tmp_path / "fresh-cache"), "-C", str(other),
               "--base", f"docker://{reg.host}/base/hello:1", "--username", "alice", "--password-stdin", "-o", f"oci:{tmp_path / 'out'}:w",
               "--set", "venv=/opt/venv-app"]  # the base is a pyimage image: its venv is /opt/venv
        done = subprocess.run(cmd, input="wonderland\n", capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["base"].endswith("@" + first["image"]["digest"])  # the pinned digest is reported
        base_layers = [l for l in report["layers"] if l["name"] == "base"]
        assert [l["digest"] for l in base_layers] == [l["digest"] for l in first["layers"]]
    finally:
        reg.stop()


def test_repository_and_tags_from_config_push_over_tls_with_a_ca_bundle(pyimage: Pyimage, tmp_path: Path) -> None:
    from support.registry import make_tls_files

    tls = make_tls_files(tmp_path / "tls")
    reg = start_registry(tmp_path / "reg", tls=tls)
    try:
        project = copy_example("hello-cli", tmp_path)
        pyproject = project / "pyproject.toml"
        pyproject.write_text(pyproject.read_text() + f'repository = "{reg.host}/apps/tls"\ntags = ["1.0", "stable"]\n')
        cmd = [sys.executable, "-m", "pyimage", "build", "--json", "--cache-dir", str(pyimage.cache_dir), "-C", str(project),
               "--base", f"rootfs:{pyimage.base}", "--username", "alice", "--password-stdin"]
        untrusted = subprocess.run(cmd, input="wonderland\n", capture_output=True, text=True)
        assert untrusted.returncode == 1 and "Traceback" not in untrusted.stderr
        assert untrusted.stderr.strip().splitlines()[-1].startswith("hint:") and "CA" in untrusted.stderr
        done = subprocess.run([*cmd, "--ca-bundle", str(tls.ca_cert)], input="wonderland\n", capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert [p["reference"] for p in report["pushed"]] == [f"{reg.host}/apps/tls:1.0", f"{reg.host}/apps/tls:stable"]
        assert report["outputs"] == [] and not (project / "dist").exists()  # a configured repository is the output: nothing on disk
        for tag in ("1.0", "stable"):
            info = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--creds", reg.creds(), f"docker://{reg.host}/apps/tls:{tag}"], capture_output=True, text=True, check=True).stdout)
            assert info["Digest"] == report["image"]["digest"]
    finally:
        reg.stop()


def test_a_push_only_build_takes_pruned_layers_from_the_registry_without_fetching_wheels(pyimage: Pyimage, tmp_path: Path) -> None:
    """CI keeps a small cache: `cache prune` drops the blobs and wheels but keeps the layer records. A push-only
    rebuild after a code change then asks the registry for the layers it built before instead of downloading
    their wheels again; only the app layer and the config go up, and the image runs."""
    reg = start_registry(tmp_path / "reg")
    try:
        cache = tmp_path / "ci-cache"
        mine = Pyimage(cache, pyimage.base)
        project = copy_example("hello-cli", tmp_path)
        ref = f"{reg.host}/apps/hello:1.0"
        first = _build_push(mine, project, ref)
        assert first.returncode == 0, first.stderr
        first_layers = {l["name"]: l for l in json.loads(first.stdout)["layers"]}

        pruned = subprocess.run([sys.executable, "-m", "pyimage", "cache", "prune", "--max-size", "0", "--cache-dir", str(cache)], capture_output=True, text=True)
        assert pruned.returncode == 0, pruned.stderr
        assert not list((cache / "wheels").glob("*/*.whl")) and not list((cache / "blobs" / "sha256").iterdir())
        module = project / "src" / "hello_cli" / "__init__.py"
        module.write_text(module.read_text().replace('f"hello, {self.name}"', 'f"hello again, {self.name}"'))

        done = _build_push(mine, project, ref)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        layers = {l["name"]: l for l in report["layers"]}
        for name in ("base", "interpreter", "site-packages"):  # the rootfs base is not compressed again either
            assert layers[name]["remote"] and layers[name]["digest"] == first_layers[name]["digest"], name
        assert not layers["app"]["remote"] and layers["app"]["digest"] != first_layers["app"]["digest"]
        assert not list((cache / "wheels").glob("*/*.whl")), "a wheel was fetched for a layer the registry holds"
        assert not (cache / "blobs" / "sha256" / layers["site-packages"]["digest"][7:]).exists()
        assert report["pushed"][0]["uploaded"] == 2  # the app layer and the config

        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--src-creds", reg.creds(), f"docker://{ref}", f"oci:{tmp_path / 'pulled'}:x"], check=True)
        assert "hello again, world" in run_image(tmp_path / "pulled", "x").stdout

        # With an output on this machine the blobs are needed: the layers are built here again, same digests.
        local = mine.build(project, tmp_path / "out")
        built = {l["name"]: l for l in local["layers"]}
        assert not built["site-packages"]["remote"] and built["site-packages"]["digest"] == first_layers["site-packages"]["digest"]
        assert list((cache / "wheels").glob("*/*.whl"))
    finally:
        reg.stop()


def test_a_push_only_build_does_not_download_a_registry_base_the_target_holds(pyimage: Pyimage, tmp_path: Path) -> None:
    """With a registry base, the pruned cache still knows the base's verified diff_ids and what its scan found,
    so a push-only build neither downloads the base's blobs nor any wheel; without the push only, it does."""
    reg = start_registry(tmp_path / "reg")
    try:
        base_ref = f"{reg.host}/base/hello:1"
        assert _build_push(pyimage, copy_example("hello-cli", tmp_path / "b"), base_ref).returncode == 0
        cache = tmp_path / "ci-cache"
        mine = Pyimage(cache, pyimage.base)
        project = copy_example("hello-cli", tmp_path, new_name="hello-two")
        ref = f"{reg.host}/apps/two:ci"
        first = _build_push(mine, project, ref, base=f"docker://{base_ref}")
        assert first.returncode == 0, first.stderr
        subprocess.run([sys.executable, "-m", "pyimage", "cache", "prune", "--max-size", "0", "--cache-dir", str(cache)], check=True, capture_output=True)
        module = project / "src" / "hello_two" / "__init__.py"
        module.write_text(module.read_text() + "\nREVISION = 2\n")

        done = _build_push(mine, project, ref, base=f"docker://{base_ref}")
        assert done.returncode == 0, done.stderr
        layers = json.loads(done.stdout)["layers"]
        assert all(l["remote"] for l in layers if l["name"] == "base") and sum(l["name"] == "base" for l in layers) >= 3
        assert not list((cache / "blobs" / "sha256").iterdir()) or all(
            (cache / "blobs" / "sha256" / l["digest"][7:]).exists() is False for l in layers if l["name"] != "app"
        )
        assert not list((cache / "wheels").glob("*/*.whl"))
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--src-creds", reg.creds(), f"docker://{ref}", f"oci:{tmp_path / 'pulled'}:x"], check=True)
        assert "hello, world" in run_image(tmp_path / "pulled", "x").stdout
    finally:
        reg.stop()
