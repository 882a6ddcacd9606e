"""Faults a user's machine or project causes: each ends in one ``error:``/``hint:`` naming the path (never an
internal error), leaves no temp file and nothing changed outside the cache and the output, and the rerun after
the fault is gone succeeds. Real file systems (a small tmpfs that fills up, a read-only mount), real signals,
real concurrent processes."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
from support.procs import reaped
from support.tiny import (
    assert_one_error,
    offline_env,
    run_pyimage,
    small_tmpfs,
    snapshot,
    tiny_base,
    tiny_project,
    verify_clean,
)
from wheels_fixture import make_wheel


@dataclass
class Setup:
    root: Path
    project: Path
    base: str
    cache: Path
    canary: Path
    running: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # what popen* started

    def build(self, out: Path | str, *extra: str, cache: Path | None = None, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        target = out if isinstance(out, str) else f"oci:{out}:t"
        return run_pyimage("build", "-C", str(self.project), "--base", self.base, "-o", target, *extra, cache=cache or self.cache, env=env)

    def popen(self, out: Path) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "pyimage", "build", "-C", str(self.project), "--base", self.base, "-o", f"oci:{out}:t", "--cache-dir", str(self.cache)]
        proc = subprocess.Popen(cmd, env=offline_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        return self.running.enter_context(reaped(proc, group=True))  # ended, reaped and its pipes closed at teardown

    def popen_prune(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "pyimage", "cache", "prune", "--max-size", "0", "--cache-dir", str(self.cache)], env=offline_env(), stderr=subprocess.PIPE, text=True)
        return self.running.enter_context(reaped(proc))

    def close(self) -> None:
        self.running.close()

    def tmp_entries(self) -> list[Path]:
        return sorted((self.cache / "tmp").iterdir()) if (self.cache / "tmp").exists() else []

    def pid_locks(self) -> list[str]:
        """The ``locks/pid-<pid>.lock`` files of processes that used the cache (each removes its own at exit)."""
        return sorted(p.name for p in (self.cache / "locks").glob("pid-*.lock"))


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep.txt").write_text("do not touch\n")
    made = Setup(tmp_path, tiny_project(tmp_path / "project"), tiny_base(tmp_path / "base"), tmp_path / "cache", canary)
    yield made
    made.close()


def _wait_for(path: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


# -- the cache directory ---------------------------------------------------------------------------------------
def test_a_cache_dir_that_is_a_file_is_one_error(setup: Setup) -> None:
    setup.cache.write_text("not a directory")
    result = setup.build(setup.root / "out")
    assert_one_error(result, 1, f"cache directory {setup.cache} exists and is not a directory")
    assert setup.cache.read_text() == "not a directory"
    setup.cache.unlink()
    assert setup.build(setup.root / "out").returncode == 0


def test_a_cache_dir_below_a_file_is_one_error(setup: Setup) -> None:
    (setup.root / "afile").write_text("x")
    result = setup.build(setup.root / "out", cache=setup.root / "afile" / "cache")
    assert_one_error(result, 1, str(setup.root / "afile"))


def test_a_read_only_cache_is_one_error(setup: Setup) -> None:
    with small_tmpfs(setup.root / "ro-cache", read_only=True) as cache:
        result = setup.build(setup.root / "out", cache=cache)
    assert_one_error(result, 1, str(setup.root / "ro-cache"), "Read-only file system")


# -- outputs ---------------------------------------------------------------------------------------------------
def test_a_read_only_output_is_one_error_and_leaves_the_cache_clean(setup: Setup) -> None:
    with small_tmpfs(setup.root / "ro", read_only=True) as ro:
        result = setup.build(ro / "layout")
        assert_one_error(result, 1, str(ro), "Read-only file system")
    assert not setup.tmp_entries()
    verify_clean(setup.cache)
    assert setup.build(setup.root / "out").returncode == 0


def test_a_full_disk_under_the_output_is_one_error_naming_it_and_leaves_nothing_behind(setup: Setup) -> None:
    big = os.urandom(600_000)  # incompressible: the base layer alone does not fit in what is left
    setup.base = tiny_base(setup.root / "big-base", extra={"usr/share/big.bin": big})
    with small_tmpfs(setup.root / "small", size="1m") as small:
        (small / "filler").write_bytes(b"\0" * 700_000)
        before = snapshot(small)
        result = setup.build(small / "layout")
        assert_one_error(result, 1, str(small / "layout"), "No space left on device")
        assert snapshot(small) == before, "a staging directory or partial blob was left on the full disk"
        (small / "filler").unlink()
        assert setup.build(small / "layout").returncode == 0
    assert not setup.tmp_entries()
    verify_clean(setup.cache)


def test_a_full_disk_under_the_cache_is_one_error_and_the_cache_stays_valid(setup: Setup) -> None:
    big = os.urandom(3_000_000)
    setup.base = tiny_base(setup.root / "big-base", extra={"usr/share/big.bin": big})
    with small_tmpfs(setup.root / "small-cache", size="2m") as cache:
        result = setup.build(setup.root / "out", cache=cache)
        assert_one_error(result, 1, str(cache), "No space left on device")
        assert not list((cache / "tmp").iterdir()), "a partial blob was left in the cache"
        verify_clean(cache)
    assert snapshot(setup.canary) == {"keep.txt": snapshot(setup.canary)["keep.txt"]}


def test_a_full_disk_under_a_docker_archive_output_is_one_error(setup: Setup) -> None:
    setup.base = tiny_base(setup.root / "big-base", extra={"usr/share/big.bin": os.urandom(600_000)})
    with small_tmpfs(setup.root / "small", size="512k") as small:
        result = setup.build(f"docker-archive:{small / 'image.tar'}")
        assert_one_error(result, 1, str(small / "image.tar"), "No space left on device")
        assert list(small.iterdir()) == []
    verify_clean(setup.cache)


# -- malformed project and wheels -------------------------------------------------------------------------------
def test_a_pyproject_that_is_not_utf8_is_a_config_error(setup: Setup) -> None:
    pyproject = setup.project / "pyproject.toml"
    pyproject.write_bytes(pyproject.read_bytes().replace(b'version = "1.0"', b'version = "1.0"\ndescription = "caf\xe9"'))
    result = setup.build(setup.root / "out")
    assert_one_error(result, 2, f"{pyproject}:", "not valid UTF-8 (byte 0xe9)")
    assert not setup.cache.exists()


def test_a_project_file_name_that_is_not_utf8_builds(setup: Setup) -> None:
    os.close(os.open(os.path.join(os.fsencode(setup.project), b"caf\xe9.txt"), os.O_CREAT | os.O_WRONLY))
    result = setup.build(setup.root / "out")
    assert result.returncode == 0, result.stderr


def test_a_dependency_without_record_is_one_error_naming_the_wheel(setup: Setup) -> None:
    wheels = setup.root / "wheels"
    path = make_wheel(wheels, "norecord", "1.0", {"norecord.py": b""})
    import zipfile

    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if not n.endswith("/RECORD")}
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    setup.project = tiny_project(setup.root / "project2", dependencies=["norecord"])
    env = offline_env(find_links=wheels)
    result = setup.build(setup.root / "out", env=env)
    assert_one_error(result, 1, "norecord 1.0: malformed wheel", "RECORD")  # uv, the default resolver, reads it first
    verify_clean(setup.cache)
    by_pip = setup.build(setup.root / "out", "--set", "resolver=pip", env=env)  # pip leaves it to the installer
    assert_one_error(by_pip, 1, "norecord-1.0-py3-none-any.whl: malformed wheel", "RECORD")


def test_a_failing_build_backend_shows_its_own_last_lines_not_a_traceback(setup: Setup) -> None:
    (setup.project / "FAIL").write_text("version file src/VERSION is missing")
    result = setup.build(setup.root / "out")
    error = assert_one_error(result, 1)
    assert error == "error: building the project's wheel failed: RuntimeError: version file src/VERSION is missing"
    assert "  | tiny backend: checking the sources" in result.stderr.splitlines()
    assert 'File "' not in result.stderr
    assert not setup.tmp_entries()
    verify_clean(setup.cache)
    (setup.project / "FAIL").unlink()
    assert setup.build(setup.root / "out").returncode == 0


# -- signals ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_build_says_so_exits_130_and_leaves_no_temp_files(setup: Setup, sig: int, code: int) -> None:
    (setup.project / "SLEEP").write_text("30")
    proc = setup.popen(setup.root / "out")
    _wait_for(setup.project / "SLEEPING")
    assert setup.tmp_entries(), "the build should have work in progress now"
    os.killpg(proc.pid, sig)  # what a terminal's Ctrl-C does: the whole foreground process group
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.splitlines()[-2:] == ["error: interrupted", "hint: nothing half-written was kept; run the command again to finish"]
    assert "Traceback" not in err
    assert not setup.tmp_entries()
    assert setup.pid_locks() == [], "an interrupted build removes its pid lock file too"
    assert not (setup.root / "out").exists()
    verify_clean(setup.cache)
    (setup.project / "SLEEP").unlink()
    (setup.project / "SLEEPING").unlink()
    assert setup.build(setup.root / "out").returncode == 0


def test_a_build_removes_its_pid_lock_file_whether_it_succeeds_or_fails(setup: Setup) -> None:
    assert setup.build(setup.root / "out").returncode == 0
    assert (setup.cache / "locks" / "cache.lock").exists(), "the build used the cache"
    assert setup.pid_locks() == []
    (setup.project / "FAIL").write_text("version file src/VERSION is missing")
    assert_one_error(setup.build(setup.root / "out2"), 1, "building the project's wheel failed")
    assert setup.pid_locks() == []


def _build_interrupted_at(setup: Setup, name: str, stream: str, line: str, delay: float) -> tuple[int, str, str, Path, Path]:
    """A real two-output build (a layout, then a docker-archive) sent Ctrl-C (its whole process group, as a
    terminal does) ``delay`` seconds after it prints ``line`` on ``stream``: (exit code, stdout, stderr, layout,
    archive)."""
    layout, archive = setup.root / f"{name}-layout", setup.root / f"{name}.tar"
    cmd = [sys.executable, "-m", "pyimage", "build", "-C", str(setup.project), "--base", setup.base, "--cache-dir", str(setup.cache)]
    cmd += ["-o", f"oci:{layout}:t", "-o", f"docker-archive:{archive}:app:t"]
    seen: dict[str, list[str]] = {"stdout": [], "stderr": []}
    sent = False
    with reaped(subprocess.Popen(cmd, env=offline_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True), group=True) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
            sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
            while sel.get_map():
                ready = sel.select(timeout=120)
                assert ready, f"the build printed nothing for 120 s:\n{''.join(seen['stderr'])}"
                for key, _ in ready:
                    text = key.fileobj.readline()  # type: ignore[union-attr]
                    if not text:
                        sel.unregister(key.fileobj)
                        continue
                    seen[key.data].append(text)
                    if not sent and key.data == stream and line in text:
                        time.sleep(delay)
                        os.killpg(proc.pid, signal.SIGINT)
                        sent = True
        proc.wait(timeout=60)
    assert sent, "".join(seen["stderr"])
    return proc.returncode, "".join(seen["stdout"]), "".join(seen["stderr"]), layout, archive


@pytest.mark.parametrize(
    ("stream", "line"),
    [("stderr", "output written: oci:"), ("stdout", "wrote docker-archive:")],
    ids=["between-the-outputs", "after-the-last-wrote-line"],
)
def test_ctrl_c_late_in_a_build_names_the_outputs_it_kept_and_each_output_is_whole_or_absent(setup: Setup, stream: str, line: str) -> None:
    """However late the interrupt lands (the layout written and the archive under way; every output written and
    reported, the interpreter shutting down), the build either ends as if it had not come (exit 0, every output
    whole) or says so (exit 130, the outputs written complete named as kept); never a silent 130, never a
    half-written output. The delays step over the instants after the line, into the interpreter's teardown."""
    assert setup.build(setup.root / "warm").returncode == 0  # a warm cache: only the outputs are left to do
    pattern = line.partition(":")[0]
    for delay in (0.0, 0.005, 0.01, 0.02, 0.04):
        code, out, err, layout, archive = _build_interrupted_at(setup, f"d{delay}", stream, line, delay)
        assert "Traceback" not in err, err
        specs = {f"oci:{layout}:t": layout, f"docker-archive:{archive}:app:t": archive}
        if code == 0:
            assert "error:" not in err, err
            kept = set(specs)
        else:
            assert code == 130, (delay, err)
            error, hint = err.splitlines()[-2:]
            assert error == "error: interrupted", err
            assert hint.startswith("hint: written complete before the interrupt, and kept: ") and hint.endswith("; nothing half-written was kept; run the command again to finish"), err
            kept = {spec for spec in specs if spec in hint}
            assert f"oci:{layout}:t" in kept, f"{pattern}: the layout was written before the interrupt: {err}"
        for spec, path in specs.items():
            if spec in kept or path.exists():  # named as kept, or made in the instant after the interrupt: whole
                check = run_pyimage("inspect", f"docker-archive:{path}" if path == archive else spec, "--check", cache=setup.cache)
                assert check.returncode == 0, (spec, check.stdout, check.stderr)
        assert [p.name for p in setup.root.iterdir() if p.name.startswith((f".{layout.name}.", f".{archive.name}."))] == [], "no temp file beside the outputs"
        assert not setup.tmp_entries()
        assert setup.pid_locks() == []
    verify_clean(setup.cache)


def test_a_handled_interrupt_under_python_m_exits_with_its_code_not_by_sigint(tmp_path: Path) -> None:
    """CPython (3.11, 3.12) remembers a plain KeyboardInterrupt that ends code run from a string (a dataclass's
    generated methods, made as rich or pyimage's modules are imported) and, under ``python -m``, kills the process
    with SIGINT at exit although the exception was handled: a silent exit 130 after the error pyimage printed.
    pyimage's handler raises a subclass, which CPython does not mark. Here the signal lands in such code."""
    (tmp_path / "interrupted_demo.py").write_text(
        "import os, signal, sys\n"
        "from pyimage import cli\n"
        "cli._RUNNING = True\n"
        "signal.signal(signal.SIGINT, cli._on_signal)\n"
        "try:\n"
        "    exec('os.kill(os.getpid(), signal.SIGINT)\\nfor _ in range(1000): pass')\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(7)\n"
    )
    done = subprocess.run([sys.executable, "-m", "interrupted_demo"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 7, done.stderr


def _killed_build(setup: Setup) -> list[Path]:
    """Starts a build, SIGKILLs it (no cleanup can run) while it holds temp files; returns them, aged past the
    stale threshold as if the kill was long ago."""
    (setup.project / "SLEEP").write_text("30")
    proc = setup.popen(setup.root / "out")
    _wait_for(setup.project / "SLEEPING")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    (setup.project / "SLEEP").unlink()
    (setup.project / "SLEEPING").unlink()
    left = setup.tmp_entries()
    assert left, "a killed build leaves its work in progress"
    old = time.time() - 3600
    for path in left:
        for p in [path, *path.rglob("*")]:
            os.utime(p, (old, old), follow_symlinks=False)
    return left


def test_cache_verify_reports_a_killed_runs_leftovers_then_is_clean(setup: Setup) -> None:
    left = _killed_build(setup)
    done = run_pyimage("cache", "verify", cache=setup.cache)
    assert done.returncode == 1, done.stderr
    for path in left:
        assert f"removed leftover temp file tmp/{path.name} (from a run that was killed)" in done.stderr
    assert "leftover temp file(s) removed" in done.stderr.splitlines()[-1]
    verify_clean(setup.cache)


def test_the_next_build_sweeps_a_killed_runs_leftovers(setup: Setup) -> None:
    left = _killed_build(setup)
    young = setup.cache / "tmp" / "999999-young.blob"  # a pid that cannot be alive, but written just now
    young.write_bytes(b"x")
    assert setup.build(setup.root / "out").returncode == 0
    assert not any(p.exists() for p in left)
    assert young.exists(), "an entry younger than the threshold is left alone"


def test_cache_verify_keeps_the_temp_files_of_a_running_build(setup: Setup) -> None:
    (setup.project / "SLEEP").write_text("3")
    proc = setup.popen(setup.root / "out")
    _wait_for(setup.project / "SLEEPING")
    live = setup.tmp_entries()
    old = time.time() - 3600
    for path in live:
        os.utime(path, (old, old))
    done = run_pyimage("cache", "verify", cache=setup.cache)
    assert done.returncode == 0 and "a running pyimage process is writing it" in done.stderr, done.stderr
    assert all(p.exists() for p in live)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_cache_prune_waits_for_a_running_build_instead_of_pulling_its_files(setup: Setup) -> None:
    (setup.project / "SLEEP").write_text("3")
    proc = setup.popen(setup.root / "out")
    _wait_for(setup.project / "SLEEPING")
    prune = setup.popen_prune()
    _out, err = proc.communicate(timeout=60)
    build_done = time.monotonic()
    assert proc.returncode == 0, err
    prune.communicate(timeout=60)
    assert prune.returncode == 0
    assert time.monotonic() >= build_done
    index = json.loads((setup.root / "out" / "index.json").read_text())
    manifest = index["manifests"][0]["digest"].split(":")[1]
    layers = json.loads((setup.root / "out" / "blobs" / "sha256" / manifest).read_text())["layers"]
    assert all((setup.root / "out" / "blobs" / "sha256" / l["digest"].split(":")[1]).is_file() for l in layers)
    (setup.project / "SLEEP").unlink()
    assert setup.build(setup.root / "out2").returncode == 0
    verify_clean(setup.cache)
