"""A big layer built in a Python process of its own.

A layer's bytes are made by one thread that inflates, tars and hands 4 MiB chunks to the compression threads.
The C parts (inflate, deflate, sha256) release the GIL, but the Python parts (a tar header, a path check and a
RECORD hash hand-off per file: ~130 us each, 1.6 s over torch's 12,000 files) need it, and so does everything else
a cold build does meanwhile: the conflict check reading every wheel's file map, the smaller layers' small files.
Measured on torch-app (2 cores), torch's layer starved while those ran: the build used 1.0-1.4 of its 2 cores
for 3 of its 10 seconds. In a process of its own a layer has a GIL of its own, and the kernel shares the cores.

The child runs the same code (``build_layer``, from the same pyimage the parent imported) against the same cache:
the blob is staged and committed by digest under the key's lock, exactly as a thread would write it, and the
parent then reads the layer from the cache. A user's error (a wheel whose RECORD lies, a full disk) comes back
as the same exception; if the child dies otherwise, the parent builds the layer itself, so nothing depends on
the child working. The child ends with its parent: killed at exit, and by the kernel if the parent is killed.
"""

from __future__ import annotations

import atexit
import os
import pickle
import subprocess
import sys
import threading
from dataclasses import fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import Sequence

    from pyimage.layers.build import LayerContext
    from pyimage.layers.paths import InstallPaths
    from pyimage.layers.plan import LayerSpec
    from pyimage.wheels import Wheel

__all__ = ["PROCESS_MIN", "build_in_child", "file_maps_in_child", "spare_core", "worth_a_process"]

# A process costs 0.15-0.3 s to start and import; a layer of this much tar takes seconds to build. At 32 MB a
# dependency bump's numpy layer (59 MB, alone) was 0.2-0.3 s slower apart; torch-app and big-app cold builds
# measured the same at 32 and 128 MB (A/B, 3-4 runs each).
PROCESS_MIN = 128 << 20

_BOOT = "import pickle, sys; path, payload = pickle.load(sys.stdin.buffer); sys.path[:] = path; from pyimage.layers.worker import _main; sys.exit(_main(payload))"

_CHILDREN: set[subprocess.Popen[bytes]] = set()
_LOCK = threading.Lock()


def worth_a_process(installed_size: int) -> bool:
    """Whether a layer of ``installed_size`` bytes of files is built faster apart (on a machine with 2+ cores)."""
    return installed_size >= PROCESS_MIN and spare_core()


def spare_core() -> bool:
    """Whether a child process would run beside this one: two cores or more, and a Python to start."""
    return _cores() >= 2 and bool(sys.executable)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _stop_children() -> None:
    with _LOCK:
        children = list(_CHILDREN)
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait()


atexit.register(_stop_children)


def build_in_child(spec: "LayerSpec", ctx: "LayerContext") -> bool:
    """Builds ``spec``'s layer into ``ctx.cache`` in a child process. True when the child built it; False when it
    found it in the cache or failed other than by a user's error (the caller builds or reads the layer here
    either way). A user's error (``PyimageError``, ``OSError``) is raised here as the child met it."""
    # The context without its cache (the child opens the same root) and without ``remote`` (push-only builds
    # build here: that callable asks the registries).
    settings = {f.name: getattr(ctx, f.name) for f in fields(ctx) if f.name not in ("cache", "remote")}
    ok, reply = _in_child("layer", (spec, settings), str(ctx.cache.root))
    if not ok:
        return False
    outcome, error = reply
    if error is not None:
        raise error
    return bool(outcome == "built")


def file_maps_in_child(wheels: "Sequence[Wheel]", paths: "InstallPaths", root: str) -> bool:
    """Records the file maps of ``wheels`` in the cache at ``root`` from a child process (``layers/conflicts.py``
    reads the other half meanwhile). True when it did; on any failure the caller reads what is missing itself,
    and meets the error, if any, in its own words."""
    ok, reply = _in_child("file-maps", (tuple(wheels), paths), root)
    return ok and reply == "done"


def _in_child(kind: str, args: tuple[Any, ...], root: str) -> tuple[bool, Any]:
    """Runs ``kind`` with ``args`` against the cache at ``root`` in a child process: (True, its reply), or
    (False, None) when it could not run or died."""
    payload = pickle.dumps((kind, args, root, os.getpid()))
    # The child imports what this process imported: its sys.path is this one's (relative entries made absolute
    # here), set before its first pyimage import, so neither its working directory nor PYTHONPATH can put
    # another pyimage (or another version of a dependency) in its place.
    path = [os.path.abspath(entry) for entry in sys.path]
    try:
        child = subprocess.Popen([sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return False, None
    with _LOCK:
        _CHILDREN.add(child)
    try:
        out, _ = child.communicate(pickle.dumps((path, payload)))
    finally:
        with _LOCK:
            _CHILDREN.discard(child)
    if child.returncode != 0 or not out:
        return False, None
    try:
        return True, pickle.loads(out)  # noqa: S301 - our own child's reply on its own pipe
    except Exception:  # a child that printed something else
        return False, None


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when its parent ends (a parent killed by SIGKILL runs no atexit)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent:  # the parent ended before prctl
        os._exit(1)


def _main(payload: bytes) -> int:
    """The child's side (``_BOOT`` calls it): does the task, replies on stdout."""
    kind, args, root, parent = pickle.loads(payload)  # noqa: S301 - written by our parent
    _die_with_parent(parent)
    from pyimage.cache import Cache
    from pyimage.errors import PyimageError

    cache = Cache(root)
    reply: Any
    if kind == "file-maps":
        from pyimage.layers.conflicts import wheel_files

        wheels, paths = args
        for wheel in wheels:
            wheel_files(wheel, paths, cache)
        reply = "done"
    else:
        from pyimage.layers.build import LayerContext, build_layer

        spec, settings = args
        try:
            layer = build_layer(spec, LayerContext(cache=cache, **settings))
            reply = ("cached" if layer.cached else "built", None)
        except (PyimageError, OSError) as exc:
            exc.__traceback__ = None
            reply = ("error", exc)
    try:
        data = pickle.dumps(reply)
    except Exception:  # an error that does not travel: the parent builds the layer and meets it itself
        return 1
    sys.stdout.buffer.write(data)
    return 0
