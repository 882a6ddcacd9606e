"""``--load`` into a real Docker Engine sends only what the engine lacks, whichever image holds it: the same
image under a new tag is only tagged, and a new image on layers another image holds (an earlier tag, the base)
sends the layers above them. Counted as the engine sees it (``layers_sent``, then ``docker save`` of the
result, which fails when a layer is missing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.engines import Dockerd
from support.tiny import offline_env, run_pyimage, tiny_base, tiny_project

pytestmark = [pytest.mark.e2e, pytest.mark.engines]


def _build(project: Path, cache: Path, dockerd: Dockerd, *args: str) -> dict:
    done = run_pyimage("build", "-C", str(project), "--json", *args, cache=cache, env=offline_env(DOCKER_HOST=dockerd.host, DOCKER_CONFIG=str(dockerd.root / "client")))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _whole(dockerd: Dockerd, name: str, report: dict, tmp_path: Path) -> None:
    inspect = json.loads(dockerd.docker("image", "inspect", name).stdout)[0]
    assert inspect["RootFS"]["Layers"] == [layer["diff_id"] for layer in report["layers"]]
    saved = tmp_path / f"{name.replace(':', '-')}.tar"
    dockerd.docker("save", "-o", str(saved), name)  # every layer must be there for the engine to write it out
    assert saved.stat().st_size > 0


def test_load_sends_only_the_layers_no_image_of_the_engine_holds(dockerd: Dockerd, tmp_path: Path) -> None:
    base = tiny_base(tmp_path / "base")
    cache = tmp_path / "cache"
    app = tiny_project(tmp_path / "app", name="reuseapp", tool=f'base = "{base}"')
    first = _build(app, cache, dockerd, "-o", "docker-daemon:reuseapp:t1")
    assert first["loaded"][0]["layers_sent"] == len(first["layers"]) == 3

    # The same image under new names: tagged, nothing sent (the engine's image ID is the same).
    again = _build(app, cache, dockerd, "-t", "reuseapp:t2", "-t", "reuseapp:latest", "--load")
    assert again["loaded"][0]["layers_sent"] == 0 and again["loaded"][0]["also_tagged"] == ["reuseapp:latest"]
    ids = {json.loads(dockerd.docker("image", "inspect", n).stdout)[0]["Id"] for n in ("reuseapp:t1", "reuseapp:t2", "reuseapp:latest")}
    assert ids == {first["loaded"][0]["id"]}

    # A version bump under a tag the engine has never seen: the base and interpreter layers are held (by t1).
    init = app / "src" / "reuseapp" / "__init__.py"
    init.write_text(init.read_text().replace("hello from tiny", "hello again"))
    (app / "pyproject.toml").write_text((app / "pyproject.toml").read_text().replace('version = "1.0"', 'version = "1.1"'))
    bumped = _build(app, cache, dockerd, "-t", "reuseapp:t3", "--load")
    assert bumped["loaded"][0]["layers_sent"] == 1
    _whole(dockerd, "reuseapp:t3", bumped, tmp_path)

    # Another app on the same base: only its own layers go.
    other = tiny_project(tmp_path / "other", name="otherapp", tool=f'base = "{base}"')
    second = _build(other, cache, dockerd, "--load")
    assert second["loaded"][0]["layers_sent"] == 1, second["loaded"]
    _whole(dockerd, "otherapp:1.0", second, tmp_path)


def test_every_tag_names_the_image_in_podman(storage, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base = tiny_base(tmp_path / "base")
    app = tiny_project(tmp_path / "app", name="podtags", tool=f'base = "{base}"')
    done = run_pyimage("build", "-C", str(app), "--json", "-t", "localhost/podtags:a", "-t", "localhost/podtags:b", "-o", "podman:", cache=tmp_path / "cache", env=offline_env(**storage.env))
    assert done.returncode == 0, done.stderr
    (loaded,) = json.loads(done.stdout)["loaded"]
    assert loaded["reference"] == "localhost/podtags:a" and loaded["also_tagged"] == ["localhost/podtags:b"]
    ids = {storage.podman("image", "inspect", "--format", "{{.Id}}", name).stdout.strip() for name in ("localhost/podtags:a", "localhost/podtags:b")}
    assert len(ids) == 1 and loaded["id"] in ids
