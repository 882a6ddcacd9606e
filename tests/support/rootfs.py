"""A minimal Debian root filesystem for end-to-end tests, built once by mmdebstrap and cached by its inputs.

``debian_rootfs()`` returns an uncompressed tar (bookworm minbase + python3: 122 MB; 22-63 s cold on a 2-core
machine, bound by the mirror's speed; instant warm). ``oci_layout()`` wraps such a tar as a one-layer OCI image with umoci, to serve as a
base image or to run directly.

The cache file is named by a sha256 of every input (the whole mmdebstrap command line, the mmdebstrap version,
``FORMAT``), built into a temp file, renamed into place, and guarded by an ``fcntl`` lock, so parallel test
processes build it once and a reader never sees half a file. Next to it, ``<name>.json`` records the inputs,
the build time and the size.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["DEBIAN_MIRROR", "FORMAT", "debian_rootfs", "default_cache_dir", "oci_layout"]

DEBIAN_MIRROR = "http://deb.debian.org/debian"  # plain HTTP: apt verifies the Release signature anyway
FORMAT = 1  # bump when the recipe below changes in a way the command line does not show
VARIANT = "minbase"
# Fixed so the tar is byte-for-byte reproducible for the same mirror content: bookworm's release day.
SOURCE_DATE_EPOCH = 1686355200  # 2023-06-10T00:00:00Z
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What a container never reads: ~13 MB of docs, man pages and translations on minbase + python3.
_DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)
_HOOKS = (
    # Merged /usr by symlinks, as debootstrap and the official images do. Without it bookworm's
    # init-system-helpers pulls in the usrmerge package and with it full perl: +49 MB (171 MB vs 122 MB).
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    # The host's resolv.conf and hostname would otherwise be copied in and make the tar host-specific.
    "--customize-hook=rm -f \"$1\"/etc/resolv.conf",
    "--customize-hook=echo pyimage-test > \"$1\"/etc/hostname",
)


# Released before /usr was merged: mmdebstrap's merged-usr hook fails there (its essential hook expects bookworm's
# usr-is-merged package), and bullseye's images were not merged either.
_UNMERGED_SUITES = ("buster", "bullseye")


def default_cache_dir() -> Path:
    """``$PYIMAGE_TEST_CACHE``, else ``~/.cache/pyimage-tests``; separate from pyimage's own cache on purpose."""
    env = os.environ.get("PYIMAGE_TEST_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pyimage-tests"


def debian_rootfs(
    cache_dir: Path | None = None,
    *,
    suite: str = "bookworm",
    packages: Iterable[str] = ("python3",),
    mirror: str = DEBIAN_MIRROR,
    arch: str | None = None,
) -> Path:
    """Path of a cached root-filesystem tar of Debian ``suite`` (minbase + ``packages``); built on first use.

    ``arch`` (a Debian architecture, ``arm64``) builds a foreign root filesystem; its maintainer scripts run
    under qemu-user-static through binfmt_misc (``qemu_ready()``), ~3 min on 2 cores, then cached like the rest.

    Guaranteed: the file is complete (atomic rename), built at most once at a time across processes (flock),
    has no apt lists, docs or man pages, and an empty ``/dev`` (runtimes mount their own).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    pkgs = sorted(set(packages))
    command = [
        "mmdebstrap",
        f"--variant={VARIANT}",
        "--format=tar",
        *([f"--arch={arch}"] if arch else []),
        "--aptopt=Acquire::Languages \"none\"",
        *(f"--dpkgopt={opt}" for opt in _DPKG_EXCLUDES),
        *(_HOOKS[1:] if suite in _UNMERGED_SUITES else _HOOKS),
        *([f"--include={','.join(pkgs)}"] if pkgs else []),
        suite,
        "-",  # the tar goes to stdout, through mmtarfilter
        mirror,
    ]
    inputs = {
        "format": FORMAT,
        "command": command,
        "mmdebstrap": _mmdebstrap_version(),
        "source_date_epoch": SOURCE_DATE_EPOCH,
    }
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    target = cache_dir / f"debian-{suite}{'-' + arch if arch else ''}-{key[:32]}.tar"
    if target.exists():
        return target
    with open(cache_dir / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds the file below
        if not target.exists():
            for stale in cache_dir.glob(f".{target.name}.*.tmp"):  # left by a builder that was killed
                stale.unlink(missing_ok=True)
            seconds = _build(command, target)
            meta = {**inputs, "seconds": round(seconds, 1), "size": target.stat().st_size}
            target.with_name(target.name + ".json").write_text(json.dumps(meta, indent=2) + "\n")
    return target


def qemu_ready(machine: str = "aarch64") -> bool:
    """Whether binaries of ``machine`` run here: qemu-user-static registered with binfmt_misc (mounting
    binfmt_misc and enabling the formats first when we may)."""
    entry = Path("/proc/sys/fs/binfmt_misc") / f"qemu-{machine}"
    if not entry.exists() and shutil.which("update-binfmts"):
        if not os.path.ismount("/proc/sys/fs/binfmt_misc"):
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], check=False, capture_output=True)
        subprocess.run(["update-binfmts", "--enable", f"qemu-{machine}"], check=False, capture_output=True)
    return entry.exists() and entry.read_text().startswith("enabled")


def _mmdebstrap_version() -> str:
    out = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip()


def _build(command: Sequence[str], target: Path) -> float:
    """Runs ``command | mmtarfilter`` into a temp file next to ``target`` and renames it; returns seconds."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH), "LC_ALL": "C.UTF-8"}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    start = time.monotonic()
    try:
        with os.fdopen(fd, "wb") as out, tempfile.TemporaryFile() as log:
            # mmdebstrap 1.3.5 (bookworm) has no --skip=output/dev; device nodes in a layer break
            # unprivileged unpackers and no official image ships them.
            build = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env
            )
            assert build.stdout is not None
            filt = subprocess.run(
                ["mmtarfilter", "--path-exclude=/dev/*"], check=False, stdin=build.stdout, stdout=out, stderr=log
            )
            build.stdout.close()
            build_rc = build.wait()
            if build_rc or filt.returncode:
                log.seek(0)
                raise RuntimeError(
                    f"building the Debian rootfs failed (mmdebstrap exit {build_rc}, mmtarfilter exit "
                    f"{filt.returncode}):\n$ {' '.join(command)}\n{log.read().decode(errors='replace')[-4000:]}"
                )
            out.flush()
            os.fchmod(out.fileno(), 0o644)  # mkstemp made it 0600
            os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return time.monotonic() - start


def oci_layout(rootfs_tar: Path, layout: Path, tag: str = "latest", *, cmd: Sequence[str] = ("bash",)) -> Path:
    """Makes (or adds ``tag`` to) an OCI layout at ``layout`` whose image is ``rootfs_tar`` as one gzip layer.

    The config carries ``PATH`` and ``cmd`` like Debian's official image does. ~2.5 s for the default rootfs
    (umoci compresses the 122 MB tar to 44 MB). Returns ``layout``.
    """
    layout = Path(layout)
    image = f"{layout}:{tag}"
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(SOURCE_DATE_EPOCH))
    steps = [
        *([] if (layout / "index.json").exists() else [["umoci", "init", "--layout", str(layout)]]),
        ["umoci", "new", "--image", image],
        ["umoci", "raw", "add-layer", "--image", image, "--history.created", created,
         "--history.created_by", "debian_rootfs (mmdebstrap)", str(rootfs_tar)],
        ["umoci", "config", "--image", image, "--no-history", "--created", created, "--config.env",
         f"PATH={DEFAULT_PATH}", *(arg for c in cmd for arg in ("--config.cmd", c))],
    ]
    for step in steps:
        done = subprocess.run(step, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode:
            raise RuntimeError(f"$ {' '.join(step)}\nexit {done.returncode}\n{done.stdout}{done.stderr}")
    return layout
