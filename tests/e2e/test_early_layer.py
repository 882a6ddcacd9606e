"""The biggest one-wheel layer of a cold build starts while the plan is still checking (``pipeline._start_early``):
it must be the very layer the build would write, and a check that fails after it started must still fail the
build at once and leave only correct layers in the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyimage import pipeline
from pyimage.cache import Cache
from pyimage.config import load_config
from support.runc import run_image

from .conftest import Pyimage, copy_example

pytestmark = pytest.mark.e2e


@pytest.fixture()
def numpy_app(tmp_path: Path, pyimage: Pyimage) -> Path:
    """hello-cli that also needs numpy (57 MB installed), in a layer of its own."""
    project = copy_example("hello-cli", tmp_path, "numpy-app")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"attrs>=23"', '"attrs>=23", "numpy"').replace('base = "', 'heavy = ["numpy"]\nbase = "'))
    pyimage.run("lock", project=project)  # resolved once, so both builds below install the same wheels
    return project


def _build(project: Path, base: Path, cache: Path, building: bool) -> tuple[pipeline.Plan, object]:
    cfg = load_config(project, {"base": f"rootfs:{base}"})
    store = Cache(cache)
    with store.lock("cache", shared=True):
        preps = pipeline.plan_platforms(cfg, store, building=building)
        try:
            (image,) = pipeline.build_all(preps)
        finally:
            preps[0].cleanup()
    return preps[0], image


def test_a_layer_started_during_the_plan_is_the_one_the_build_writes(numpy_app: Path, pyimage: Pyimage, tmp_path: Path) -> None:
    early, image = _build(numpy_app, pyimage.base, tmp_path / "early", building=True)
    later, reference = _build(numpy_app, pyimage.base, tmp_path / "later", building=False)

    assert len(early.early) == 1 and not later.early  # started during the plan in the first build only
    assert [(l.name, l.digest, l.diff_id) for l in image.layers] == [(l.name, l.digest, l.diff_id) for l in reference.layers]  # type: ignore[attr-defined]
    assert image.digest == reference.digest  # type: ignore[attr-defined]
    assert any(l.name == "heavy:numpy" for l in image.layers)  # type: ignore[attr-defined]


def test_a_check_failing_after_the_early_start_fails_the_build_and_leaves_the_cache_sound(numpy_app: Path, pyimage: Pyimage, tmp_path: Path) -> None:
    cache = Pyimage(tmp_path / "cache", pyimage.base)
    failed = cache.run("build", "-o", f"oci:{tmp_path / 'bad'}:t", "--set", 'entrypoint=["no-such-program"]', project=numpy_app, check=False)
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.splitlines()[-2].startswith("error: ") and "no-such-program" in failed.stderr  # the entrypoint check, after the start
    assert "layer heavy:numpy" not in failed.stderr and not (tmp_path / "bad").exists()

    again = cache.build(numpy_app, tmp_path / "good", "t")  # whatever the early layer left in the cache
    fresh = Pyimage(tmp_path / "fresh", pyimage.base).build(numpy_app, tmp_path / "fresh-out", "t")
    assert again["image"]["digest"] == fresh["image"]["digest"]
    assert "hello, world" in run_image(tmp_path / "good", "t").stdout


def test_one_job_starts_no_layer_during_the_plan(numpy_app: Path, pyimage: Pyimage, tmp_path: Path) -> None:
    """`--jobs 1` builds one layer at a time: none overlaps the plan (the same image either way)."""
    cfg = load_config(numpy_app, {"base": f"rootfs:{pyimage.base}"})
    store = Cache(tmp_path / "one")
    with store.lock("cache", shared=True):
        preps = pipeline.plan_platforms(cfg, store, building=True, early=False)
        try:
            assert not preps[0].early and preps[0].natives_after  # still a build: the native check waits for the layers
        finally:
            preps[0].cleanup()


def _app_wheels(cache: Path) -> int:
    return sum(1 for _ in (cache / "appwheels").iterdir()) if (cache / "appwheels").is_dir() else 0


def test_the_app_wheel_built_while_the_base_loads_is_taken_only_for_the_bases_python(pyimage: Pyimage, tmp_path: Path) -> None:
    """With a lock, the app wheel is built for the lock's Python while the base loads (``pipeline._WheelAhead``). A
    lock resolved for another Python (the base changed since) leaves that wheel aside: the image's is built for the
    base's Python, and runs."""
    from pyimage.resolve.interpreters import find_python

    if find_python("3.12") is None:
        pytest.skip("no Python 3.12 on this machine to build the other wheel with")
    cache = tmp_path / "cache"
    mine = Pyimage(cache, pyimage.base)
    project = copy_example("hello-cli", tmp_path)
    mine.run("lock", project=project)
    assert _app_wheels(cache) == 1
    lock = project / "pylock.pyimage.toml"
    text = lock.read_text()
    assert "python_version == '3.11'" in text
    lock.write_text(text.replace("python_version == '3.11'", "python_version == '3.12'"))  # as if resolved on a 3.12 base
    done = mine.run("build", "-o", f"oci:{tmp_path / 'out'}:t", project=project)
    assert _app_wheels(cache) == 2  # one built for 3.12 ahead and left, the 3.11 one (kept since `lock`) taken
    assert "the project's wheel: reused" in done.stderr and "building the project's wheel" not in done.stderr  # not the 3.12 one's
    assert "hello, world" in run_image(tmp_path / "out", "t").stdout


def test_a_backend_failure_while_the_base_loads_is_the_builds_own_error(pyimage: Pyimage, tmp_path: Path) -> None:
    said = []
    for locked in (True, False):
        project = copy_example("hello-cli", tmp_path / str(locked))
        if locked:
            pyimage.run("lock", project=project)
        pyproject = project / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace('build-backend = "hatchling.build"', 'build-backend = "hatchling.nosuch"'))
        done = pyimage.run("build", "-o", f"oci:{tmp_path / str(locked) / 'out'}:t", project=project, check=False)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        said.append([line.replace(str(tmp_path / str(locked)), "DIR") for line in done.stderr.splitlines() if line.startswith(("error:", "hint:"))])
        assert not (tmp_path / str(locked) / "out").exists()
    assert said[0] == said[1] and said[0], said
