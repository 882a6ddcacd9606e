"""Real container engines for the tests, started by the tests: Docker Engine (with its containerd), and
containers/storage (the library under podman, buildah and CRI-O) in a private root.

``start_dockerd(dir)`` runs Debian's ``dockerd`` as root with its own data root, exec root, pid file and unix
socket under ``dir`` (kept short: a socket path must fit in 108 bytes), overlay2 storage (vfs when overlay2
cannot mount here), and no iptables or bridge, so it touches nothing of the host's network. It is stopped by
its pid file, never by name. The Debian client ``/usr/bin/docker`` talks to it through ``DOCKER_HOST``.

``Storage`` is a containers/storage root: ``skopeo copy … containers-storage:[overlay@ROOT+RUNROOT]NAME`` and
``podman`` (through ``CONTAINERS_STORAGE_CONF``) use the same one. ``podman run`` fails on this machine
(rlimits), so a loaded image is checked by mounting it (``podman image mount``) and running its app with
``chroot`` — the files the engine unpacked, run as they are.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Dockerd", "Storage", "start_dockerd", "make_storage", "DOCKER_CLIENT"]

DOCKER_CLIENT = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")


@dataclass
class Dockerd:
    root: Path
    driver: str
    process: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.root / "sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "exec" / "containerd" / "containerd.sock"

    @property
    def env(self) -> dict[str, str]:
        """The environment a user of this engine has: DOCKER_HOST set, a private client config dir."""
        config = self.root / "client"
        config.mkdir(exist_ok=True)
        return dict(os.environ, DOCKER_HOST=self.host, DOCKER_CONFIG=str(config))

    def docker(self, *args: str, check: bool = True, timeout: float = 600, input: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([DOCKER_CLIENT, *args], capture_output=True, text=True, env=self.env, timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def ctr(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        cmd = ["ctr", "--address", str(self.containerd_socket), "--namespace", "pyimage-test", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def version(self) -> str:
        return self.docker("version", "--format", "{{.Server.Version}}").stdout.strip()

    def stop(self) -> None:
        pid_file = self.root / "pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # containers and the storage driver may leave mounts below the data root
        subprocess.run(["sh", "-c", f"grep -o ' {self.root}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l"], check=False)


def _ping(path: Path) -> bool:
    """Whether the engine answers ``GET /_ping`` with 200 on its socket. A plain socket, closed on every path:
    httpx's unix transport leaves the socket of a failed connect (the daemon still starting) unclosed."""
    import socket

    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(64).split(b"\r\n", 1)[0].split()[1:2] == [b"200"]
    except (OSError, IndexError):
        return False


def start_dockerd(drivers: Sequence[str] = ("overlay2", "vfs")) -> Dockerd:
    """A private Docker Engine (the first storage driver that starts); the caller stops it."""
    failures = []
    for driver in drivers:
        root = Path(tempfile.mkdtemp(prefix="pyi-d-", dir="/tmp"))
        with open(root / "log", "wb") as log:  # dockerd writes to its own copy of the descriptor
            process = subprocess.Popen(
                ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"), "-H", f"unix://{root / 'sock'}",
                 "--pidfile", str(root / "pid"), "--storage-driver", driver, "--iptables=false", "--ip6tables=false", "--bridge=none"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        engine = Dockerd(root, driver, process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None and not _ping(engine.socket):
            time.sleep(0.2)
        if process.poll() is None and _ping(engine.socket):
            return engine
        engine.stop()
        failures.append(f"{driver}: {(root / 'log').read_text(errors='replace')[-800:]}")
    raise RuntimeError("dockerd did not start:\n" + "\n".join(failures))


@dataclass
class Storage:
    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "storage.conf"

    def ref(self, name: str) -> str:
        """A skopeo ``containers-storage:`` reference into this root."""
        return f"containers-storage:[overlay@{self.root / 'graph'}+{self.root / 'run'}]{name}"

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, CONTAINERS_STORAGE_CONF=str(self.conf))

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["podman", *args], capture_output=True, text=True, env=self.env, timeout=600)
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    @contextlib.contextmanager
    def mounted(self, image: str) -> Iterator[Path]:
        """The image's root filesystem, as containers/storage unpacked it."""
        path = Path(self.podman("image", "mount", image).stdout.strip())
        try:
            yield path
        finally:
            self.podman("image", "unmount", "--force", image, check=False)

    def run_chroot(self, image: str, argv: Sequence[str], env: dict[str, str] | None = None) -> str:
        """Runs ``argv`` in the unpacked image (chroot into its mount), as its app would run; returns stdout."""
        with self.mounted(image) as rootfs:
            done = subprocess.run([shutil.which("chroot") or "/usr/sbin/chroot", str(rootfs), *argv], capture_output=True, text=True, timeout=300,
                                  env={"PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/root", **(env or {})})
        if done.returncode != 0:
            raise AssertionError(f"{argv} in {image} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def clean(self) -> None:
        self.podman("system", "reset", "--force", check=False)
        subprocess.run(["sh", "-c", f"grep -o ' {self.root}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l"], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def make_storage() -> Storage:
    root = Path(tempfile.mkdtemp(prefix="pyi-cs-", dir="/tmp"))
    storage = Storage(root)
    storage.conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{root / "graph"}"\nrunroot = "{root / "run"}"\n')
    return storage
