"""A project's uv index declarations: read and checked, turned into the uv flags uv does not take from the
pyproject by itself, and part of pyimage's lock key only when there are some."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyimage.errors import ConfigError
from pyimage.oci.model import Platform
from pyimage.resolve import uvsources
from pyimage.resolve.lock import inputs_key
from pyimage.resolve.target import Target

TORCH_CPU = """
[project]
name = "app"
version = "1"
dependencies = ["torch"]

[[tool.uv.index]]
name = "pytorch-cpu"
url = "https://download.pytorch.org/whl/cpu"
explicit = true

[[tool.uv.index]]
name = "mirror"
url = "https://mirror.example/simple"

[tool.uv.sources]
torch = [{ index = "pytorch-cpu", marker = "sys_platform == 'linux'" }]
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(text)
    return tmp_path


def test_explicit_indexes_are_left_to_uv_and_the_others_become_index_flags(tmp_path: Path) -> None:
    sources = uvsources.read(write(tmp_path, TORCH_CPU))
    assert sources.declared and sources.pinned == (("torch", "pytorch-cpu"),)
    assert sources.uv_args() == ["--index", "mirror=https://mirror.example/simple"]  # pytorch-cpu: read by uv from the pyproject
    assert sources.describe() == "[tool.uv.sources] takes torch from the index 'pytorch-cpu'"
    default = uvsources.read(write(tmp_path, TORCH_CPU.replace('name = "mirror"', 'name = "mirror"\ndefault = true') + '\n[tool.uv]\nindex-strategy = "first-index"\n'))
    assert default.uv_args() == ["--default-index", "https://mirror.example/simple", "--index-strategy", "first-index"]


def test_a_project_without_declarations_changes_nothing(tmp_path: Path) -> None:
    sources = uvsources.read(write(tmp_path, '[project]\nname = "app"\nversion = "1"\n\n[tool.uv.sources]\nlib = { path = "../lib" }\n'))
    assert not sources.declared and sources.uv_args() == [] and sources.fingerprint() == ""
    target = Target("3.11", Platform("linux", "amd64"))
    assert inputs_key(["six"], [], "", target) == inputs_key(["six"], [], "", target, sources.fingerprint())  # existing locks stay valid


def test_changing_an_index_makes_pyimages_lock_stale(tmp_path: Path) -> None:
    target = Target("3.11", Platform("linux", "amd64"))
    before = uvsources.read(write(tmp_path, TORCH_CPU)).fingerprint()
    after = uvsources.read(write(tmp_path, TORCH_CPU.replace("whl/cpu", "whl/cu121"))).fingerprint()
    assert before and before != after
    assert inputs_key(["torch"], [], "", target, before) != inputs_key(["torch"], [], "", target, after)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[tool.uv.sources]\ntorch = { index = "cpu" }\n', r"\[tool.uv.sources\] torch takes it from the index 'cpu', which no \[\[tool.uv.index\]\] declares"),
        ('[[tool.uv.index]]\nname = "cpu"\n', r"\[\[tool.uv.index\]\] #1 has no url"),
        ('[[tool.uv.index]]\nname = "a b"\nurl = "https://x"\n', r"has the name 'a b'"),
        ('[tool.uv]\nindex-strategy = "best"\n', r"\[tool.uv\] index-strategy is 'best'"),
    ],
)
def test_a_declaration_uv_would_refuse_is_one_config_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        uvsources.read(write(tmp_path, '[project]\nname = "app"\nversion = "1"\n\n' + text))


def test_pip_refuses_with_the_reason_it_was_chosen(tmp_path: Path) -> None:
    sources = uvsources.read(write(tmp_path, TORCH_CPU))
    error = uvsources.refuse_pip(sources, "uv cannot target CPython 3.11 on linux/s390x")
    assert str(error) == "[tool.uv.sources] takes torch from the index 'pytorch-cpu', which pip cannot honour (pip resolves here: uv cannot target CPython 3.11 on linux/s390x)"
