"""The README's first command, run as a newcomer runs it: in a fresh shell (no venv, no PYTHONPATH, default
PATH), in a fresh copy of this repository, exactly as written."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def first_command() -> list[str]:
    """The command lines of step 1 in the README's first ``sh`` block."""
    block = (REPO / "README.md").read_text().split("```sh\n", 1)[1].split("```", 1)[0]
    lines: list[str] = []
    for line in block.splitlines():
        if line.startswith("# 2."):
            break
        if line.strip() and not line.startswith("#"):
            lines.append(line)
    return lines


def _missing(packages: list[str]) -> list[str]:
    status = lambda p: subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", p], capture_output=True, text=True).stdout  # noqa: E731
    return [p for p in packages if status(p) != "installed"]


def test_the_readmes_first_command_works_in_a_fresh_shell_as_written(tmp_path: Path, base_rootfs: Path) -> None:
    apt, *rest = first_command()
    assert apt.startswith("apt-get install -y "), apt
    assert len(rest) == 1 and "pip install" in rest[0] and "venv" in rest[0]
    command = rest[0]
    if _missing(apt.split()[3:]):  # on a machine that already has them, installing again changes nothing
        subprocess.run(["bash", "-c", apt], check=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    checkout = tmp_path / "pyimage"
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        src = REPO / name
        if src.is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, checkout / name)
    # the base examples/run.sh makes with mmdebstrap on first use, as a developer who ran it before has it
    (checkout / ".cache").mkdir()
    os.link(base_rootfs, checkout / ".cache" / "bookworm-python3.tar") if base_rootfs.stat().st_dev == tmp_path.stat().st_dev else shutil.copy(base_rootfs, checkout / ".cache" / "bookworm-python3.tar")
    fresh = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    done = subprocess.run(["bash", "--noprofile", "--norc", "-c", command], cwd=checkout, env=fresh, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "hello, pyimage" in done.stdout
    assert (checkout / ".venv" / "bin" / "pyimage").exists()
