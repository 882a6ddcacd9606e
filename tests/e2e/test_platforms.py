"""One build, several platforms: an OCI image index of linux/amd64 and linux/arm64 images, built on x86 with no
emulation (pyimage never runs target code), then each image run: amd64 natively, arm64 under qemu-user-static.

The arm64 base is a Debian bookworm rootfs made by ``mmdebstrap --arch=arm64`` (its maintainer scripts run under
qemu; minutes the first time, then cached by its inputs like the amd64 one).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.engines import Dockerd
from support.registry import start_registry
from support.rootfs import debian_rootfs, qemu_ready
from support.runc import run_image

from .conftest import Pyimage, assert_image_ok, copy_example

pytestmark = [pytest.mark.e2e, pytest.mark.platforms]

PLATFORMS = "linux/amd64,linux/arm64"
MACHINE = "import platform; print(platform.machine())"


@pytest.fixture(scope="session")
def arm64_rootfs(test_cache_dir: Path) -> Path:
    if not qemu_ready("aarch64"):
        import os

        reason = "arm64 binaries do not run here (apt-get install qemu-user-static binfmt-support; see .ci/run)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI is set but {reason}", pytrace=False)
        pytest.skip(reason)
    return debian_rootfs(test_cache_dir, arch="arm64")


def bases(pyimage: Pyimage, arm64_rootfs: Path) -> str:
    return f'base={{ "linux/amd64" = "rootfs:{pyimage.base}", "linux/arm64" = "rootfs:{arm64_rootfs}" }}'


def build_both(pyimage: Pyimage, arm64_rootfs: Path, project: Path, *args: str) -> dict:
    done = pyimage.run("build", "--json", "--platform", PLATFORMS, "--set", bases(pyimage, arm64_rootfs), *args, project=project, base=False)
    return json.loads(done.stdout)


def one_platform(layout: Path, tag: str, arch: str, dest: Path) -> Path:
    """The image for ``arch`` out of the index, copied into its own layout as a runtime would pick it."""
    subprocess.run(["skopeo", "copy", "--quiet", "--override-arch", arch, f"oci:{layout}:{tag}", f"oci:{dest}:{arch}"], check=True)
    return dest


@pytest.fixture(scope="module")
def hello_index(pyimage: Pyimage, arm64_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("hello-index")
    project = copy_example("hello-cli", work)
    report = build_both(pyimage, arm64_rootfs, project, "-o", f"oci:{work / 'layout'}:multi")
    return work / "layout", report


def test_two_platforms_make_one_image_index_under_one_tag(hello_index: tuple[Path, dict]) -> None:
    layout, report = hello_index
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", f"oci:{layout}:multi"], capture_output=True, text=True, check=True).stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == ["amd64", "arm64"]
    assert report["image"]["digest"] == json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    assert [p["platform"] for p in report["platforms"]] == ["linux/amd64", "linux/arm64"]
    assert [m["digest"] for m in raw["manifests"]] == [p["digest"] for p in report["platforms"]]
    subprocess.run(["skopeo", "copy", "--all", "--quiet", f"oci:{layout}:multi", f"oci:{layout.parent / 'all'}:multi"], check=True)


def test_inspect_lists_the_platforms_of_the_index(pyimage: Pyimage, hello_index: tuple[Path, dict]) -> None:
    layout, report = hello_index
    data = json.loads(pyimage.run("inspect", "--json", "--platform", "linux/arm64", f"oci:{layout}:multi", base=False).stdout)
    assert [(i["platform"], i["digest"]) for i in data["index"]] == [(p["platform"], p["digest"]) for p in report["platforms"]]
    assert data["platform"] == "linux/arm64"
    # for people: which one is shown, and --platform offered only where none was given (a new-user trial)
    chosen = pyimage.run("inspect", "--platform", "linux/arm64", f"oci:{layout}:multi", base=False).stdout
    assert "an image index of 2 platforms, showing linux/arm64" in chosen and "picks one" not in chosen
    default = pyimage.run("inspect", f"oci:{layout}:multi", base=False).stdout
    assert "an image index of 2 platforms (--platform picks one; showing linux/amd64)" in default


def test_pure_python_layers_are_one_blob_for_both_platforms_built_once(hello_index: tuple[Path, dict]) -> None:
    _layout, report = hello_index
    amd, arm = ({l["name"]: l for l in p["layers"]} for p in report["platforms"])
    assert amd["base"]["digest"] != arm["base"]["digest"]
    for name in ("interpreter", "site-packages", "app"):
        assert amd[name]["digest"] == arm[name]["digest"], name
        assert arm[name]["cached"], f"{name} was built again for arm64"


def test_each_platform_runs_its_own_image(hello_index: tuple[Path, dict], tmp_path: Path) -> None:
    layout, _report = hello_index
    for arch, machine in (("amd64", "x86_64"), ("arm64", "aarch64")):
        single = one_platform(layout, "multi", arch, tmp_path / arch)
        assert run_image(single, arch, args=["/opt/venv/bin/python", "-c", MACHINE], timeout=300).stdout.strip() == machine
        assert "hello, world" in run_image(single, arch, timeout=300).stdout


def test_a_native_extension_loads_on_arm64(pyimage: Pyimage, arm64_rootfs: Path, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path, "hello-numpy")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"attrs>=23"', '"attrs>=23", "numpy>=2"'))
    report = build_both(pyimage, arm64_rootfs, project, "-o", f"oci:{tmp_path / 'layout'}:np")
    amd, arm = ({l["name"]: l for l in p["layers"]} for p in report["platforms"])
    assert amd["site-packages"]["digest"] != arm["site-packages"]["digest"]  # numpy's wheels differ per platform
    assert any(p.startswith("numpy==") for p in arm["site-packages"]["packages"])
    single = one_platform(tmp_path / "layout", "np", "arm64", tmp_path / "arm")
    code = "import numpy, platform; print(platform.machine(), numpy.arange(4).sum(), numpy.__file__)"
    out = run_image(single, "arm64", args=["/opt/venv/bin/python", "-c", code], timeout=300).stdout.split()
    assert out[:2] == ["aarch64", "6"] and out[2].startswith("/opt/venv/lib/python3.11/site-packages/numpy/")


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_layer_blobs_built_on_arm64_are_the_same_bytes(kind: str, arm64_rootfs: Path, test_cache_dir: Path, tmp_path: Path) -> None:
    """An image built on an aarch64 machine (a Graviton runner, a Mac's Linux VM) has the digests of the same image
    built here: pyimage's layer encoder, run by arm64 Python on arm64 builds of its compressors, writes the same
    members. isal's igzip, the gzip encoder before, wrote other bytes for every chunk here."""
    import os
    import shutil
    import zipfile

    import deflate
    import zstandard

    from support.encoder import ENCODE, wheel_content
    from wheels_fixture import download_wheel

    if os.geteuid() != 0:
        pytest.skip("chroot into the arm64 root filesystem needs root")
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["tar", "-xf", str(arm64_rootfs), "-C", str(root)], check=True)
    site = root / "opt" / "site"
    aarch64 = ("manylinux2014_aarch64", "3.11")  # bookworm's python3
    for requirement in (f"deflate=={deflate.__version__}", f"zstandard=={zstandard.__version__}"):
        with zipfile.ZipFile(download_wheel(requirement, test_cache_dir / "wheels", aarch64)) as zf:
            zf.extractall(site)
    shutil.copytree(Path(__file__).resolve().parents[2] / "pyimage", site / "pyimage", ignore=shutil.ignore_patterns("__pycache__"))
    numpy_amd64 = download_wheel("numpy==2.0.2", test_cache_dir / "wheels")  # real content: libraries and modules
    (root / "opt" / "data").write_bytes(wheel_content(numpy_amd64, 2 * 4 * 1024 * 1024 + 123_457))

    here = subprocess.run([sys.executable, "-c", ENCODE, str(root / "opt" / "data"), kind], capture_output=True, text=True, check=True)
    there = subprocess.run(
        [shutil.which("chroot") or "/usr/sbin/chroot", str(root), "/usr/bin/python3", "-c", ENCODE + "import platform; print(platform.machine())", "/opt/data", kind],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": "/opt/site", "LC_ALL": "C.UTF-8"}, timeout=600,
    )
    assert there.returncode == 0, there.stderr[-2000:]
    *members, machine = there.stdout.splitlines()
    assert machine == "aarch64"
    assert len(members) == 4  # the encoder's id and three members
    assert members == here.stdout.splitlines()


def test_the_index_is_pushed_and_docker_pulls_each_platform(pyimage: Pyimage, arm64_rootfs: Path, dockerd: Dockerd, tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "reg")
    try:
        project = copy_example("hello-cli", tmp_path)
        ref = f"{reg.host}/apps/hello:multi"
        cmd = [sys.executable, "-m", "pyimage", "build", "--json", "--cache-dir", str(pyimage.cache_dir), "-C", str(project),
               "--platform", PLATFORMS, "--set", bases(pyimage, arm64_rootfs), "--push", ref, "--username", "alice", "--password-stdin"]
        done = subprocess.run(cmd, input="wonderland\n", capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["pushed"][0]["digest"] == report["image"]["digest"]
        dockerd.docker("login", reg.host, "--username", "alice", "--password-stdin", input="wonderland\n")
        for arch in ("arm64", "amd64"):  # amd64 last: the tag then names the image this machine runs
            dockerd.docker("pull", "--platform", f"linux/{arch}", ref)
            assert dockerd.docker("image", "inspect", "--format", "{{.Architecture}}", ref).stdout.strip() == arch
        assert "hello, world" in dockerd.docker("run", "--rm", "--network", "none", ref).stdout
    finally:
        reg.stop()


def test_a_docker_archive_of_several_platforms_is_refused_before_any_work(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    done = pyimage.run("build", "--platform", PLATFORMS, "-o", f"docker-archive:{tmp_path / 'a.tar'}", "--cache-dir", str(tmp_path / "fresh"), project=project, check=False)
    assert done.returncode == 2
    error, hint = done.stderr.strip().splitlines()[-2:]
    assert "a docker-archive holds one platform, and this build makes 2" in error
    assert hint.startswith("hint:") and "oci:DIR" in hint
    assert not (tmp_path / "fresh" / "blobs").exists() or not any((tmp_path / "fresh" / "blobs").rglob("*"))


def test_plan_shows_each_platform_and_what_they_share(pyimage: Pyimage, arm64_rootfs: Path, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    done = pyimage.run("plan", "--json", "--platform", PLATFORMS, "--set", bases(pyimage, arm64_rootfs), project=project, base=False)
    plan = json.loads(done.stdout)
    assert [p["platform"] for p in plan["platforms"]] == ["linux/amd64", "linux/arm64"]
    assert plan["shared"] == ["site-packages", "app"]
    assert "arm64" in plan["platforms"][1]["target"]


def test_an_sdist_with_native_code_for_a_foreign_platform_is_one_error_before_any_layer(pyimage: Pyimage, arm64_rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wheels_fixture import make_sdist

    links = tmp_path / "links"
    make_sdist(links, "cext", "1.0", {
        "setup.py": b"from setuptools import Extension, setup\nsetup(name='cext', version='1.0', ext_modules=[Extension('cext', ['cext.c'])])\n",
        "cext.c": b'#include <Python.h>\nstatic struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "cext"};\nPyMODINIT_FUNC PyInit_cext(void) { return PyModule_Create(&m); }\n',
    })
    project = copy_example("hello-cli", tmp_path, "hello-cext")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"attrs>=23"', '"attrs>=23", "cext==1.0"'))
    monkeypatch.setenv("PIP_FIND_LINKS", f"/opt/wheels {links}")
    cache = tmp_path / "cache"
    done = pyimage.run("build", "--platform", PLATFORMS, "--set", bases(pyimage, arm64_rootfs), "-o", f"oci:{tmp_path / 'out'}",
                       "--cache-dir", str(cache), project=project, base=False, check=False)
    assert done.returncode == 1, done.stderr
    error, hint = done.stderr.strip().splitlines()[-2:]
    assert error.startswith("error: cext: no wheel for CPython 3.11 on linux/arm64") and "cannot be compiled here for aarch64" in error
    assert hint.startswith("hint:") and "linux/arm64" in hint and hint.endswith("build linux/arm64 alone on an aarch64 runner")
    assert not (tmp_path / "out").exists()


def _pyimage(*args: str, cache: Path, stdin: str | None = "wonderland\n") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyimage", *args, "--cache-dir", str(cache)], input=stdin, capture_output=True, text=True)


def test_a_ci_matrix_merges_its_per_platform_builds_into_one_index(pyimage: Pyimage, arm64_rootfs: Path, tmp_path: Path) -> None:
    """Each platform built on its own runner (own cache) and pushed by tag; `pyimage index` lists the two
    manifests unchanged under one tag, downloading no layer; the same sources in layouts give the same index."""
    reg = start_registry(tmp_path / "reg")
    try:
        project = copy_example("hello-cli", tmp_path)
        auth = ["--username", "alice", "--password-stdin"]
        built = {}
        for arch, base, repo in (("amd64", pyimage.base, "apps/hello"), ("arm64", arm64_rootfs, "apps/hello-arm64")):
            done = _pyimage("build", "--json", "-C", str(project), "--platform", f"linux/{arch}", "--base", f"rootfs:{base}",
                            "--push", f"{reg.host}/{repo}:{arch}", "-o", f"oci:{tmp_path / arch}:{arch}", *auth, cache=tmp_path / f"runner-{arch}")
            assert done.returncode == 0, done.stderr
            built[arch] = json.loads(done.stdout)["image"]["digest"]

        fresh = tmp_path / "merge-cache"
        done = _pyimage("index", "--json", "--push", f"{reg.host}/apps/hello:1.0", "--annotation", "org.opencontainers.image.version=1.0",
                        f"{reg.host}/apps/hello:amd64", f"docker://{reg.host}/apps/hello-arm64:arm64", *auth, cache=fresh)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert [(p["platform"], p["digest"]) for p in report["platforms"]] == [("linux/amd64", built["amd64"]), ("linux/arm64", built["arm64"])]
        assert report["pushed"][0]["uploaded"] == 0  # arm64's blobs were mounted from its repository, amd64's were there
        blobs = [p for p in (fresh / "blobs" / "sha256").iterdir()] if (fresh / "blobs" / "sha256").is_dir() else []
        assert len(blobs) <= 2, "a layer was downloaded to merge an index"  # the two configs at most
        raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", "--creds", reg.creds(), f"docker://{reg.host}/apps/hello:1.0"],
                                        capture_output=True, text=True, check=True).stdout)
        assert [m["digest"] for m in raw["manifests"]] == [built["amd64"], built["arm64"]]
        assert raw["annotations"] == {"org.opencontainers.image.version": "1.0"}
        subprocess.run(["skopeo", "copy", "--quiet", "--override-arch", "arm64", "--src-tls-verify=false", "--src-creds", reg.creds(),
                        f"docker://{reg.host}/apps/hello:1.0", f"oci:{tmp_path / 'pulled'}:arm64"], check=True)
        assert run_image(tmp_path / "pulled", "arm64", args=["/opt/venv/bin/python", "-c", MACHINE], timeout=300).stdout.strip() == "aarch64"

        local = _pyimage("index", "--json", "-o", f"oci:{tmp_path / 'merged'}:1.0", "--annotation", "org.opencontainers.image.version=1.0",
                         f"oci:{tmp_path / 'amd64'}:amd64", f"oci:{tmp_path / 'arm64'}:arm64", cache=fresh, stdin=None)
        assert local.returncode == 0, local.stderr
        assert json.loads(local.stdout)["index"]["digest"] == report["index"]["digest"]
        assert_image_ok(tmp_path / "merged")

        twice = _pyimage("index", "-o", f"oci:{tmp_path / 'x'}", f"oci:{tmp_path / 'amd64'}:amd64", f"{reg.host}/apps/hello:amd64", *auth, cache=fresh)
        assert twice.returncode == 2 and "linux/amd64 comes from both" in twice.stderr and "Traceback" not in twice.stderr
        subprocess.run(["skopeo", "copy", "--quiet", "--format", "v2s2", "--dest-tls-verify=false", "--dest-creds", reg.creds(),
                        f"oci:{tmp_path / 'amd64'}:amd64", f"docker://{reg.host}/apps/docker-made:amd64"], check=True)
        foreign = _pyimage("index", "--push", f"{reg.host}/apps/hello:2.0", f"{reg.host}/apps/docker-made:amd64", *auth, cache=fresh)
        assert foreign.returncode == 1 and "is not one pyimage wrote" in foreign.stderr and "Traceback" not in foreign.stderr
    finally:
        reg.stop()
