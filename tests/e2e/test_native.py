"""Native libraries end to end: an sdist-only package with a C extension linking a library this machine has
(libyaml, from libyaml-dev) and the test base lacks is one error at build time; with a base that has it the image
builds and the extension runs in runc; ``allow-missing-libraries`` lets the build through."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.rootfs import debian_rootfs
from support.runc import run_image
from wheels_fixture import make_sdist

from .conftest import Pyimage, copy_example

pytestmark = pytest.mark.e2e

_SETUP = b"""from setuptools import Extension, setup
setup(name="yamlver", version="1.0", ext_modules=[Extension("yamlver", ["yamlver.c"], libraries=["yaml"])])
"""
_SOURCE = b"""#include <Python.h>
const char *yaml_get_version_string(void);  /* libyaml's, declared here so no header is needed */
static PyObject *version(PyObject *self, PyObject *args) { return PyUnicode_FromString(yaml_get_version_string()); }
static PyMethodDef methods[] = {{"version", version, METH_NOARGS, "libyaml's version"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "yamlver", NULL, -1, methods};
PyMODINIT_FUNC PyInit_yamlver(void) { return PyModule_Create(&module); }
"""


@pytest.fixture()
def yaml_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if not Path("/usr/lib/x86_64-linux-gnu/libyaml.so").exists():
        pytest.fail("needs libyaml-dev on this machine (apt-get install libyaml-dev)")
    links = tmp_path / "links"
    make_sdist(links, "yamlver", "1.0", {"setup.py": _SETUP, "yamlver.c": _SOURCE})
    project = copy_example("hello-cli", tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"attrs>=23"', '"attrs>=23", "yamlver==1.0"'))
    monkeypatch.setenv("PIP_FIND_LINKS", f"/opt/wheels {links}")
    return project


def test_an_extension_needing_a_library_the_base_lacks_is_one_error(pyimage: Pyimage, yaml_project: Path, tmp_path: Path) -> None:
    own = Pyimage(tmp_path / "cache", pyimage.base)  # cold: the check waits for the layer pass, which reads the wheels
    said = []
    for _ in range(2):  # then warm: the facts that pass recorded answer before any layer work
        done = own.run("build", "-o", f"oci:{tmp_path / 'out'}", project=yaml_project, check=False)
        assert done.returncode == 1, done.stderr
        error, hint = done.stderr.strip().splitlines()[-2:]
        assert error.startswith("error: yamlver 1.0 (built here from its sdist"), error
        assert "yamlver.cpython-311-x86_64-linux-gnu.so needs libyaml-0.so.2" in error and "base rootfs:" in error
        assert "apt-get install libyaml-0-2" in hint and 'allow-missing-libraries = ["libyaml-0.so.2"]' in hint
        assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()
        said.append((error, hint, "layer site-packages: built" in done.stderr, "building yamlver 1.0 from its sdist (it has no wheel for CPython 3.11" in done.stderr))
    assert said[0][:2] == said[1][:2] and [s[2] for s in said] == [True, False]
    assert [s[3] for s in said] == [True, False]  # the sdist build is said (once: then the cache has its wheel)
    assert pyimage.run("plan", project=yaml_project, check=False).returncode == 1  # plan says what build will do
    assert pyimage.run("lock", project=yaml_project).returncode == 0  # versions are locked whatever the base holds


def test_with_a_base_that_has_the_library_it_builds_and_runs(pyimage: Pyimage, yaml_project: Path, tmp_path: Path, test_cache_dir: Path) -> None:
    base = debian_rootfs(test_cache_dir, packages=("python3", "libyaml-0-2"))
    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'out'}:yaml", "--base", f"rootfs:{base}", project=yaml_project, base=False)
    assert done.returncode == 0
    out = run_image(tmp_path / "out", "yaml", args=["/opt/venv/bin/python", "-c", "import yamlver; print('libyaml', yamlver.version())"]).stdout
    assert out.strip().startswith("libyaml 0.2.")


def test_allow_missing_libraries_lets_the_build_through(pyimage: Pyimage, yaml_project: Path, tmp_path: Path) -> None:
    pyproject = yaml_project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + 'allow-missing-libraries = ["libyaml-0.so.*"]\n')
    pyimage.build(yaml_project, tmp_path / "out", "allowed")
    # the image is what was asked for: the library really is missing, as the loader says
    done = run_image(tmp_path / "out", "allowed", args=["/opt/venv/bin/python", "-c", "import yamlver"], check=False)
    assert done.returncode != 0 and "libyaml-0.so.2: cannot open shared object file" in done.stderr
