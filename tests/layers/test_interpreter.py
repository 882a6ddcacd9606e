"""A standalone CPython as ``interpreter``: a tree whose python finds its libpython only where it was built
(pyenv's absolute RUNPATH) is refused before any layer work; a relocatable one ($ORIGIN) is taken."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from pyimage.errors import ConfigError
from pyimage.layers.interpreter import standalone_interpreter

PYENV = Path.home() / ".pyenv" / "versions" / "3.12.1"


@pytest.fixture
def pyenv_python() -> Path:
    if not (PYENV / "lib" / "libpython3.12.so.1.0").is_file():
        pytest.skip("needs pyenv's shared CPython 3.12.1 (/root/.pyenv/versions/3.12.1)")
    return PYENV


def _small_tree(source: Path, dest: Path, rpath: str | None) -> Path:
    """The interpreter and its libpython copied from ``source`` (the parts the check reads), its RUNPATH set."""
    (dest / "bin").mkdir(parents=True)
    (dest / "lib" / "python3.12").mkdir(parents=True)
    shutil.copy2(source / "bin" / "python3.12", dest / "bin" / "python3.12")
    (dest / "bin" / "python3").symlink_to("python3.12")
    shutil.copy2(source / "lib" / "libpython3.12.so.1.0", dest / "lib" / "libpython3.12.so.1.0")
    if rpath is not None:
        if shutil.which("patchelf") is None:
            pytest.fail("needs patchelf (apt-get install patchelf)")
        subprocess.run(["patchelf", "--set-rpath", rpath, str(dest / "bin" / "python3.12")], check=True)
    return dest


def _archive(tree: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w") as tar:
        tar.add(tree, arcname="python")
    return dest


def test_pyenv_python_with_an_absolute_runpath_is_refused_naming_file_library_and_runpath(pyenv_python: Path) -> None:
    with pytest.raises(ConfigError, match=r"bin/python3\.12 needs libpython3\.12\.so\.1\.0, which it looks for in RUNPATH /root/\.pyenv/versions/3\.12\.1/lib") as err:
        standalone_interpreter(str(pyenv_python), None, None)  # type: ignore[arg-type]  # a local tree needs no cache
    assert "\n" not in err.value.message
    assert "python-build-standalone" in (err.value.hint or "") and 'LD_LIBRARY_PATH = "/opt/python/lib"' in (err.value.hint or "")


def test_ld_library_path_in_the_env_that_finds_libpython_is_accepted(pyenv_python: Path) -> None:
    interp = standalone_interpreter(str(pyenv_python), None, None, {"LD_LIBRARY_PATH": "/usr/lib:/opt/python/lib"})  # type: ignore[arg-type]
    assert (interp.executable, interp.version) == ("/opt/python/bin/python3.12", "3.12")
    with pytest.raises(ConfigError, match="needs libpython3.12.so.1.0"):
        standalone_interpreter(str(pyenv_python), None, None, {"LD_LIBRARY_PATH": "/usr/lib"})  # type: ignore[arg-type]


def test_an_origin_relative_runpath_is_relocatable(pyenv_python: Path, tmp_path: Path) -> None:
    tree = _small_tree(pyenv_python, tmp_path / "reloc", "$ORIGIN/../lib")
    assert standalone_interpreter(str(tree), None, None).executable == "/opt/python/bin/python3.12"  # type: ignore[arg-type]
    archive = _archive(tree, tmp_path / "reloc.tar")
    assert standalone_interpreter(str(archive), None, None).version == "3.12"  # type: ignore[arg-type]


def test_the_check_reads_archives_and_trees_without_any_search_path(pyenv_python: Path, tmp_path: Path) -> None:
    archive = _archive(_small_tree(pyenv_python, tmp_path / "copy", None), tmp_path / "pyenv.tar")
    with pytest.raises(ConfigError, match=r"RUNPATH /root/\.pyenv/versions/3\.12\.1/lib, a directory of the machine it was built on"):
        standalone_interpreter(str(archive), None, None)  # type: ignore[arg-type]
    bare = _small_tree(pyenv_python, tmp_path / "bare", "")
    with pytest.raises(ConfigError, match=r"bin/python3\.12 needs libpython3\.12\.so\.1\.0, but no RUNPATH/RPATH leads to it under /opt/python"):
        standalone_interpreter(str(bare), None, None)  # type: ignore[arg-type]
