"""The base scan's record of executables and symlinks, which the entrypoint check looks programs up in: read from
a real root-filesystem tar (a usrmerge layout, versioned python links, a hardlink, a non-executable file)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from pyimage.base import load_base, scan_base
from pyimage.cache import Cache
from pyimage.oci.model import Platform


def _rootfs(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        def add(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o755, link: str = "", data: bytes = b"#!x\n") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname = kind, mode, link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for d in ("usr", "usr/bin", "usr/lib", "usr/local", "usr/local/bin"):
            add(d, tarfile.DIRTYPE)
        add("bin", tarfile.SYMTYPE, 0o777, "usr/bin")
        add("usr/bin/dash")
        add("usr/bin/sh", tarfile.SYMTYPE, 0o777, "dash")
        add("usr/bin/python3.11")
        add("usr/bin/python3", tarfile.SYMTYPE, 0o777, "python3.11")
        add("usr/bin/perl")
        add("usr/bin/perl5.36", tarfile.LNKTYPE, 0o755, "usr/bin/perl")
        add("usr/lib/os-release", mode=0o644, data=b"ID=test\n")
        add("usr/local/bin/dangling", tarfile.SYMTYPE, 0o777, "/nowhere")
    return path


def test_programs_are_found_through_the_bases_symlinks(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    base, _ = load_base(f"rootfs:{_rootfs(tmp_path / 'rootfs.tar')}", Platform("linux", "amd64"), cache)
    facts = scan_base(base, cache)
    for path in ("/bin/sh", "/usr/bin/sh", "/bin/python3", "/usr/bin/python3.11", "/usr/bin/perl5.36", "/bin/../bin/dash"):
        assert facts.has_program(path), path
    # `..` after a symlinked directory is its target's parent, as the kernel walks it: /bin/.. is /usr
    assert not facts.has_program("/bin/../usr/bin/dash") and facts.resolve("/bin/../usr/bin/dash") == "/usr/usr/bin/dash"
    for path in ("/usr/lib/os-release", "/usr/local/bin/dangling", "/usr/bin/pyhton3", "/usr/bin"):
        assert not facts.has_program(path), path
    assert facts.programs_in("/bin") == {"dash", "sh", "python3", "python3.11", "perl", "perl5.36"}
    assert scan_base(base, cache) == facts  # the cached record reads back the same


def test_symlinks_are_followed_as_this_machines_kernel_follows_them(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    tar = _rootfs(tmp_path / "rootfs.tar")
    facts = scan_base(load_base(f"rootfs:{tar}", Platform("linux", "amd64"), cache)[0], cache)
    root = tmp_path / "root"
    with tarfile.open(tar) as t:
        t.extractall(root, filter="tar")
    for path in ("/bin/sh", "/bin/../bin/dash", "/bin/../usr/bin/dash", "/usr/bin/../bin/sh", "/bin/./python3", "/usr/lib/../bin/perl"):
        real = Path(os.path.realpath(str(root) + path))  # the host kernel's walk inside the extracted root
        expected = "/" + real.relative_to(root).as_posix() if real.is_relative_to(root) and real.exists() else None
        assert (facts.resolve(path) if expected else None) == expected, path
        assert facts.has_program(path) == (expected is not None and os.access(real, os.X_OK)), path


def test_python_m_looks_at_the_names_at_the_root_when_the_base_keeps_working_directory_slash(tmp_path: Path) -> None:
    """With no WorkingDir (the container starts in /), ``python -m MOD`` finds MOD at / or in site-packages: the
    scan records the names at / (a later layer's whiteout removes one), so a typo is said before the build."""
    from pyimage.errors import ConfigError
    from pyimage.layers.paths import InstallPaths
    from pyimage.runconfig import _check_python_target

    tar = _rootfs(tmp_path / "rootfs.tar")
    with tarfile.open(tar, "a") as t:
        for name in ("tool.py", "gone.py", ".wh.gone.py"):
            info = tarfile.TarInfo(name)
            t.addfile(info, io.BytesIO(b""))
    cache = Cache(tmp_path / "cache")
    facts = scan_base(load_base(f"rootfs:{tar}", Platform("linux", "amd64"), cache)[0], cache)
    assert facts.root == {"bin", "usr", "tool.py"}
    site = {"/opt/venv/lib/python3.11/site-packages/app/__init__.py", "/opt/venv/lib/python3.11/site-packages/app/cli.py"}

    def check(module: str, base_workdir: str = "/") -> None:
        _check_python_target("entrypoint", ["python", "-m", module], site, set(), facts, InstallPaths(), None, False, base_workdir)

    check("tool")  # the base's own, at /
    check("app.cli")
    check("json")  # the standard library
    check("gone", "/srv")  # a WorkingDir whose files are not all known: left to the container
    for module, said in (("gone", "no module 'gone'"), ("app.clj", "did you mean 'app.cli'?"), ("app", "app is a package with no __main__.py")):
        with pytest.raises(ConfigError) as err:
            check(module)
        assert said in f"{err.value} {err.value.hint}"
