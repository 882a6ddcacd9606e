"""A big layer built in a process of its own (``layers/worker.py``): the same bytes as a thread writes, a user's
error in the same words, the build falls back to this process when the child cannot run, and the child never
outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pyimage import pipeline
from pyimage.cache import Cache
from pyimage.errors import BuildError
from pyimage.layers import worker
from pyimage.layers.build import LayerContext, build_layer
from pyimage.layers.paths import InstallPaths
from pyimage.layers.plan import LayerSpec
from pyimage.wheels import Wheel, read_wheel
from wheels_fixture import download_wheel, make_wheel

PATHS = InstallPaths("/opt/venv", "3.11")


def context(root: Path) -> LayerContext:
    return LayerContext(cache=Cache(root), paths=PATHS)


def spec_of(*wheels: Path) -> LayerSpec:
    return LayerSpec("site-packages", "site-packages", tuple(read_wheel(w) for w in wheels))


def test_a_layer_built_in_a_child_is_byte_for_byte_the_one_built_here(real_wheels: dict[str, Path], tmp_path: Path) -> None:
    spec = spec_of(real_wheels["six"], real_wheels["wheel"])  # several wheels: fragments, then the assembled layer
    apart = context(tmp_path / "apart")
    assert worker.build_in_child(spec, apart) is True
    from_child = build_layer(spec, apart)
    assert from_child.cached  # the parent only reads what the child committed
    here = build_layer(spec, context(tmp_path / "here"))
    assert not here.cached
    assert (from_child.digest, from_child.diff_id, from_child.descriptor.size) == (here.digest, here.diff_id, here.descriptor.size)
    assert from_child.blob.read_bytes() == here.blob.read_bytes()
    assert worker.build_in_child(spec, apart) is False  # held by the cache now: the child built nothing
    assert list((tmp_path / "apart" / "tmp").iterdir()) == []  # the child's staging is gone


def test_a_wheel_whose_record_lies_fails_in_the_child_with_the_words_met_here(tmp_path: Path) -> None:
    bad = make_wheel(tmp_path / "w", "liar", files={"liar/__init__.py": b"x = 1\n"}, tamper={"liar/__init__.py": b"x = 2\n"})
    spec = spec_of(bad)
    with pytest.raises(BuildError) as here:
        build_layer(spec, context(tmp_path / "here"))
    with pytest.raises(BuildError) as apart:
        worker.build_in_child(spec, context(tmp_path / "apart"))
    assert (apart.value.message, apart.value.hint) == (here.value.message, here.value.hint)
    assert "RECORD" in apart.value.message
    assert list((tmp_path / "apart" / "blobs" / "sha256").iterdir()) == []  # nothing committed
    assert list((tmp_path / "apart" / "layers").iterdir()) == []


def test_a_child_that_cannot_run_leaves_the_layer_to_this_process(real_wheels: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_of(real_wheels["six"])
    monkeypatch.setattr(worker, "PROCESS_MIN", 0)
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the child exits 1 without a word
    ctx = context(tmp_path / "c")
    assert worker.build_in_child(spec, ctx) is False
    layer = pipeline._build_apart(spec, ctx)
    assert not layer.cached  # built here, reported as built
    assert layer.digest == build_layer(spec, context(tmp_path / "ref")).digest


def test_the_pipeline_sends_only_layers_with_megabytes_to_read_to_a_child(real_wheels: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(pipeline, "build_in_child", lambda spec, ctx: calls.append(spec.name) or False)
    small = spec_of(real_wheels["six"])
    pipeline._build_apart(small, context(tmp_path / "c"))
    assert calls == []  # 30 kB of files: a process would cost more than it saves
    monkeypatch.setattr(worker, "PROCESS_MIN", 0)
    pipeline._build_apart(LayerSpec("heavy:wheel", "heavy", (read_wheel(real_wheels["wheel"]),)), context(tmp_path / "c"))
    assert calls == ["heavy:wheel"]
    pipeline._build_apart(small, context(tmp_path / "c"))
    assert calls == ["heavy:wheel"]  # cached already: nothing to read, nothing to send


def test_the_child_imports_this_pyimage_whatever_its_directory_or_pythonpath_hold(real_wheels: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A project directory with a ``pyimage`` package of its own (or a PYTHONPATH naming one) is not what the
    child runs: it imports the code this process imported (``python -m`` would have put the directory first)."""
    decoys = tmp_path / "decoys"
    (decoys / "pyimage").mkdir(parents=True)
    (decoys / "pyimage" / "__init__.py").write_text("raise SystemExit('the decoy pyimage was imported')\n")
    monkeypatch.chdir(decoys)
    monkeypatch.setenv("PYTHONPATH", str(decoys))
    assert worker.build_in_child(spec_of(real_wheels["six"]), context(tmp_path / "c")) is True


@pytest.fixture(scope="module")
def big_wheel(test_cache_dir: Path) -> Wheel:
    return read_wheel(download_wheel("numpy==2.0.2", test_cache_dir / "wheels"))


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_a_child_dies_with_a_parent_killed_by_sigkill_and_the_cache_stays_sound(big_wheel: Wheel, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from pyimage.cache import Cache
        from pyimage.layers.build import LayerContext
        from pyimage.layers.paths import InstallPaths
        from pyimage.layers.plan import LayerSpec
        from pyimage.layers.worker import build_in_child
        from pyimage.wheels import read_wheel
        spec = LayerSpec("heavy:numpy", "heavy", (read_wheel(Path({str(big_wheel.path)!r})),))
        build_in_child(spec, LayerContext(cache=Cache(Path({str(root)!r})), paths=InstallPaths("/opt/venv", "3.11")))
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        children: list[int] = []
        while not children and time.monotonic() < deadline and parent.poll() is None:
            children = _children(parent.pid)
            time.sleep(0.02)
        assert children, "the parent never started a child"
        time.sleep(0.3)  # the child is writing the layer now
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 0.5
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(c) for c in children), "the child outlived its parent"
        assert list((root / "layers").iterdir()) == []  # killed before it could finish numpy's layer
    finally:
        if parent.poll() is None:
            parent.kill()
    # whatever it left, the next build reads nothing half-made: the same layer as a cache that never saw it
    spec = LayerSpec("heavy:numpy", "heavy", (big_wheel,))
    again = build_layer(spec, context(root))
    fresh = build_layer(spec, context(tmp_path / "fresh"))
    assert (again.digest, again.diff_id) == (fresh.digest, fresh.diff_id)


def _many_wheels(directory: Path, count: int, bad: str | None = None) -> list[Wheel]:
    out = []
    for i in range(count):
        files = {f"pkg{i}/__init__.py": b"", f"pkg{i}/mod.py": b"X = %d\n" % i, "shared/py.typed": b""}
        if i == 0:  # the heaviest: read here (the biggest go to each side in turn)
            files[f"pkg{i}/data.bin"] = os.urandom(200_000)
        if bad is not None and i == count - 1:  # the next heaviest: the child's
            files[f"pkg{i}/data.bin"] = os.urandom(100_000)
            files[bad] = b"evil\n"
        out.append(read_wheel(make_wheel(directory, f"pkg{i}", "1.0", files=files)))
    return out


def test_many_cold_file_maps_are_read_half_in_a_child_and_equal_the_ones_read_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyimage.layers import conflicts

    wheels = _many_wheels(tmp_path / "w", conflicts.APART_MIN + 6)
    calls: list[tuple[int, bool]] = []
    real = worker.file_maps_in_child

    def spy(theirs, paths, root):  # type: ignore[no-untyped-def]
        done = real(theirs, paths, root)
        calls.append((len(theirs), done))
        return done

    monkeypatch.setattr(worker, "file_maps_in_child", spy)
    apart = Cache(tmp_path / "apart")
    conflicts._MEMO.clear()
    conflicts._read_file_maps(wheels, PATHS, apart)
    assert len(calls) == 1 and calls[0][1] and 0 < calls[0][0] < len(wheels)  # the child read its share
    conflicts._MEMO.clear()
    here = Cache(tmp_path / "here")
    assert [conflicts.wheel_files(w, PATHS, apart) for w in wheels] == [conflicts.wheel_files(w, PATHS, here) for w in wheels]


def test_a_bad_wheel_in_the_childs_half_is_reported_here_in_the_same_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyimage.layers import conflicts

    wheels = _many_wheels(tmp_path / "w", conflicts.APART_MIN + 6, bad="../escaped.py")
    sent: list[str] = []
    real = worker.file_maps_in_child
    monkeypatch.setattr(worker, "file_maps_in_child", lambda theirs, paths, root: (sent.extend(w.name for w in theirs), real(theirs, paths, root))[1])
    conflicts._MEMO.clear()
    with pytest.raises(BuildError) as apart:
        conflicts._read_file_maps(wheels, PATHS, Cache(tmp_path / "apart"))
    conflicts._MEMO.clear()
    monkeypatch.setattr(conflicts, "APART_MIN", 10**9)  # threads only, as before
    with pytest.raises(BuildError) as here:
        conflicts._read_file_maps(wheels, PATHS, Cache(tmp_path / "here"))
    assert (apart.value.message, apart.value.hint) == (here.value.message, here.value.hint)
    assert "escape" in apart.value.message
    assert wheels[-1].name in sent  # the bad wheel was the child's to read
