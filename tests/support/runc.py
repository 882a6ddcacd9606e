"""Run OCI images the way a user's runtime would: umoci turns the layout into a bundle, runc runs it.

Every run gets its own temp dir (bundle + runc ``--root`` state; on /dev/shm when it has room, see
``_scratch_root``) and a unique container id, so parallel tests never collide, and the container is always
deleted afterwards. The bundle's ``config.json`` is what umoci
derives from the image config (entrypoint + cmd, env, user, working dir), edited for this machine:

- ``linux.resources`` removed: there are no cgroup controllers to apply them to;
- ``process.terminal = false``: stdout/stderr are plain pipes or files;
- no ``network`` namespace: a server in the container binds the host's loopback, where a test can reach it.

umoci 0.4.7 cannot unpack zstd layers, so layouts holding any are first copied to gzip with skopeo.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = [
    "Container",
    "copy_to_layout",
    "free_port",
    "run_image",
    "skip_unless_tools",
    "start_image",
    "unpack",
    "wait_http",
]

def skip_unless_tools(*names: str) -> None:
    """Skips the calling test (or module) when a tool is not on PATH; under ``CI=true`` fails instead.

    CI installs every tool, so a skip there would only hide a broken setup behind a green run.
    """
    missing = [name for name in names if shutil.which(name) is None]
    if not missing:
        return
    reason = f"needs {', '.join(missing)} on PATH (apt-get install {' '.join(missing)}; see .ci/run)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI is set but a tool is missing: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (containers share the host's network namespace)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_to_layout(src: str, layout: Path, tag: str) -> None:
    """Copies any skopeo image reference (``docker-archive:F``, ``docker://host/repo:tag``, ``oci:DIR:TAG``)
    into ``layout:tag`` with gzip layers, the form umoci can unpack. TLS is not verified (test registries)."""
    tls = ["--src-tls-verify=false"] if src.startswith("docker://") else []
    _check(["skopeo", "copy", "--quiet", *tls, "--dest-compress-format", "gzip", src, f"oci:{layout}:{tag}"])


def unpack(
    layout: Path,
    tag: str,
    bundle: Path,
    *,
    args: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict:
    """Unpacks ``layout:tag`` into the runc bundle dir ``bundle`` (must not exist) and returns its config.

    ``args`` replaces the image's entrypoint + cmd; ``env`` entries replace same-named ones or are added.
    """
    bundle = Path(bundle)
    layout = Path(layout)
    manifest, image_config = _image(layout, tag)
    with tempfile.TemporaryDirectory(prefix="pyimage-gzip-", dir=_scratch_root()) as scratch:
        if any(layer["mediaType"].endswith("+zstd") for layer in manifest.get("layers", [])):
            copy_to_layout(f"oci:{layout}:{tag}", Path(scratch), tag)
            layout = Path(scratch)
        bundle.mkdir(parents=True)
        image = f"{layout}:{tag}"
        # `raw unpack` + `raw runtime-config` give the same config.json as `umoci unpack` but skip the mtree
        # manifest only `umoci repack` needs. 122 MB base: 1.3 s vs 1.9 s on tmpfs, 2.4 s vs 7.8 s on ext4.
        _check(["umoci", "raw", "unpack", "--image", image, str(bundle / "rootfs")])
        _check(["umoci", "raw", "runtime-config", "--image", image, "--rootfs", str(bundle / "rootfs"),
                str(bundle / "config.json")])
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["linux"].pop("resources", None)
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "network"]
    process = config["process"]
    process["terminal"] = False
    if args is not None:
        process["args"] = list(args)
    image_env = (image_config.get("config") or {}).get("Env") or []
    overrides = {
        # umoci adds TERM=xterm to every config; docker and containerd do not without a tty, and apps
        # (rich, click, colorama) change their output on it. Keep it only when the image sets it.
        **({} if any(e.startswith("TERM=") for e in image_env) else {"TERM": None}),
        **(env or {}),
    }
    process["env"] = [e for e in process.get("env", []) if e.split("=", 1)[0] not in overrides]
    process["env"] += [f"{k}={v}" for k, v in overrides.items() if v is not None]
    config_path.write_text(json.dumps(config, indent=2))
    return config


def run_image(
    layout: Path,
    tag: str,
    *,
    args: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Runs the image to completion and returns its exit code, stdout and stderr (text).

    Raises ``AssertionError`` showing both streams on a non-zero exit (unless ``check=False``) and
    ``subprocess.TimeoutExpired`` after ``timeout`` s; the container and its bundle are removed either way.
    """
    with _workdir() as work:
        unpack(layout, tag, work / "bundle", args=args, env=env)
        cid = _container_id()
        command = _runc(work, "run", "--bundle", str(work / "bundle"), cid)
        try:
            done = subprocess.run(
                command, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout
            )
        finally:
            _delete(work, cid)
    if check and done.returncode:
        raise AssertionError(f"{tag}: exit {done.returncode}\n{_show(done.stdout, done.stderr)}")
    return done


@dataclass
class Container:
    """A container started by ``start_image``. Its output goes to files, so a chatty server never blocks on a
    full pipe; ``stdout``/``stderr`` stay readable after the ``with`` block (kept in memory at exit)."""

    id: str
    process: subprocess.Popen[bytes]
    root: Path
    stdout_path: Path
    stderr_path: Path
    _final: tuple[str, str] | None = None

    @property
    def stdout(self) -> str:
        """Everything the container wrote to stdout so far."""
        return self._final[0] if self._final else self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        """Everything the container wrote to stderr so far."""
        return self._final[1] if self._final else self.stderr_path.read_text(errors="replace")

    @property
    def returncode(self) -> int | None:
        """None while it runs; then its exit code (128 + n when killed by signal n)."""
        return self.process.poll()

    def output(self) -> str:
        """Both streams, labelled: for assertion messages."""
        return _show(self.stdout, self.stderr)

    def stop(self, sig: str = "TERM", timeout: float = 10) -> int:
        """Sends ``sig`` to the container's PID 1 and waits up to ``timeout`` s for it to exit; returns the
        exit code. Note PID 1 ignores TERM unless the program installs a handler (the kernel's rule)."""
        if self.returncode is None:
            subprocess.run(_runc(self.root, "kill", self.id, sig), check=False, capture_output=True)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.id} still running {timeout} s after SIG{sig}\n{self.output()}") from None


@contextlib.contextmanager
def start_image(
    layout: Path,
    tag: str,
    *,
    args: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[Container]:
    """Starts the image in the background (runc in the foreground of a child process, output to files) and
    yields a ``Container``; on exit it kills and deletes the container and removes the bundle."""
    with _workdir() as work:
        unpack(layout, tag, work / "bundle", args=args, env=env)
        cid = _container_id()
        out, err = work / "stdout", work / "stderr"
        with open(out, "wb") as out_f, open(err, "wb") as err_f:
            process = subprocess.Popen(
                _runc(work, "run", "--bundle", str(work / "bundle"), cid),
                stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f,
            )
        container = Container(cid, process, work, out, err)
        try:
            yield container
        finally:
            if process.poll() is None:
                subprocess.run(_runc(work, "kill", cid, "KILL"), check=False, capture_output=True)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()  # runc itself is stuck; `delete --force` below still ends the container
                    process.wait()
            _delete(work, cid)
            container._final = (container.stdout, container.stderr)


def wait_http(url: str, timeout: float = 30, *, container: Container | None = None) -> bytes:
    """Polls ``url`` until it answers 2xx and returns the body. Raises ``AssertionError`` at ``timeout`` or, when
    ``container`` is given, as soon as it exits, with its output. Proxies are bypassed (the target is local)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while True:
        try:
            with opener.open(url, timeout=5) as response:
                if 200 <= response.status < 300:
                    return response.read()
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (OSError, urllib.error.URLError) as exc:
            last = repr(exc)
        if container is not None and container.returncode is not None:
            raise AssertionError(f"{url}: container exited ({container.returncode}) before answering\n"
                                 f"{container.output()}")
        if time.monotonic() > deadline:
            extra = f"\n{container.output()}" if container is not None else ""
            raise AssertionError(f"{url}: no 2xx answer in {timeout} s (last: {last}){extra}")
        time.sleep(0.1)


def _image(layout: Path, tag: str) -> tuple[dict, dict]:
    """The manifest and image config tagged ``tag`` in ``layout``'s index.json (a nested index is not followed:
    empty dicts then, and umoci resolves it alone)."""
    index = json.loads((layout / "index.json").read_text())
    for desc in index.get("manifests", []):
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            manifest = json.loads(_blob(layout, desc["digest"]).read_text())
            if "config" in manifest:
                return manifest, json.loads(_blob(layout, manifest["config"]["digest"]).read_text())
            break
    return {}, {}


def _blob(layout: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":", 1)
    return layout / "blobs" / algorithm / hexdigest


# Bundles go to tmpfs when there is room: unpack + run of the 122 MB base measured 1.5 s on /dev/shm against
# 1.5-8 s on this ext4 disk (mounted with `discard`: each deleted rootfs slows the next unpack).
_SHM = Path("/dev/shm")
_SHM_MIN_FREE = 2 << 30


def _scratch_root() -> str | None:
    """``$PYIMAGE_TEST_TMP``, else /dev/shm with >= 2 GiB free, else None (tempfile's default, $TMPDIR)."""
    if os.environ.get("PYIMAGE_TEST_TMP"):
        return os.environ["PYIMAGE_TEST_TMP"]
    with contextlib.suppress(OSError):
        stat = os.statvfs(_SHM)
        if stat.f_bavail * stat.f_frsize >= _SHM_MIN_FREE and os.access(_SHM, os.W_OK | os.X_OK):
            return str(_SHM)
    return None


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="pyimage-runc-", dir=_scratch_root()))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _container_id() -> str:
    return f"pyimage-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _runc(work: Path, *argv: str) -> list[str]:
    # A private --root: state of parallel test processes never mixes, and nothing is left in /run/runc.
    return ["runc", "--root", str(work / "state"), *argv]


def _delete(work: Path, cid: str) -> None:
    subprocess.run(_runc(work, "delete", "--force", cid), check=False, capture_output=True)


def _check(command: list[str]) -> None:
    done = subprocess.run(command, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode:
        raise AssertionError(f"$ {' '.join(command)}\nexit {done.returncode}\n{_show(done.stdout, done.stderr)}")


def _show(stdout: str, stderr: str) -> str:
    return f"--- stdout ---\n{stdout[-4000:]}\n--- stderr ---\n{stderr[-4000:]}"
