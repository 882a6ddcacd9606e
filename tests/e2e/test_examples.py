"""Each example becomes an image that real tools accept and that runs under runc, printing what the app prints."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from support.runc import free_port, run_image, start_image, wait_http

from .conftest import Pyimage, copy_example

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def hello(pyimage: Pyimage, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    work = tmp_path_factory.mktemp("hello")
    project = copy_example("hello-cli", work)
    layout = work / "layout"
    report = pyimage.build(project, layout, "v1", "-o", f"docker-archive:{work / 'hello.tar'}")
    return project, layout, report


def test_hello_cli_image_runs_its_console_script_in_runc(hello: tuple[Path, Path, dict]) -> None:
    _project, layout, _report = hello
    out = run_image(layout, "v1").stdout
    assert "hello, world" in out
    assert "python 3.11 at /opt/venv/bin/python" in out
    assert "123.5 MB is a natural size" in out  # humanize, from the site-packages layer, imported fine
    assert "hello, pyimage" in run_image(layout, "v1", args=["/opt/venv/bin/hello", "pyimage"]).stdout


def test_hello_cli_layers_are_named_and_ordered(hello: tuple[Path, Path, dict]) -> None:
    _project, _layout, report = hello
    names = [layer["name"] for layer in report["layers"]]
    assert names == ["base", "interpreter", "site-packages", "app"]
    site = report["layers"][2]
    assert sorted(p.split("==")[0] for p in site["packages"]) == ["attrs", "humanize"]
    assert report["layers"][3]["packages"] == ["hello-cli==1.0.0"]
    assert report["image"]["platform"] == "linux/amd64"


def test_skopeo_and_umoci_accept_the_oci_layout(hello: tuple[Path, Path, dict]) -> None:
    _project, layout, report = hello
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{layout}:v1"], capture_output=True, text=True, check=True).stdout)
    assert info["Digest"] == report["image"]["digest"]
    assert info["Layers"] == [layer["digest"] for layer in report["layers"]]
    assert "VIRTUAL_ENV=/opt/venv" in info["Env"]
    listed = subprocess.run(["umoci", "ls", "--layout", str(layout)], capture_output=True, text=True, check=True).stdout
    assert "v1" in listed.split()
    config = json.loads(subprocess.run(["skopeo", "inspect", "--config", f"oci:{layout}:v1"], capture_output=True, text=True, check=True).stdout)
    assert config["config"]["Entrypoint"] == ["/opt/venv/bin/hello"]
    assert [h["created_by"] for h in config["history"]][-3:] == ["pyimage: interpreter", "pyimage: site-packages", "pyimage: app"]
    assert config["created"] == "1970-01-01T00:00:00Z"


def test_docker_archive_output_is_read_back_by_skopeo(hello: tuple[Path, Path, dict], tmp_path: Path) -> None:
    project, _layout, report = hello
    archive = project.parent / "hello.tar"
    info = json.loads(subprocess.run(["skopeo", "inspect", f"docker-archive:{archive}"], capture_output=True, text=True, check=True).stdout)
    assert len(info["Layers"]) == len(report["layers"])
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "manifest.json" in names and "index.json" in names
    # and it runs: copy it into a layout the way a loader would, then run it
    subprocess.run(["skopeo", "copy", "--quiet", f"docker-archive:{archive}", f"oci:{tmp_path / 'copy'}:loaded"], check=True)
    assert "hello, world" in run_image(tmp_path / "copy", "loaded").stdout


def test_every_diff_id_is_the_sha256_of_the_layer_uncompressed(hello: tuple[Path, Path, dict]) -> None:
    import gzip
    import hashlib

    _project, layout, report = hello
    for layer in report["layers"]:  # site-packages is assembled from gzip members: checked by an independent gunzip
        raw = gzip.decompress((layout / "blobs" / "sha256" / layer["digest"].split(":")[1]).read_bytes())
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == layer["diff_id"], layer["name"]
        assert layer["uncompressed_size"] == len(raw), layer["name"]


def test_layer_tar_entries_are_normalized(hello: tuple[Path, Path, dict]) -> None:
    _project, layout, report = hello
    site = report["layers"][2]["digest"].split(":")[1]
    with tarfile.open(layout / "blobs" / "sha256" / site) as tar:
        members = tar.getmembers()
    assert members, "empty layer"
    assert {m.mtime for m in members} == {0}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert all(m.mode in (0o644, 0o755, 0o777) for m in members)
    seen = set()
    for m in members:  # every parent directory comes before its children
        parent = m.name.rstrip("/").rpartition("/")[0]
        assert not parent or parent in seen, f"{m.name} before its parent"
        if m.isdir():
            seen.add(m.name.rstrip("/"))


def test_two_builds_from_separate_caches_give_identical_digests(pyimage: Pyimage, hello: tuple[Path, Path, dict], tmp_path: Path) -> None:
    project, _layout, report = hello
    other = Pyimage(tmp_path / "other-cache", pyimage.base)
    again = other.build(project, tmp_path / "layout", "v1")
    assert again["image"]["digest"] == report["image"]["digest"]
    assert [l["digest"] for l in again["layers"]] == [l["digest"] for l in report["layers"]]


def test_web_service_answers_http_from_runc(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("web-service", tmp_path)
    pyimage.build(project, tmp_path / "layout", "web")
    port = free_port()
    with start_image(tmp_path / "layout", "web", env={"PORT": str(port), "HOST": "127.0.0.1"}) as container:
        body = json.loads(wait_http(f"http://127.0.0.1:{port}/", timeout=60, container=container))
    assert body == {"message": "hello from pyimage", "python": "3.11"}


def test_torch_app_has_heavy_layers_matching_plan_and_runs(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("torch-app", tmp_path)
    plan = json.loads(pyimage.run("plan", "--json", project=project).stdout)
    report = pyimage.build(project, tmp_path / "layout", "torch")
    names = [layer["name"] for layer in report["layers"]]
    assert names == ["base", "interpreter", "heavy:torch", "heavy:numpy", "site-packages", "app"]
    planned = {l["name"]: sorted(f"{p['name']}=={p['version']}" for p in l.get("packages", [])) for l in plan["layers"][2:]}
    built = {l["name"]: sorted(l["packages"]) for l in report["layers"][2:]}
    assert planned == built
    out = run_image(tmp_path / "layout", "torch", timeout=300).stdout
    assert "learned w=3.00 b=2.00" in out
    assert out.startswith("torch 2.13.0 numpy ")


def test_unknown_heavy_name_is_one_clear_error(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    done = pyimage.run("build", "--heavy", "humanise", "-o", f"oci:{tmp_path / 'out'}", project=project, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-2].startswith("error: heavy group 'humanise'") and "matches no package" in lines[-2]
    assert lines[-1].startswith("hint:") and "humanize" in lines[-1]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("example", ["hello-cli", "web-service"])
def test_plan_and_build_agree(example: str, pyimage: Pyimage, tmp_path: Path) -> None:
    """`pyimage plan` is the build's own decision, not a second opinion: the same layers, packages and run config."""
    project = copy_example(example, tmp_path)
    plan = json.loads(pyimage.run("plan", "--json", project=project).stdout)
    report = pyimage.build(project, tmp_path / "layout", "agree")
    planned = {l["name"]: sorted(f"{p['name']}=={p['version']}" for p in l.get("packages", [])) for l in plan["layers"] if "packages" in l}
    built = {l["name"]: sorted(l["packages"]) for l in report["layers"] if l["name"] in planned}
    assert planned == built and planned
    assert [l["name"] for l in plan["layers"][2:]] == [l["name"] for l in report["layers"] if l["name"] not in ("base", "interpreter")]
    inspected = json.loads(pyimage.run("inspect", "--json", f"oci:{tmp_path / 'layout'}:agree", base=False).stdout)["config"]
    assert plan["config"] and all(inspected.get(key) == value for key, value in plan["config"].items()), (plan["config"], inspected)
