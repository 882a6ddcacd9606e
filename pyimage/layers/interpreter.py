"""The ``interpreter`` layer: the in-image virtual environment, and a standalone CPython when one is given.

With ``interpreter = "base"`` the layer holds only the venv skeleton (``pyvenv.cfg``, ``bin/python`` links to
the base's interpreter, an empty site-packages). With a relocatable CPython (a directory, a ``.tar.gz`` /
``.tar.zst`` archive such as python-build-standalone's ``install_only``, or a URL to one with its sha256), the
tree goes to ``/opt/python`` in the same layer and the venv points there. A tree whose interpreter finds its
own libraries only where it was built (pyenv's absolute RUNPATH) is refused before any layer work.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Mapping, cast

import pyimage.atomic as atomic
from pyimage.cache import Cache
from pyimage.errors import BuildError, ConfigError
from pyimage.hashing import BUFFER, file_digest, hash_chunks, hex_of, matches
from pyimage.layers.elf import read_dynamic
from pyimage.layers.paths import InstallPaths
from pyimage.layers.tar import TarWriter, safe_member_path

__all__ = ["Interpreter", "STANDALONE_HOME", "choose_base_python", "standalone_interpreter", "venv_filler"]

STANDALONE_HOME = "/opt/python"
_VERSIONED = re.compile(r"^python(3\.\d+)$")


@dataclass(frozen=True)
class Interpreter:
    """``executable`` is the absolute in-image path of the interpreter the venv points at."""

    executable: str
    version: str  # "3.11"
    source: Path | None = None  # a standalone tree or archive to write into the layer
    source_id: str = ""  # content identity of ``source`` for the layer key


def choose_base_python(pythons: dict[str, str], wanted: str | None, where: str) -> Interpreter:
    """Picks the base's interpreter: the one found, or the one of version ``wanted``."""
    found = ", ".join(f"{p} ({v})" for p, v in pythons.items()) or "none"
    pool = {p: v for p, v in pythons.items() if wanted is None or v == wanted}
    if not pool:
        raise ConfigError(
            f"base {where}: no Python {wanted or ''} interpreter found (found: {found})".replace("  ", " "),
            "use a base image with Python (e.g. python:3.12-slim), set python = \"X.Y\" to one that exists, or set interpreter to a standalone CPython",
        )
    versions = sorted(set(pool.values()))
    if len(versions) > 1:
        raise ConfigError(f"base {where}: several Python versions found: {found}", 'set python = "X.Y" in [tool.pyimage] to choose one')
    preferred = sorted(pool, key=lambda p: (not p.startswith("/usr/local/"), not p.startswith("/usr/bin/"), p))
    return Interpreter(preferred[0], versions[0])


def _standalone_version(names: list[str], where: str) -> str:
    versions = sorted({m.group(1) for n in names if (m := _VERSIONED.match(posixpath.basename(n))) and "/bin/" in f"/{n}"})
    if len(versions) != 1:
        raise ConfigError(f"interpreter {where}: expected one bin/python3.X, found {versions or 'none'}", "point interpreter at a CPython install tree (bin/, lib/) or its archive")
    return versions[0]


def standalone_interpreter(spec: str, sha256: str | None, cache: Cache, env: Mapping[str, str] | None = None) -> Interpreter:
    """An Interpreter for a directory, archive or URL given as ``interpreter``, checked to start in the image
    (``check_loadable``) with the image's ``env``."""
    if spec.startswith(("http://", "https://")):
        path = _download(spec, sha256 or "", cache)
    else:
        path = Path(spec).expanduser()
    if path.is_dir():
        entries = sorted(path.rglob("*"))
        names = [p.relative_to(path).as_posix() for p in entries]
        ident = hashlib.sha256(b"".join(f"{p}|{p.lstat().st_size}|{p.lstat().st_mtime_ns}\n".encode() for p in entries)).hexdigest()
        version = _standalone_version([n for n in names if posixpath.dirname(n) == "bin"], spec)
        executable = path / "bin" / f"python{version}"
        with open(executable, "rb") as f:
            _check_loadable(f, executable.stat().st_size, set(names), version, env or {}, spec)
    elif path.is_file():
        with tarfile.open(path) as tar:
            members = {_strip_top(m.name): m for m in tar.getmembers()}
            version = _standalone_version(list(members), spec)
            member = members.get(f"bin/python{version}")
            exe = tar.extractfile(member) if member is not None else None  # a link is followed to its file
            if exe is not None:
                with exe:
                    size = exe.seek(0, os.SEEK_END)
                    _check_loadable(cast(BinaryIO, exe), size, set(members), version, env or {}, spec)
        ident = file_digest(path)
    else:
        raise ConfigError(f"interpreter {spec}: no such file or directory", 'use "base", a CPython directory, or a .tar.gz archive of one')
    return Interpreter(f"{STANDALONE_HOME}/bin/python{version}", version, path, ident)


def _check_loadable(exe: BinaryIO, size: int, tree: set[str], version: str, env: Mapping[str, str], where: str) -> None:
    """Refuses an interpreter that will not start at ``/opt/python``: a library it needs that the tree holds
    (libpython3.X.so.1.0 of a shared build) but that neither its RUNPATH/RPATH nor the image's
    LD_LIBRARY_PATH leads to there. ``$ORIGIN``-relative search paths (python-build-standalone's
    ``$ORIGIN/../lib``) and absolute ones under /opt/python resolve inside the tree; any other absolute one
    names a directory of the build machine. Libraries the tree does not hold are the base's (libc)."""
    info = read_dynamic(exe, size)
    if info is None:
        return
    held: dict[str, str] = {}  # soname -> its in-image directory, for the hint
    for name in sorted(tree):
        held.setdefault(posixpath.basename(name), posixpath.dirname(f"{STANDALONE_HOME}/{name}"))
    origin = f"{STANDALONE_HOME}/bin"
    tag, dirs = info.search_path
    library_path = [d for d in env.get("LD_LIBRARY_PATH", "").split(":") if d]

    def in_tree(directory: str, soname: str) -> bool:
        for token in ("${ORIGIN}", "$ORIGIN"):
            if directory.startswith(token):
                directory = origin + directory[len(token) :]
        full = posixpath.normpath(directory)
        if not full.startswith(STANDALONE_HOME + "/") and full != STANDALONE_HOME:
            return False
        return posixpath.relpath(f"{full}/{soname}", STANDALONE_HOME) in tree

    for soname in info.needed:
        if soname not in held or any(in_tree(d, soname) for d in (*dirs, *library_path)):
            continue
        absolute = [d for d in dirs if d.startswith("/")]
        if absolute:
            why = f"which it looks for in {tag} {':'.join(absolute)}, a directory of the machine it was built on that the image will not have"
        else:
            why = f"but no {tag or 'RUNPATH/RPATH'}{' ' + ':'.join(dirs) if dirs else ''} leads to it under {STANDALONE_HOME}"
        raise ConfigError(
            f"interpreter {where}: bin/python{version} needs {soname}, {why} (the container would exit 127)",
            f"use a relocatable CPython build (python-build-standalone's install_only, whose RUNPATH is $ORIGIN/../lib), "
            f'or, if you know what you do, set env = {{ LD_LIBRARY_PATH = "{held[soname]}" }}',
        )


def _strip_top(name: str) -> str:
    name = name.lstrip("./")
    return name.split("/", 1)[1] if name.startswith("python/") else name


def _download(url: str, sha256: str, cache: Cache) -> Path:
    dest = cache.interpreter_archive(sha256)
    if dest.exists():
        return dest
    import httpx

    with atomic.staged(dest, cache.tmp_path(".tar")) as tmp:  # any failure, Ctrl-C included, leaves no partial download
        try:
            with httpx.stream("GET", url, follow_redirects=True, timeout=60) as resp, open(tmp, "wb") as f:
                resp.raise_for_status()
                got = hash_chunks(resp.iter_bytes(BUFFER), into=f)
        except httpx.HTTPError as exc:
            raise BuildError(f"cannot download interpreter {url}: {exc}", "check the URL and the network, or use a local archive") from exc
        if not matches(sha256, got):
            raise BuildError(f"interpreter {url}: sha256 {hex_of(got)[:12]}… is not interpreter-sha256 {sha256[:12]}…", "fix interpreter-sha256, or check the download")
    return dest


def _write_tree(tw: TarWriter, source: Path) -> None:
    home = STANDALONE_HOME.strip("/")
    tw.add_dir(home)
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source).as_posix()
            target = f"{home}/{safe_member_path(rel, where=str(source))}"
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                tw.add_symlink(target, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                tw.add_dir(target)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    tw.add_file(target, f, st.st_size, executable=bool(st.st_mode & 0o111))
        return
    with tarfile.open(source) as tar:
        for member in tar:
            rel = _strip_top(member.name)
            if not rel or rel == "python":
                continue
            target = f"{home}/{safe_member_path(rel, where=str(source))}"
            if member.isdir():
                tw.add_dir(target)
            elif member.issym():
                if member.linkname.startswith("/"):
                    raise BuildError(f"interpreter archive: {member.name} links outside the tree", "use a relocatable CPython build")
                tw.add_symlink(target, member.linkname)
            elif member.isfile():
                tw.add_file(target, tar.extractfile(member), member.size, executable=bool(member.mode & 0o111))  # type: ignore[arg-type]


def venv_filler(interpreter: Interpreter, paths: InstallPaths) -> Callable[[TarWriter], None]:
    """A function that writes the interpreter layer's content into a tar writer."""

    def fill(tw: TarWriter) -> None:
        if interpreter.source is not None:
            _write_tree(tw, interpreter.source)
        venv = paths.venv.strip("/")
        tw.add_dir(venv)
        tw.add_dir(paths.bin)
        tw.add_dir(f"{venv}/include")
        tw.add_dir(paths.site_packages)
        tw.add_symlink(f"{paths.bin}/python", interpreter.executable)
        tw.add_symlink(f"{paths.bin}/python3", "python")
        tw.add_symlink(f"{paths.bin}/python{interpreter.version}", "python")
        cfg = (
            f"home = {posixpath.dirname(interpreter.executable)}\n"
            "include-system-site-packages = false\n"
            f"version = {interpreter.version}\n"
            f"executable = {interpreter.executable}\n"
        )
        tw.add_bytes(f"{venv}/pyvenv.cfg", cfg.encode())

    return fill
