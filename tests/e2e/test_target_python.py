"""The target's Python, not the host's, decides: Requires-Python is checked against the image's interpreter
before anything is built, and a compiled app is built by an interpreter of the image's version."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from support.runc import run_image

from .conftest import Pyimage, copy_example
from .test_features import relocatable_python  # noqa: F401 (a fixture)

pytestmark = pytest.mark.e2e


def test_requires_python_above_the_base_python_is_refused_before_any_build(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('requires-python = ">=3.9"', 'requires-python = ">=3.12"'))
    cache = tmp_path / "cache"
    done = Pyimage(cache, pyimage.base).run("build", "-o", f"oci:{tmp_path / 'out'}", project=project, check=False)
    assert done.returncode == 2, done.stderr
    error, hint = done.stderr.strip().splitlines()[-2:]
    assert error.startswith("error: ") and "requires Python >=3.12, but the target is Python 3.11" in error
    assert hint.startswith("hint: ") and ">=3.12" in hint
    assert not any((cache / "envs").iterdir()) and not (cache / "appwheels").exists()  # nothing was built
    assert not (tmp_path / "out").exists()


_C_SOURCE = r"""
#include <Python.h>
static PyObject *built_for(PyObject *self, PyObject *args) {
    return PyUnicode_FromFormat("%d.%d", PY_MAJOR_VERSION, PY_MINOR_VERSION);
}
static PyMethodDef methods[] = {{"built_for", built_for, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speed", NULL, -1, methods};
PyMODINIT_FUNC PyInit__speed(void) { return PyModule_Create(&module); }
"""


def test_a_c_extension_app_is_built_with_the_targets_python_and_runs(pyimage: Pyimage, relocatable_python: Path, tmp_path: Path) -> None:
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" != "3.12", "this test needs a host Python other than the image's 3.12"
    project = tmp_path / "cext"
    (project / "src" / "cext").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "cext"\nversion = "1.0"\n\n[project.scripts]\ncext = "cext:main"\n\n'
        '[tool.setuptools.packages.find]\nwhere = ["src"]\n'
    )
    (project / "setup.py").write_text('from setuptools import Extension, setup\nsetup(ext_modules=[Extension("cext._speed", ["src/cext/_speed.c"])])\n')
    (project / "src" / "cext" / "_speed.c").write_text(_C_SOURCE)
    (project / "src" / "cext" / "__init__.py").write_text(
        "import sys\nfrom cext._speed import built_for\n\n\ndef main():\n    print('extension for', built_for(), 'running on', sys.version.split()[0])\n"
    )
    report = pyimage.build(project, tmp_path / "layout", "c", "--set", f"interpreter={relocatable_python}")
    (app,) = [l for l in report["layers"] if l["name"] == "app"]
    assert app["packages"] == ["cext==1.0"]
    out = run_image(tmp_path / "layout", "c").stdout
    assert "extension for 3.12 running on 3.12" in out
    assert not (project / "build").exists() and not list(project.rglob("*.egg-info"))  # no setuptools debris

