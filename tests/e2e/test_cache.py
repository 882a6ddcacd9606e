"""The layer cache: built once, shared across apps, rebuilt only where something changed, never trusted corrupt."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.procs import reaped
from support.runc import run_image

from .conftest import Pyimage, copy_example

pytestmark = pytest.mark.e2e


def _blobs(cache: Path) -> set[str]:
    return {p.name for p in (cache / "blobs" / "sha256").iterdir()}


def test_code_change_rebuilds_only_the_app_layer(pyimage: Pyimage, tmp_path: Path) -> None:
    # a cache of its own: which wheel the edit is copied into depends on what this cache built last
    mine = Pyimage(tmp_path / "cache", pyimage.base)
    project = copy_example("hello-cli", tmp_path)
    first = mine.build(project, tmp_path / "layout", "v1")
    unchanged = mine.build(project, tmp_path / "layout", "v1")
    assert unchanged["image"]["digest"] == first["image"]["digest"]
    assert all(l["cached"] for l in unchanged["layers"][1:])
    blobs_before = _blobs(mine.cache_dir)

    init = project / "src" / "hello_cli" / "__init__.py"
    init.write_text(init.read_text().replace('f"hello, {self.name}"', 'f"hi there, {self.name}"'))
    done = mine.run("build", "--json", "-o", f"oci:{tmp_path / 'layout'}:v2", project=project)
    assert "1 changed file(s) copied into its last build" in done.stderr  # no backend started (resolve/wheelpatch.py)
    changed = json.loads(done.stdout)
    old = {l["name"]: l for l in first["layers"]}
    for layer in changed["layers"]:
        if layer["name"] == "app":
            assert layer["digest"] != old["app"]["digest"] and not layer["cached"]
        else:
            assert layer["digest"] == old[layer["name"]]["digest"], layer["name"]
            assert layer["cached"] or layer["name"] == "base"
    assert changed["image"]["digest"] != first["image"]["digest"]
    new_blobs = _blobs(mine.cache_dir) - blobs_before
    assert new_blobs == {changed["layers"][-1]["digest"].split(":")[1]}
    assert "hi there, world" in run_image(tmp_path / "layout", "v2").stdout
    # The edited file copied into the last wheel gives the image the backend gives: the same digest from nothing.
    fresh = Pyimage(tmp_path / "fresh-cache", pyimage.base).build(project, tmp_path / "fresh", "v2")
    layers = lambda report: [(l["name"], l["diff_id"], l["digest"]) for l in report["layers"]]  # noqa: E731
    assert layers(fresh)[-1][:2] == layers(changed)[-1][:2], "the app layer's content differs"
    assert fresh["image"]["digest"] == changed["image"]["digest"], (layers(changed), layers(fresh))


def test_second_app_reuses_the_heavy_torch_layer_byte_for_byte(pyimage: Pyimage, tmp_path: Path) -> None:
    first = pyimage.build(copy_example("torch-app", tmp_path / "a"), tmp_path / "layout-a")
    blobs_before = _blobs(pyimage.cache_dir)
    second_project = copy_example("torch-app", tmp_path / "b", new_name="torch-app-two")
    second = pyimage.build(second_project, tmp_path / "layout-b")
    heavy = lambda report: {l["name"]: l for l in report["layers"] if l["name"].startswith("heavy:")}  # noqa: E731
    assert set(heavy(first)) == {"heavy:torch", "heavy:numpy"}
    for name, layer in heavy(second).items():
        assert layer["digest"] == heavy(first)[name]["digest"]
        assert layer["cached"] is True
    new_blobs = _blobs(pyimage.cache_dir) - blobs_before
    assert new_blobs <= {l["digest"].split(":")[1] for l in second["layers"] if l["name"] == "app"}
    # each layout has its own copy (a reflink where the file system has them), never a link into the cache: a tool
    # that edits one layout's blob in place cannot corrupt the cache or the other layout
    torch = heavy(second)["heavy:torch"]["digest"].split(":")[1]
    inodes = {p.stat().st_ino for p in (tmp_path / "layout-a" / "blobs" / "sha256" / torch, tmp_path / "layout-b" / "blobs" / "sha256" / torch, pyimage.cache_dir / "blobs" / "sha256" / torch)}
    assert len(inodes) == 3


def test_concurrent_builds_on_one_cache_both_succeed_and_verify_clean(pyimage: Pyimage, tmp_path: Path) -> None:
    cache = tmp_path / "shared-cache"
    reports = []
    with contextlib.ExitStack() as running:  # every build ended, reaped and its pipes closed, even after a failure
        procs = []
        for name in ("hello-cli", "web-service"):
            for i in range(2):
                project = copy_example(name, tmp_path / f"{name}-{i}")
                cmd = [sys.executable, "-m", "pyimage", "build", "--json", "--cache-dir", str(cache), "--base", f"rootfs:{pyimage.base}", "-C", str(project), "-o", f"oci:{tmp_path / f'out-{name}-{i}'}:t"]
                procs.append(running.enter_context(reaped(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))))
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
            reports.append(json.loads(out))
    assert reports[0]["image"]["digest"] == reports[1]["image"]["digest"]
    assert reports[2]["image"]["digest"] == reports[3]["image"]["digest"]
    verify = subprocess.run([sys.executable, "-m", "pyimage", "cache", "verify", "--cache-dir", str(cache)], capture_output=True, text=True)
    assert verify.returncode == 0 and "clean" in verify.stderr
    assert not list((cache / "tmp").iterdir()), "temp files left behind"


def test_corrupted_cached_blob_is_detected_and_rebuilt(pyimage: Pyimage, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    mine = Pyimage(cache, pyimage.base)
    project = copy_example("hello-cli", tmp_path)
    first = mine.build(project, tmp_path / "layout", "v1")
    site = next(l for l in first["layers"] if l["name"] == "site-packages")
    blob = cache / "blobs" / "sha256" / site["digest"].split(":")[1]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    blob.write_bytes(bytes(data))
    again = mine.build(project, tmp_path / "layout2", "v1")
    rebuilt = next(l for l in again["layers"] if l["name"] == "site-packages")
    assert rebuilt["digest"] == site["digest"] and rebuilt["cached"] is False
    import hashlib

    assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == site["digest"]
    assert "hello, world" in run_image(tmp_path / "layout2", "v1").stdout


def test_cache_info_and_prune(pyimage: Pyimage, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    mine = Pyimage(cache, pyimage.base)
    mine.build(copy_example("hello-cli", tmp_path), tmp_path / "layout")
    info = json.loads(subprocess.run([sys.executable, "-m", "pyimage", "cache", "info", "--json", "--cache-dir", str(cache)], capture_output=True, text=True, check=True).stdout)
    assert info["blobs"] >= 4 and info["layers"] >= 3 and info["blob_bytes"] > 0
    assert info["envs"] == 1 and info["env_bytes"] > 0 and info["app_wheels"] == 1 and info["total_bytes"] > info["blob_bytes"]
    subprocess.run([sys.executable, "-m", "pyimage", "cache", "prune", "--max-size", "0", "--cache-dir", str(cache)], check=True, capture_output=True)
    after = json.loads(subprocess.run([sys.executable, "-m", "pyimage", "cache", "info", "--json", "--cache-dir", str(cache)], capture_output=True, text=True, check=True).stdout)
    assert after["blobs"] == 0 and after["layers"] == 0 and after["envs"] == 0 and after["app_wheels"] == 0
    assert after["remote_layers"] == info["layers"]  # the records stay for push-only builds (bench/push_only.py)


def test_lock_file_is_written_reused_and_detected_stale(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    pyimage.build(project, tmp_path / "layout")
    lock = project / "pylock.pyimage.toml"
    text = lock.read_text()
    assert 'lock-version = "1.0"' in text and "[[packages]]" in text and "humanize" in text
    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}", project=project)
    assert "resolving dependencies" not in done.stderr  # reused: no resolver on a no-change rebuild
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"attrs>=23"', '"attrs>=23", "six"'))
    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}", project=project)
    assert "pylock.pyimage.toml is stale" in done.stderr
    assert 'name = "six"' in lock.read_text()
    os.utime(lock)


def test_a_bumped_pin_moves_that_package_and_keeps_every_other_locked_version(pyimage: Pyimage, tmp_path: Path) -> None:
    """A stale lock is resolved again preferring its versions; a requirement that excludes its own locked version
    (a bump) frees that package alone. Before, the preferring resolution failed and a free one ran after it:
    uv twice, and every package moved to its newest release (humanize here) with the one the user bumped."""
    import re

    project = copy_example("hello-cli", tmp_path)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    assert '["humanize>=4", "attrs>=23"]' in text
    pyproject.write_text(text.replace('["humanize>=4", "attrs>=23"]', '["humanize>=4,<4.10", "attrs>=23"]'))
    pyimage.build(project, tmp_path / "layout")
    lock = project / "pylock.pyimage.toml"

    def version(name: str) -> str:
        found = re.search(rf'name = "{name}"\nversion = "([^"]+)"', lock.read_text())
        assert found, lock.read_text()
        return found.group(1)

    humanize, attrs = version("humanize"), version("attrs")
    assert humanize.startswith("4.9") and attrs != "23.1.0"
    pyproject.write_text(text.replace('["humanize>=4", "attrs>=23"]', '["humanize>=4", "attrs==23.1.0"]'))
    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}", project=project)
    assert "pylock.pyimage.toml is stale (the project's dependencies changed): resolving again" in done.stderr
    assert (version("attrs"), version("humanize")) == ("23.1.0", humanize)  # the bump; humanize as locked
    # the rebuilt layer says what moved (a new-user trial saw only "layer site-packages: built" and a cut-off list)
    assert re.search(rf"^\[ *[0-9.]+s\] layer site-packages: built sha256:[0-9a-f]{{12}} \(attrs {re.escape(attrs)} → 23\.1\.0\)$", done.stderr, re.M), done.stderr
    pyproject.write_text(text.replace('["humanize>=4", "attrs>=23"]', '["humanize>=4,<4.10", "attrs==23.1.0", "six"]'))
    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}", project=project)
    assert re.search(r"^\[ *[0-9.]+s\] layer site-packages: built sha256:[0-9a-f]{12} \(\+six [0-9.]+\)$", done.stderr, re.M), done.stderr
    again = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}", project=project)  # nothing rebuilt: nothing said
    assert re.search(r"^\[ *[0-9.]+s\] layer site-packages: cached sha256:[0-9a-f]{12}$", again.stderr, re.M), again.stderr


def test_pyimage_lock_says_what_it_updated(pyimage: Pyimage, tmp_path: Path) -> None:
    """A new-user trial: `pyimage lock` and `pyimage lock --upgrade` printed only "wrote … (4 wheels)"; `uv lock`
    says "Updated django v5.1.15 -> v5.2.19"."""
    import re

    project = copy_example("hello-cli", tmp_path)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('["humanize>=4", "attrs>=23"]', '["humanize>=4,<4.10", "attrs>=23"]'))
    first = pyimage.run("lock", project=project)
    assert re.search(r"^  added humanize 4\.9\.\d+$", first.stdout, re.M), first.stdout
    pyproject.write_text(text)  # relaxed: the locked humanize still fits and is kept
    kept = pyimage.run("lock", project=project)
    assert "  updated" not in kept.stdout and "note: no version changed: locked versions are kept where they still fit" in kept.stderr
    newest = pyimage.run("lock", "--upgrade", project=project)
    assert re.search(r"^  updated humanize 4\.9\.\d+ → [0-9.]+$", newest.stdout, re.M), newest.stdout
    pyproject.write_text(text.replace('["humanize>=4", "attrs>=23"]', '["humanize>=4,<4.10", "attrs>=23"]'))
    back = pyimage.run("lock", project=project)
    assert re.search(r"^  downgraded humanize [0-9.]+ → 4\.9\.\d+$", back.stdout, re.M), back.stdout


def test_killed_build_leaves_nothing_a_later_build_trusts(pyimage: Pyimage, tmp_path: Path) -> None:
    import signal
    import time

    cache = tmp_path / "cache"
    project = copy_example("torch-app", tmp_path)
    mine = Pyimage(cache, pyimage.base)
    cmd = [sys.executable, "-m", "pyimage", "build", "--cache-dir", str(cache), "--base", f"rootfs:{pyimage.base}", "-C", str(project), "-o", f"oci:{tmp_path / 'out'}:t"]
    with reaped(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)) as proc:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any((cache / "tmp").glob("*.blob")):  # wait until layers are being written
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
    assert not (tmp_path / "out" / "index.json").exists()
    report = mine.build(project, tmp_path / "out", "t")
    assert [l["name"] for l in report["layers"]][2:4] == ["heavy:torch", "heavy:numpy"]
    verify = subprocess.run([sys.executable, "-m", "pyimage", "cache", "verify", "--cache-dir", str(cache)], capture_output=True, text=True)
    assert verify.returncode == 0 and "clean" in verify.stderr
    assert "learned w=3.00 b=2.00" in run_image(tmp_path / "out", "t", timeout=300).stdout


def test_app_wheel_build_environment_is_made_once_and_reused(pyimage: Pyimage, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    mine = Pyimage(cache, pyimage.base)
    project = copy_example("hello-cli", tmp_path)
    mine.build(project, tmp_path / "out")
    envs = sorted(p.name for p in (cache / "envs").iterdir())
    marker = next((cache / "envs").iterdir()) / ".pyimage-ready"
    stamp = marker.stat().st_mtime_ns
    init = project / "src" / "hello_cli" / "__init__.py"
    init.write_text(init.read_text() + "\n# a one-line change\n")
    mine.build(project, tmp_path / "out")
    assert sorted(p.name for p in (cache / "envs").iterdir()) == envs and len(envs) == 1
    assert marker.stat().st_mtime_ns == stamp


def test_unchanged_sources_reuse_the_project_wheel_and_any_edit_rebuilds_it(pyimage: Pyimage, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    mine = Pyimage(cache, pyimage.base)
    project = copy_example("hello-cli", tmp_path)
    first = mine.build(project, tmp_path / "out")
    kept = list((cache / "appwheels").iterdir())
    assert len(kept) == 1
    again = mine.build(project, tmp_path / "out")
    assert list((cache / "appwheels").iterdir()) == kept and again["image"]["digest"] == first["image"]["digest"]
    readme = project / "src" / "hello_cli" / "extra.py"  # a new file the backend would package
    readme.write_text("X = 1\n")
    changed = mine.build(project, tmp_path / "out")
    assert len(list((cache / "appwheels").iterdir())) == 2
    assert changed["layers"][-1]["digest"] != first["layers"][-1]["digest"]


def test_cached_layers_need_no_wheel_files(pyimage: Pyimage, tmp_path: Path) -> None:
    """With the layers in the cache, a build neither downloads nor reads their wheels (here: deleted from the
    wheel cache); a layer that must be built again fetches exactly its wheels."""
    import shutil

    cache = tmp_path / "cache"
    mine = Pyimage(cache, pyimage.base)
    project = copy_example("hello-cli", tmp_path)
    first = mine.build(project, tmp_path / "out")
    shutil.rmtree(cache / "wheels")
    (cache / "wheels").mkdir()
    again = mine.build(project, tmp_path / "out")
    assert again["image"]["digest"] == first["image"]["digest"]
    assert not any((cache / "wheels").iterdir()), "a wheel was fetched although its layer was cached"
    for record in (cache / "layers").glob("*.json"):  # forget every layer: now the wheels are needed again
        record.unlink()
    rebuilt = mine.build(project, tmp_path / "out")
    assert rebuilt["image"]["digest"] == first["image"]["digest"]
    assert len(list((cache / "wheels").iterdir())) == 2  # attrs and humanize, fetched again


def test_a_layer_missing_one_fragment_fetches_only_that_wheel(pyimage: Pyimage, tmp_path: Path) -> None:
    """Fetching is one step that asks the cache first: with the site-packages layer and humanize's fragment of it
    gone (and every wheel file), the rebuild downloads humanize alone; attrs' fragment is reused unread."""
    import json
    import shutil

    cache = tmp_path / "cache"
    mine = Pyimage(cache, pyimage.base)
    project = copy_example("hello-cli", tmp_path)
    first = mine.build(project, tmp_path / "out")
    site = next(layer for layer in first["layers"] if layer["name"] == "site-packages")
    assert {p.split("==")[0] for p in site["packages"]} >= {"attrs", "humanize"}
    records = {path: json.loads(path.read_text())["digest"] for path in (cache / "layers").glob("*.json")}
    humanize: list[Path] = []
    for path, digest in records.items():
        contents = cache / "meta" / f"fragment1-{digest.removeprefix('sha256:')}.json"
        if contents.is_file() and any("/humanize/" in f for f in json.loads(contents.read_text())["files"]):
            humanize.append(path)
    assert len(humanize) == 1, humanize
    for path, digest in records.items():
        if digest == site["digest"] or path in humanize:
            path.unlink()
    shutil.rmtree(cache / "wheels")
    (cache / "wheels").mkdir()
    again = mine.build(project, tmp_path / "out")
    assert again["image"]["digest"] == first["image"]["digest"]
    assert [p.name.split("-")[0] for p in (cache / "wheels").glob("*/*.whl")] == ["humanize"]


def test_damaged_metadata_records_are_worked_out_again(pyimage: Pyimage, tmp_path: Path) -> None:
    """Every record under meta/ replaced by a wrong shape (a damaged disk, an older pyimage): the rebuild works
    each fact out again and writes the same image; none of them fails the build."""
    cache = tmp_path / "cache"
    mine = Pyimage(cache, pyimage.base)
    project = copy_example("hello-cli", tmp_path)
    first = mine.build(project, tmp_path / "out")
    records = sorted((cache / "meta").glob("*.json"))
    kinds = {p.name.split("-")[0].rstrip("0123456789") for p in records}
    assert {"wheel", "fragment", "natives", "files", "scan", "rootfs"} <= kinds, kinds
    for path in records:
        path.write_text('{"damaged": [1, 2, 3]}')
    again = mine.build(project, tmp_path / "out")
    assert again["image"]["digest"] == first["image"]["digest"]
    # what the rebuild read was written anew; the fragments of a layer that was a hit were not needed
    still = {p.name.split("-")[0] for p in (cache / "meta").glob("*.json") if p.read_text() == '{"damaged": [1, 2, 3]}'}
    # (app-sources is read only when an edited file could be copied into the last wheel: not in a no-change rebuild;
    # built, only when an engine hands a layer back uncompressed)
    assert still <= {"fragment1", "stamp", "app", "built1"}, still
