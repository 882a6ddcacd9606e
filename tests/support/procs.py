"""Processes a test starts in the background: ended, reaped and their pipes closed however the test ends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import AnyStr, Iterator


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[AnyStr], *, group: bool = False) -> Iterator[subprocess.Popen[AnyStr]]:
    """Yields ``proc``; on the way out (a failed assertion, a timeout, Ctrl-C included) SIGKILLs it if it still
    runs (``group``: its whole process group, for a child started with ``start_new_session=True``), waits for it
    and closes its pipes. ``with subprocess.Popen(...)`` alone closes the pipes but then waits without killing,
    so a hung child would hang the test run."""
    try:
        yield proc
    finally:
        end(proc, group=group)


def end(proc: subprocess.Popen[AnyStr], *, group: bool = False) -> None:
    """SIGKILL to ``proc`` (or its process group) unless it has exited; then reaped, its pipes read and closed."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
    proc.communicate()  # reaps it; reads what is left in its pipes and closes them
