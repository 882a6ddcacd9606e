"""sdist builds with the target Python's own pip, old ones included (pyenv's 3.9 ships pip 23.0.1 without
``wheel``): always PEP 517 with build isolation, so a setup.py-only sdist builds; when the build environment
itself fails (a backend that cannot be imported, a build requirement no index has), the error says so."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pyimage.cache import Cache
from pyimage.errors import BuildError, ConfigError
from pyimage.oci.model import Platform
from pyimage.resolve.pip import host_python, resolve
from pyimage.resolve.target import Target
from wheels_fixture import make_sdist, make_wheel

TARGET = Target("3.9", Platform.parse("linux/amd64"), "glibc", "2.31")


@pytest.fixture
def links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A find-links directory next to the machine's pip configuration (its index serves setuptools and wheel)."""
    if host_python("3.9") is None:
        pytest.fail("needs a Python 3.9 (pyenv install 3.9)")
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", f"/opt/wheels {links}")
    return links


def _setup_py_only_sdist(links: Path, name: str, version: str) -> None:
    """An sdist as crcmod 1.7 is: PKG-INFO and setup.py, no pyproject.toml."""
    top = f"{name}-{version}"
    members = {
        "PKG-INFO": f"Metadata-Version: 1.1\nName: {name}\nVersion: {version}\n".encode(),
        "setup.py": f"from distutils.core import setup\nsetup(name={name!r}, version={version!r}, py_modules=['{name}'])\n".encode(),
        f"{name}.py": b"WORD = 'legacy'\n",
    }
    with tarfile.open(links / f"{top}.tar.gz", "w:gz") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(f"{top}/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _resolve(links: Path, tmp_path: Path, requirement: str) -> list:
    app = make_wheel(tmp_path / "app", "app", "1.0", requires=(requirement,))
    return resolve([str(app)], TARGET, Cache(tmp_path / "cache"))


def test_a_setup_py_only_sdist_builds_with_an_old_pip_that_lacks_wheel(links: Path, tmp_path: Path) -> None:
    _setup_py_only_sdist(links, "legacymod", "1.7")
    pins = {p.name: p for p in _resolve(links, tmp_path, "legacymod==1.7")}
    assert pins["legacymod"].filename == "legacymod-1.7.tar.gz" and pins["legacymod"].is_sdist


def test_a_backend_that_cannot_be_imported_is_named(links: Path, tmp_path: Path) -> None:
    make_sdist(links, "nobackend", "1.0", {"pyproject.toml": b'[build-system]\nrequires = []\nbuild-backend = "no_such_backend"\n'})
    with pytest.raises(BuildError) as err:
        _resolve(links, tmp_path, "nobackend==1.0")
    assert err.value.message.startswith("nobackend: no wheel for CPython 3.9")
    assert err.value.message.endswith("its build backend cannot be imported (no module named 'no_such_backend'; its pyproject.toml's [build-system] requires does not provide it)")
    assert "Traceback" not in err.value.message and "compiler" not in err.value.hint


def test_a_build_requirement_no_index_has_is_named(links: Path, tmp_path: Path) -> None:
    pyproject = b'[build-system]\nrequires = ["no-such-build-dep-xyz"]\nbuild-backend = "setuptools.build_meta"\n'
    make_sdist(links, "nobuilddep", "1.0", {"pyproject.toml": pyproject})
    with pytest.raises(BuildError) as err:
        _resolve(links, tmp_path, "nobuilddep==1.0")
    assert err.value.message.endswith("its build requirements could not be installed (no distribution found for no-such-build-dep-xyz)")
    assert "build requirements installable by pip" in err.value.hint


def _wheel_and_sdist(links: Path, name: str, version: str) -> None:
    """A package published both ways, as pyyaml is: a wheel (which pip prefers) and its sdist."""
    make_wheel(links, name, version, {f"{name}.py": b"FROM = 'wheel'\n"})
    pyproject = f'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n[project]\nname = "{name}"\nversion = "{version}"\n'
    make_sdist(links, name, version, {"pyproject.toml": pyproject.encode(), f"{name}.py": b"FROM = 'sdist'\n"})


def test_no_binary_from_pip_environment_pins_and_builds_the_sdist(links: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _wheel_and_sdist(links, "bothways", "1.0")
    _wheel_and_sdist(links, "wheelok", "1.0")
    monkeypatch.setenv("PIP_NO_BINARY", "bothways")
    pins = {p.name: p for p in _resolve(links, tmp_path, "bothways==1.0")}
    assert pins["bothways"].filename == "bothways-1.0.tar.gz" and pins["bothways"].is_sdist
    app = make_wheel(tmp_path / "app2", "app2", "1.0", requires=("bothways==1.0", "wheelok==1.0"))
    pins = {p.name: p for p in resolve([str(app)], TARGET, Cache(tmp_path / "cache2"))}
    assert pins["bothways"].is_sdist and pins["wheelok"].filename == "wheelok-1.0-py3-none-any.whl"


def test_no_binary_from_pip_conf_pins_the_sdist(links: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _wheel_and_sdist(links, "confmod", "2.0")
    conf = tmp_path / "pip.conf"
    conf.write_text("[install]\nno-binary = ConfMod\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    pins = {p.name: p for p in _resolve(links, tmp_path, "confmod")}
    assert pins["confmod"].filename == "confmod-2.0.tar.gz"


def test_no_binary_all_is_one_config_error_naming_where_it_is_set(links: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_BINARY", ":all:")
    with pytest.raises(ConfigError, match=r"^pip's configuration sets no-binary = :all: \(the PIP_NO_BINARY environment variable\)") as err:
        _resolve(links, tmp_path, "anything==1.0")
    assert "no-binary = pyyaml" in err.value.hint
