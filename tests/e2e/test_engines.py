"""pyimage's images in the engines users run: Docker Engine, containerd, and containers/storage (podman,
buildah, CRI-O). Each engine is a real one started by the tests (tests/support/engines.py); every image is
loaded, unpacked by the engine itself and run, and what the app prints is checked.

Run these alone with ``python3 -m pytest -q -m engines``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.engines import Dockerd, Storage
from support.registry import start_registry

from .conftest import Pyimage, copy_example

pytestmark = [pytest.mark.e2e, pytest.mark.engines]

HELLO_OUTPUT = ("hello, world", "python 3.11 at /opt/venv/bin/python", "123.5 MB is a natural size")


@pytest.fixture(scope="module")
def hello(pyimage: Pyimage, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """hello-cli built once as an OCI layout and a docker-archive (both pass the image checker)."""
    work = tmp_path_factory.mktemp("hello-engines")
    project = copy_example("hello-cli", work)
    report = json.loads(pyimage.run("build", "--json", "-o", f"oci:{work / 'layout'}:v1", "-o", f"docker-archive:{work / 'hello.tar'}", project=project).stdout)
    return work / "layout", work / "hello.tar", report


def test_docker_loads_the_docker_archive_and_runs_the_app(dockerd: Dockerd, hello: tuple[Path, Path, dict]) -> None:
    _layout, archive, report = hello
    loaded = dockerd.docker("load", "-i", str(archive)).stdout
    assert "Loaded image: hello-cli:1.0.0" in loaded
    out = dockerd.docker("run", "--rm", "--network", "none", "hello-cli:1.0.0").stdout
    assert all(line in out for line in HELLO_OUTPUT), out
    inspect = json.loads(dockerd.docker("image", "inspect", "hello-cli:1.0.0").stdout)[0]
    assert [layer for layer in inspect["RootFS"]["Layers"]] == [layer["diff_id"] for layer in report["layers"]]


def test_containerd_imports_the_archive_and_runs_the_app(dockerd: Dockerd, hello: tuple[Path, Path, dict]) -> None:
    _layout, archive, _report = hello
    dockerd.ctr("images", "import", str(archive))
    out = dockerd.ctr("run", "--rm", "hello-cli:1.0.0", "pyimage-hello").stdout
    assert all(line in out for line in HELLO_OUTPUT), out


def test_skopeo_copies_the_layout_into_containers_storage_and_the_unpacked_app_runs(storage: Storage, hello: tuple[Path, Path, dict]) -> None:
    layout, _archive, _report = hello
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}:v1", storage.ref("localhost/hello-skopeo:v1")], check=True, env=storage.env)
    out = storage.run_chroot("localhost/hello-skopeo:v1", ["/opt/venv/bin/hello"])
    assert all(line in out for line in HELLO_OUTPUT), out


def test_podman_loads_the_docker_archive(storage: Storage, hello: tuple[Path, Path, dict]) -> None:
    _layout, archive, _report = hello
    assert "hello-cli:1.0.0" in storage.podman("load", "-i", str(archive)).stdout
    out = storage.run_chroot("localhost/hello-cli:1.0.0", ["/opt/venv/bin/hello", "podman"])
    assert "hello, podman" in out


def test_build_load_streams_into_docker_and_prints_the_engine_image_id(pyimage: Pyimage, dockerd: Dockerd, hello: tuple[Path, Path, dict], tmp_path: Path) -> None:
    dockerd.docker("load", "-i", str(hello[1]))  # hello-cli: the same base, interpreter and site-packages layers
    project = copy_example("hello-cli", tmp_path, "hello-load")
    report = json.loads(pyimage.run("build", "--json", "--load", project=project, env=dockerd.env).stdout)
    (loaded,) = report["loaded"]
    assert loaded["engine"] == "docker" and loaded["endpoint"] == dockerd.host and loaded["reference"] == "hello-load:1.0.0"
    assert loaded["id"] == json.loads(dockerd.docker("image", "inspect", "hello-load:1.0.0").stdout)[0]["Id"]
    assert report["outputs"] == ["docker-daemon:hello-load:1.0.0"]  # --load alone writes nothing to disk
    assert not (project / "dist").exists()
    assert "hello, world" in dockerd.docker("run", "--rm", "--network", "none", "hello-load:1.0.0").stdout
    assert loaded["layers_sent"] == 1  # only its own app layer: the engine holds the rest as hello-cli's
    # for people: the manifest digest and the engine's image ID are two numbers, each named (a new-user trial read
    # both as "image")
    again = pyimage.run("build", "--load", project=project, env=dockerd.env).stdout.splitlines()
    assert again[0] == f"image {report['image']['digest']} (manifest digest)"
    assert again[-1] == f"loaded into docker ({dockerd.host}) as hello-load:1.0.0: docker image ID {loaded['id']} (0 layer(s) sent)"


def test_a_rebuild_loads_only_the_layers_docker_does_not_hold(pyimage: Pyimage, dockerd: Dockerd, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path, "hello-thin")
    pyimage.run("build", "--load", project=project, env=dockerd.env)
    init = project / "src" / "hello_thin" / "__init__.py"
    init.write_text(init.read_text().replace("hello, ", "hi again, "))
    report = json.loads(pyimage.run("build", "--json", "--load", project=project, env=dockerd.env).stdout)
    assert report["loaded"][0]["layers_sent"] == 1  # only the app layer crossed the socket
    assert "hi again, world" in dockerd.docker("run", "--rm", "--network", "none", "hello-thin:1.0.0").stdout
    again = json.loads(pyimage.run("build", "--json", "--load", project=project, env=dockerd.env).stdout)
    assert again["loaded"][0]["layers_sent"] == 0 and again["loaded"][0]["id"] == report["loaded"][0]["id"]  # held already


def test_plain_tar_layers_load_into_docker_as_the_same_image(pyimage: Pyimage, dockerd: Dockerd, tmp_path: Path) -> None:
    """`--compression none` writes the layers as docker build stores them: the engine gets the very image a gzip
    build gives it (same image ID: the config names diff_ids, not blobs), and it runs."""
    project = copy_example("hello-cli", tmp_path, "hello-plain")
    plain = json.loads(pyimage.run("build", "--json", "--compression", "none", "-t", "hello-plain:none", "--load", project=project, env=dockerd.env).stdout)
    assert all(l["digest"] == l["diff_id"] for l in plain["layers"] if l["name"] != "base")
    gz = json.loads(pyimage.run("build", "--json", "-t", "hello-plain:gz", "--load", project=project, env=dockerd.env).stdout)
    assert plain["loaded"][0]["id"] == gz["loaded"][0]["id"]
    assert [l["diff_id"] for l in plain["layers"]] == [l["diff_id"] for l in gz["layers"]]
    assert "hello, world" in dockerd.docker("run", "--rm", "--network", "none", "hello-plain:none").stdout


def test_output_podman_loads_through_podman_load(pyimage: Pyimage, storage: Storage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    report = json.loads(pyimage.run("build", "--json", "-o", "podman:localhost/hello-podman:2", project=project, env=storage.env).stdout)
    assert report["loaded"][0]["engine"] == "podman"
    assert report["loaded"][0]["id"] in storage.podman("images", "--no-trunc", "--format", "{{.ID}}").stdout
    assert "hello, world" in storage.run_chroot("localhost/hello-podman:2", ["/opt/venv/bin/hello"])
    # built again: podman holds that image, so it is only tagged (a new-user trial read "N layer(s) sent" for an
    # image podman had)
    again = pyimage.run("build", "-o", "podman:localhost/hello-podman:again", project=project, env=storage.env).stdout.splitlines()
    assert again[-1] == f"loaded into podman (podman) as localhost/hello-podman:again: podman image ID {report['loaded'][0]['id']} (0 layer(s) sent)"
    assert storage.podman("image", "inspect", "--format", "{{.Id}}", "localhost/hello-podman:again").stdout.strip() == report["loaded"][0]["id"]


def test_load_with_no_engine_is_one_error_naming_the_socket(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    env = dict(__import__("os").environ, DOCKER_HOST=f"unix://{tmp_path}/no-such.sock")
    done = pyimage.run("build", "--load", project=project, env=env, check=False)
    assert done.returncode == 1
    error, hint = done.stderr.strip().splitlines()[-2:]
    assert error.startswith(f"error: cannot reach the Docker Engine at unix://{tmp_path}/no-such.sock (DOCKER_HOST)")
    assert hint.startswith("hint:") and "DOCKER_HOST" in hint
    assert "Traceback" not in done.stderr


def test_web_service_answers_http_inside_docker(pyimage: Pyimage, dockerd: Dockerd, tmp_path: Path) -> None:
    project = copy_example("web-service", tmp_path)
    pyimage.run("build", "-o", "docker-daemon:web:1", project=project, env=dockerd.env)
    inspect = json.loads(dockerd.docker("image", "inspect", "web:1").stdout)[0]
    assert inspect["Config"]["ExposedPorts"] == {"8000/tcp": {}}  # ports = [8000], as EXPOSE 8000 would say
    container = dockerd.docker("run", "-d", "--network", "none", "-e", "PORT=8000", "-e", "HOST=127.0.0.1", "web:1").stdout.strip()
    try:
        probe = (
            "import json, time, urllib.request\n"
            "for _ in range(120):\n"
            "    try: print(urllib.request.urlopen('http://127.0.0.1:8000/', timeout=2).read().decode()); break\n"
            "    except OSError: time.sleep(0.5)\n"
        )
        out = dockerd.docker("exec", container, "/opt/venv/bin/python", "-c", probe).stdout
        assert json.loads(out) == {"message": "hello from pyimage", "python": "3.11"}
    finally:
        dockerd.docker("rm", "-f", container, check=False)


def test_heavy_group_of_several_wheels_with_bytecode_runs_in_docker_and_containers_storage(
    pyimage: Pyimage, dockerd: Dockerd, storage: Storage, tmp_path: Path
) -> None:
    project = copy_example("hello-cli", tmp_path, "hello-pair")
    archive = tmp_path / "pair.tar"
    report = json.loads(
        pyimage.run("build", "--json", "--set", 'heavy=[{name = "pair", packages = ["attrs", "humanize"]}]', "--set", "compile-bytecode=true",
                    "-o", f"docker-archive:{archive}", "-o", f"oci:{tmp_path / 'layout'}:pair", project=project).stdout
    )
    assert [layer["name"] for layer in report["layers"]][2:] == ["heavy:pair", "app"]
    dockerd.docker("load", "-i", str(archive))
    pycache = "import attrs, humanize, os; print(sorted(os.listdir(os.path.join(os.path.dirname(humanize.__file__), '__pycache__')))[:1])"
    assert ".cpython-311.pyc" in dockerd.docker("run", "--rm", "--network", "none", "--entrypoint", "/opt/venv/bin/python", "hello-pair:1.0.0", "-c", pycache).stdout
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{tmp_path / 'layout'}:pair", storage.ref("localhost/pair:1")], check=True, env=storage.env)
    assert "hello, world" in storage.run_chroot("localhost/pair:1", ["/opt/venv/bin/hello"])


def test_namespace_package_split_across_wheels_loads_in_docker(pyimage: Pyimage, dockerd: Dockerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wheels_fixture import make_wheel

    links = tmp_path / "links"
    extend = b"__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
    make_wheel(links, "ns_alpha", "1.0", {"ns/__init__.py": extend, "ns/alpha.py": b"NAME = 'alpha'\n", "ns/py.typed": b""})
    make_wheel(links, "ns_beta", "1.0", {"ns/__init__.py": b"# beta's copy\n" + extend, "ns/beta.py": b"NAME = 'beta'\n", "ns/py.typed": b""})
    project = copy_example("hello-cli", tmp_path, "hello-ns")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"attrs>=23"', '"attrs>=23", "ns-alpha", "ns-beta"'))
    monkeypatch.setenv("PIP_FIND_LINKS", f"/opt/wheels {links}")
    archive = tmp_path / "ns.tar"
    pyimage.run("build", "-o", f"docker-archive:{archive}", project=project)
    dockerd.docker("load", "-i", str(archive))
    code = "import ns.alpha, ns.beta; print(ns.alpha.NAME, ns.beta.NAME)"
    out = dockerd.docker("run", "--rm", "--network", "none", "--entrypoint", "/opt/venv/bin/python", "hello-ns:1.0.0", "-c", code).stdout
    assert out.strip() == "alpha beta"


def test_pushed_image_is_pulled_by_docker_from_a_loopback_registry_and_runs(pyimage: Pyimage, dockerd: Dockerd, tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "reg")
    try:
        project = copy_example("hello-cli", tmp_path)
        ref = f"{reg.host}/apps/hello:1.0"
        cmd = [sys.executable, "-m", "pyimage", "build", "--json", "--cache-dir", str(pyimage.cache_dir), "-C", str(project),
               "--base", f"rootfs:{pyimage.base}", "--push", ref, "--username", "alice", "--password-stdin"]
        done = subprocess.run(cmd, input="wonderland\n", capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        digest = json.loads(done.stdout)["image"]["digest"]
        dockerd.docker("login", reg.host, "--username", "alice", "--password-stdin", input="wonderland\n")
        dockerd.docker("pull", ref)
        assert digest in dockerd.docker("image", "inspect", "--format", "{{json .RepoDigests}}", ref).stdout
        assert "hello, world" in dockerd.docker("run", "--rm", "--network", "none", ref).stdout
    finally:
        reg.stop()


def test_torch_app_loads_into_docker_and_runs(pyimage: Pyimage, dockerd: Dockerd, tmp_path: Path) -> None:
    project = copy_example("torch-app", tmp_path)
    report = json.loads(pyimage.run("build", "--json", "--load", project=project, env=dockerd.env).stdout)
    assert [layer["name"] for layer in report["layers"]][2:4] == ["heavy:torch", "heavy:numpy"]
    out = dockerd.docker("run", "--rm", "--network", "none", report["loaded"][0]["reference"], timeout=300).stdout
    assert out.startswith("torch 2.13.0 numpy ") and "learned w=3.00 b=2.00" in out


def test_an_image_of_the_local_docker_engine_is_a_base(pyimage: Pyimage, dockerd: Dockerd, hello: tuple[Path, Path, dict], tmp_path: Path) -> None:
    """``docker-daemon:NAME`` (an offline machine's way to a python base): exported once through the Engine API,
    read as untrusted, its layer identical to the rootfs it was imported from; a missing image is one error."""
    _layout, _archive, report = hello
    dockerd.docker("import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", str(pyimage.base), "local-python:bookworm")
    project = copy_example("web-service", tmp_path, "from-daemon")
    argv = ("build", "--json", "--base", "docker-daemon:local-python:bookworm", "-o", "docker-daemon:from-daemon:1")
    built = json.loads(pyimage.run(*argv, project=project, base=False, env=dockerd.env).stdout)
    assert built["layers"][0]["diff_id"] == report["layers"][0]["diff_id"]  # the same bookworm rootfs, byte for byte
    # docker save hands the layer over uncompressed; it is compressed once, as the rootfs was: the very same blob
    assert built["layers"][0]["digest"] == report["layers"][0]["digest"] and built["layers"][0]["size"] < built["layers"][0]["uncompressed_size"] / 2
    out = dockerd.docker("run", "--rm", "--network", "none", "--entrypoint", "/opt/venv/bin/python", "from-daemon:1", "-c", "import fastapi; print('fastapi', fastapi.__version__)").stdout
    assert out.startswith("fastapi ")
    # read back from the engine (docker save: every layer uncompressed), each layer maps to the blob the build
    # wrote: a new-user trial saw site-packages (a layer of several wheels' fragments) compressed into a second blob
    back = json.loads(pyimage.run("inspect", "--json", "docker-daemon:from-daemon:1", base=False, env=dockerd.env).stdout)
    assert [l["digest"] for l in back["layers"]] == [l["digest"] for l in built["layers"]]
    # named as a registry reference the engine holds (`docker images` lists it): the registry's failure says so
    dockerd.docker("tag", "from-daemon:1", "127.0.0.1:9/from-daemon:1")
    asked = pyimage.run("inspect", "127.0.0.1:9/from-daemon:1", base=False, env=dockerd.env, check=False)
    assert asked.returncode != 0 and asked.stderr.strip().splitlines()[-1] == "hint: the local Docker Engine holds 127.0.0.1:9/from-daemon:1: name it docker-daemon:127.0.0.1:9/from-daemon:1", asked.stderr
    assert json.loads(pyimage.run("inspect", "--json", "docker-daemon:127.0.0.1:9/from-daemon:1", base=False, env=dockerd.env).stdout)["layers"] == back["layers"]
    again = pyimage.run(*argv, project=project, base=False, env=dockerd.env)
    assert [l["digest"] for l in json.loads(again.stdout)["layers"]] == [l["digest"] for l in built["layers"]]
    missing = pyimage.run("build", "--base", "docker-daemon:no-such:image", "-o", f"oci:{tmp_path / 'x'}", project=project, base=False, env=dockerd.env, check=False)
    assert missing.returncode == 2  # a base the user named wrongly, like a missing rootfs: file
    error, hint = missing.stderr.strip().splitlines()[-2:]
    assert error == f"error: base docker-daemon:no-such:image: the Docker Engine at {dockerd.host} has no image no-such:image", missing.stderr
    assert hint.startswith("hint: `docker pull no-such:image`")
    # pyimage init on this offline machine offers the engine's python image as the base
    dockerd.docker("tag", "local-python:bookworm", "python:bookworm-local")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "pyproject.toml").write_text('[project]\nname = "fresh"\nversion = "1.0"\n')
    init = subprocess.run([sys.executable, "-m", "pyimage", "init", "-C", str(fresh)], capture_output=True, text=True, env=dockerd.env, check=True)
    assert 'base = "docker-daemon:python:bookworm-local"' in (fresh / "pyproject.toml").read_text(), init.stderr


def test_a_django_layout_after_init_runs_manage_py_commands_in_docker(pyimage: Pyimage, dockerd: Dockerd, tmp_path: Path) -> None:
    """Two new-user trials: `init` wrote its guessed server (gunicorn) as the entrypoint, so `docker run IMAGE python
    manage.py check` started gunicorn with those words as arguments and hung. The guess is the image's Cmd now, as a
    Dockerfile's CMD: Docker's own argument handling replaces it."""
    project = tmp_path / "mysite"
    (project / "mysite").mkdir(parents=True)
    (project / "manage.py").write_text("import sys\nimport mysite\nprint('manage', mysite.NAME, sys.argv[1:])\n")
    (project / "mysite" / "__init__.py").write_text("NAME = 'mysite'\n")
    (project / "mysite" / "wsgi.py").write_text("def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n")
    (project / "requirements.txt").write_text("gunicorn\n")
    subprocess.run([sys.executable, "-m", "pyimage", "init", "--base", "python:3.12-slim", "-C", str(project)], check=True, capture_output=True)
    assert 'command = ["gunicorn", "--bind", "0.0.0.0:8000", "mysite.wsgi"]' in (project / "pyproject.toml").read_text()
    pyimage.run("build", "--load", "--tag", "mysite:1", project=project, env=dockerd.env)
    (inspected,) = json.loads(dockerd.docker("image", "inspect", "mysite:1").stdout)
    assert inspected["Config"]["Entrypoint"] is None and inspected["Config"]["Cmd"] == ["gunicorn", "--bind", "0.0.0.0:8000", "mysite.wsgi"]
    assert inspected["Config"]["ExposedPorts"] == {"8000/tcp": {}}  # init's ports, beside the guessed server: `docker run -P` publishes it
    out = dockerd.docker("run", "--rm", "--network", "none", "mysite:1", "python", "manage.py", "check", timeout=120).stdout
    assert out.strip() == "manage mysite ['check']"
    assert "gunicorn" in dockerd.docker("run", "--rm", "--network", "none", "mysite:1", "gunicorn", "--version").stdout
