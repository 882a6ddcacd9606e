"""tests/support/procs.py: a background child a test started is ended, reaped and its pipes closed when the test fails."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from support.procs import reaped

# Sleeps well past the test, with a child of its own holding the same stdout (as a build's tools would).
_FAMILY = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(20)']); time.sleep(20)"


def test_a_child_still_running_when_the_test_fails_is_killed_and_its_pipes_closed() -> None:
    start = time.monotonic()
    with pytest.raises(AssertionError, match="the build failed"):
        with reaped(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(20)"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)) as proc:
            raise AssertionError("the build failed")
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout is not None and proc.stdout.closed and proc.stderr is not None and proc.stderr.closed
    assert time.monotonic() - start < 10


def test_group_kills_the_childs_own_children_that_hold_its_pipes() -> None:
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        with reaped(subprocess.Popen([sys.executable, "-c", _FAMILY], stdout=subprocess.PIPE, text=True, start_new_session=True), group=True) as proc:
            proc.communicate(timeout=0.5)
    assert proc.returncode == -signal.SIGKILL and proc.stdout is not None and proc.stdout.closed
    assert time.monotonic() - start < 10


def test_a_child_that_finished_keeps_its_exit_code_and_its_output_is_read() -> None:
    with reaped(subprocess.Popen([sys.executable, "-c", "print('done'); raise SystemExit(3)"], stdout=subprocess.PIPE, text=True)) as proc:
        proc.wait(timeout=30)
    assert proc.returncode == 3 and proc.stdout is not None and proc.stdout.closed
