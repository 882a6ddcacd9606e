"""Output layouts shared by several writers and tools: no tag lost, no blob shared with the cache, nothing
overwritten that is not an image layout, no temp files left behind."""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from support.procs import reaped
from support.registry import make_image, make_layer
from support.tiny import assert_one_error, offline_env, run_pyimage, snapshot, tiny_base, tiny_project, verify_clean

from pyimage.cache import Cache
from pyimage.errors import BuildError
from pyimage.oci.layout import REF_NAME, sweep_stale, write_layout
from pyimage.outputs import Naming, parse_output, write_outputs


def _tags(layout: Path) -> set[str]:
    index = json.loads((layout / "index.json").read_text())
    return {m["annotations"][REF_NAME] for m in index["manifests"]}


def _write_one(args: tuple[str, str, int]) -> None:
    layers_dir, layout, i = args
    layer = make_layer(Path(layers_dir) / str(i), {f"file{i}": f"content {i}".encode()})
    write_layout(make_image([layer], label=str(i)), Path(layout), f"tag{i}")


def test_concurrent_writers_creating_one_layout_keep_every_tag(tmp_path: Path) -> None:
    layout = tmp_path / "shared" / "layout"
    with multiprocessing.get_context("fork").Pool(10) as pool:
        pool.map(_write_one, [(str(tmp_path / "layers"), str(layout), i) for i in range(20)])
    assert _tags(layout) == {f"tag{i}" for i in range(20)}
    assert not [p for p in layout.parent.iterdir() if p.name != "layout"], "staging directories left behind"
    assert not list(layout.rglob("*.tmp"))


def test_ten_parallel_builds_into_one_layout_keep_all_ten_tags(tmp_path: Path) -> None:
    project = tiny_project(tmp_path / "project")
    base = tiny_base(tmp_path / "base")
    cache = tmp_path / "cache"
    layout = tmp_path / "out"
    assert run_pyimage("build", "-C", str(project), "--base", base, "-o", f"oci:{tmp_path / 'warm'}", cache=cache).returncode == 0
    cmd = [sys.executable, "-m", "pyimage", "build", "-C", str(project), "--base", base, "--cache-dir", str(cache)]
    with contextlib.ExitStack() as running:  # every build ended, reaped and its pipes closed, even after a failure
        procs = [running.enter_context(reaped(subprocess.Popen([*cmd, "-o", f"oci:{layout}:t{i}"], env=offline_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))) for i in range(10)]
        for proc in procs:
            _out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
    assert _tags(layout) == {f"t{i}" for i in range(10)}
    umoci = subprocess.run(["umoci", "ls", "--layout", str(layout)], capture_output=True, text=True)
    if umoci.returncode == 0 or "not found" not in umoci.stderr:
        assert set(umoci.stdout.split()) == {f"t{i}" for i in range(10)}, umoci.stderr
    verify_clean(cache)


def test_layout_blobs_are_copies_so_editing_one_in_place_cannot_reach_the_cache(tmp_path: Path) -> None:
    project = tiny_project(tmp_path / "project")
    base = tiny_base(tmp_path / "base")
    cache, layout = tmp_path / "cache", tmp_path / "out"
    first = run_pyimage("build", "--json", "-C", str(project), "--base", base, "-o", f"oci:{layout}:v1", cache=cache)
    assert first.returncode == 0, first.stderr
    app = next(l for l in json.loads(first.stdout)["layers"] if l["name"] == "app")["digest"].split(":")[1]
    in_layout, in_cache = layout / "blobs" / "sha256" / app, cache / "blobs" / "sha256" / app
    assert in_layout.stat().st_ino != in_cache.stat().st_ino
    good = in_cache.read_bytes()

    with open(in_layout, "r+b") as f:  # a tool editing the layout's blob in place, same size
        f.seek(len(good) // 2)
        f.write(bytes([good[len(good) // 2] ^ 0xFF]))
    assert in_cache.read_bytes() == good
    verify_clean(cache)

    again = run_pyimage("build", "-C", str(project), "--base", base, "-o", f"oci:{layout}:v2", cache=cache)
    assert again.returncode == 0, again.stderr
    assert in_layout.read_bytes() == good, "a rebuild must replace a damaged blob, not keep it because the size matches"


def test_an_unchanged_copy_from_an_earlier_build_is_not_written_again(tmp_path: Path) -> None:
    project = tiny_project(tmp_path / "project")
    base = tiny_base(tmp_path / "base")
    cache, layout = tmp_path / "cache", tmp_path / "out"
    assert run_pyimage("build", "-C", str(project), "--base", base, "-o", f"oci:{layout}:v1", cache=cache).returncode == 0
    inodes = {p.name: p.stat().st_ino for p in (layout / "blobs" / "sha256").iterdir()}
    assert run_pyimage("build", "-C", str(project), "--base", base, "-o", f"oci:{layout}:v2", cache=cache).returncode == 0
    assert {p.name: p.stat().st_ino for p in (layout / "blobs" / "sha256").iterdir()} == inodes


@pytest.mark.parametrize(
    "kind, make, needle",
    [
        ("oci", lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")), "not an OCI image layout"),
        ("oci", lambda p: p.write_text("a file"), "not a directory"),
        ("docker-archive", lambda p: p.write_text("[project]\nname = 'x'\n"), "not an image archive"),
        ("docker-archive", lambda p: (p.mkdir(), (p / "keep").write_text("x")), "not a regular file"),
    ],
    ids=["oci-foreign-dir", "oci-file", "archive-foreign-file", "archive-dir"],
)
def test_an_output_path_holding_something_else_is_refused_before_any_work(tmp_path: Path, kind: str, make, needle: str) -> None:  # type: ignore[no-untyped-def]
    project = tiny_project(tmp_path / "project")
    target = tmp_path / "target"
    make(target)
    before = snapshot(tmp_path / "project") | {"target": snapshot(target) if target.is_dir() else target.read_text()}  # type: ignore[dict-item]
    result = run_pyimage("build", "-C", str(project), "--base", "oci:/nonexistent/never-read", "-o", f"{kind}:{target}", cache=tmp_path / "cache")
    assert_one_error(result, 1, needle, str(target))
    assert snapshot(tmp_path / "project") | {"target": snapshot(target) if target.is_dir() else target.read_text()} == before  # type: ignore[dict-item]
    assert not (tmp_path / "cache").exists(), "refused before the cache was even opened"


@pytest.mark.parametrize("kind", ["oci", "docker-archive"])
@pytest.mark.parametrize(
    ("where", "needle"),
    [
        ("afile/sub", "afile is not a directory"),  # a parent that is a file
        ("afile/deeper/sub", "afile is not a directory"),  # a file further up, under directories still to make
        ("/proc/pyimage-out", "cannot create anything in /proc"),  # a file system that holds no new files
    ],
    ids=["parent-file", "ancestor-file", "proc"],
)
def test_an_output_whose_place_cannot_be_made_is_refused_before_any_work(tmp_path: Path, kind: str, where: str, needle: str) -> None:
    project = tiny_project(tmp_path / "project")
    (project / "afile").write_text("mine")
    before = snapshot(project)
    result = run_pyimage("build", "-C", str(project), "--base", "oci:/nonexistent/never-read", "-o", f"{kind}:{where}", cache=tmp_path / "cache", cwd=project)
    assert_one_error(result, 1, needle)
    assert snapshot(project) == before
    assert not (tmp_path / "cache").exists(), "refused before the cache was even opened: no blob written"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
@pytest.mark.parametrize("kind", ["oci", "docker-archive"])
def test_an_output_in_a_directory_without_write_permission_is_refused_before_any_work(tmp_path: Path, kind: str) -> None:
    project = tiny_project(tmp_path / "project")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        result = run_pyimage("build", "-C", str(project), "--base", "oci:/nonexistent/never-read", "-o", f"{kind}:{locked}/sub/out", cache=tmp_path / "cache")
    finally:
        locked.chmod(0o755)
    assert_one_error(result, 1, f"cannot create anything in {locked}", "Permission denied")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("kind", ["oci", "docker-archive"])
def test_an_os_error_while_an_output_is_written_is_one_error_naming_the_output(tmp_path: Path, kind: str) -> None:
    """The place changed between ``check`` and ``write`` (here written without the check, under ``/proc``, where
    nothing can be created): an error naming the output, not an internal one."""
    image = make_image([make_layer(tmp_path / "layers", {"app/main.py": b"print(1)\n"})])
    output = parse_output(f"{kind}:/proc/pyimage-out", tmp_path)
    with pytest.raises(BuildError, match=r"^output /proc/pyimage-out: cannot write it: No such file or directory$") as caught:
        write_outputs(image, [output], Naming("app", "1.0", Cache(tmp_path / "cache")))
    assert caught.value.hint


def test_an_existing_docker_archive_is_replaced_and_an_empty_dir_becomes_a_layout(tmp_path: Path) -> None:
    project = tiny_project(tmp_path / "project")
    base = tiny_base(tmp_path / "base")
    archive, empty = tmp_path / "image.tar", tmp_path / "empty"
    empty.mkdir()
    for _ in range(2):
        result = run_pyimage("build", "-C", str(project), "--base", base, "-o", f"docker-archive:{archive}", "-o", f"oci:{empty}", cache=tmp_path / "cache")
        assert result.returncode == 0, result.stderr
    with tarfile.open(archive) as tar:
        assert "manifest.json" in tar.getnames()
    assert _tags(empty) == {"1.0"}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_stale_staging_left_by_a_killed_writer_is_swept_but_a_live_one_is_kept(tmp_path: Path) -> None:
    dead = tmp_path / ".out.999-dead.tmp"
    live = tmp_path / ".out.998-live.tmp"
    young = tmp_path / ".out.997-young.tmp"
    for d in (dead, live, young):
        d.mkdir()
        (d / "blob").write_bytes(b"x" * 1000)
    old = time.time() - 3600
    for d in (dead, live):
        os.utime(d, (old, old))
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        removed = sweep_stale(tmp_path, prefix=".out.")
    finally:
        os.close(fd)
    assert removed == [dead]
    assert live.exists() and young.exists() and not dead.exists()


def test_cache_blob_stamps_trust_only_an_unchanged_copy(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    blob = tmp_path / "blob"
    blob.write_bytes(b"abc")
    digest = "sha256:" + "ab" * 32
    assert not cache.intact(blob, digest)
    cache.placed(blob, digest)
    assert cache.intact(blob, digest)
    assert not cache.intact(blob, "sha256:" + "cd" * 32)
    blob.write_bytes(b"abd")  # same size, new mtime
    os.utime(blob, ns=(0, 0))
    assert not cache.intact(blob, digest)


def test_one_rule_picks_a_platform_for_registries_and_layouts() -> None:
    """oci.model.match_platform: the variant defaults (arm64 is v8), attestations never, a bare entry serves any."""
    from pyimage.oci.model import Descriptor, Platform, match_platform

    def entry(platform: str | None, n: int) -> Descriptor:
        return Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + f"{n:x}" * 64, 1, platform=Platform.parse(platform) if platform else None)

    amd, arm64, armv7, armv6, attest = entry("linux/amd64", 1), entry("linux/arm64", 2), entry("linux/arm/v7", 3), entry("linux/arm/v6", 4), entry("unknown/unknown", 5)
    index = [attest, armv6, armv7, arm64, amd]
    assert match_platform(index, Platform.parse("linux/amd64")) is amd
    assert match_platform(index, Platform.parse("linux/arm64/v8")) is arm64  # the entry leaves the default variant out
    assert match_platform(index, Platform.parse("linux/arm/v7")) is armv7
    assert match_platform(index, Platform.parse("linux/arm")) is armv7  # no variant asked: arm's default, v7
    assert match_platform(index, Platform.parse("linux/s390x")) is None
    assert match_platform([attest], Platform.parse("linux/amd64")) is None
    bare = entry(None, 6)
    assert match_platform([bare], Platform.parse("linux/arm64")) is bare


def test_a_missing_or_foreign_directory_as_a_layout_is_a_config_error(tmp_path: Path) -> None:
    """Exit 2, like every other base a user names wrongly, and it says which."""
    from pyimage.errors import ConfigError
    from pyimage.oci.layout import read_layout
    from pyimage.oci.model import Platform

    with pytest.raises(ConfigError, match="no such directory"):
        read_layout(tmp_path / "nolayout", None, Platform())
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError, match=r"is not an OCI image layout \(no index.json\)"):
        read_layout(tmp_path / "plain", None, Platform())
