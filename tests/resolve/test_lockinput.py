"""Which lock a build installs from, and pyimage's own lock holding one entry per platform."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyimage.errors import ConfigError
from pyimage.oci.model import Platform
from pyimage.resolve.lock import locked_python, read_lock, write_lock
from pyimage.resolve.lockinput import detect, is_pyimage_lock, target_tags
from pyimage.resolve.pip import Pin
from pyimage.resolve.target import Target

AMD64 = Target("3.11", Platform("linux", "amd64"), "glibc", "2.36")
ARM64 = Target("3.11", Platform("linux", "arm64"), "glibc", "2.36")
SIX = Pin("six", "1.16.0", "six-1.16.0-py2.py3-none-any.whl", "https://files.example/six-1.16.0-py2.py3-none-any.whl", "a" * 64)
NUMPY_ARM = Pin("numpy", "2.1.0", "numpy-2.1.0-cp311-cp311-manylinux_2_17_aarch64.whl", "https://files.example/numpy-arm.whl", "b" * 64)

FOREIGN_PYLOCK = 'lock-version = "1.0"\ncreated-by = "uv"\n\n[[packages]]\nname = "six"\nversion = "1.16.0"\n'


def test_uv_lock_wins_over_a_pylock_toml_and_pyimages_own_lock_is_never_an_input(tmp_path: Path) -> None:
    assert detect(tmp_path, None) is None
    write_lock(tmp_path / "pylock.toml", [SIX], "inputs", AMD64)  # as an old pyimage would have named it
    assert is_pyimage_lock(tmp_path / "pylock.toml") and detect(tmp_path, None) is None
    (tmp_path / "pylock.toml").write_text(FOREIGN_PYLOCK)
    assert detect(tmp_path, None) == tmp_path / "pylock.toml"
    (tmp_path / "uv.lock").write_text("version = 1\n")
    assert detect(tmp_path, None) == tmp_path / "uv.lock"
    assert detect(tmp_path, "none") is None


def test_a_named_pylock_is_only_used_when_lock_input_names_it(tmp_path: Path) -> None:
    (tmp_path / "pylock.prod.toml").write_text(FOREIGN_PYLOCK)
    assert detect(tmp_path, None) is None
    assert detect(tmp_path, "pylock.prod.toml") == tmp_path / "pylock.prod.toml"


@pytest.mark.parametrize(
    ("configured", "message"),
    [("pylock.missing.toml", "lock-input pylock.missing.toml not found"), ("requirements.txt", "pyimage reads uv.lock, poetry.lock and PEP 751")],
)
def test_a_lock_input_that_is_not_there_or_not_a_lock_is_one_config_error(tmp_path: Path, configured: str, message: str) -> None:
    (tmp_path / "requirements.txt").write_text("six==1.16.0\n")
    with pytest.raises(ConfigError, match=message):
        detect(tmp_path, configured)


def test_pyimages_lock_keeps_each_platforms_entries_when_another_platform_is_written(tmp_path: Path) -> None:
    lock = tmp_path / "pylock.pyimage.toml"
    write_lock(lock, [SIX], "amd64-inputs", AMD64)
    write_lock(lock, [NUMPY_ARM, SIX], "arm64-inputs", ARM64)
    both = lock.read_bytes()
    write_lock(lock, [SIX], "amd64-inputs", AMD64)  # the same amd64 result again: not one byte changes
    assert lock.read_bytes() == both
    amd64, arm64 = read_lock(lock, AMD64), read_lock(lock, ARM64)
    assert amd64 is not None and arm64 is not None
    assert (amd64.inputs, [p.name for p in amd64.pins]) == ("amd64-inputs", ["six"])
    assert (arm64.inputs, [p.name for p in arm64.pins]) == ("arm64-inputs", ["numpy", "six"])
    assert read_lock(lock, Target("3.11", Platform("linux", "s390x"))) is None
    # each platform's Python, read before any base is loaded (the app wheel is built for it meanwhile)
    write_lock(lock, [SIX], "arm64-inputs", Target("3.12", Platform("linux", "arm64"), "glibc", "2.36"), declared="d")
    assert (locked_python(lock, AMD64.platform), locked_python(lock, ARM64.platform)) == ("3.11", "3.12")
    assert locked_python(lock, Platform("linux", "s390x")) is None and locked_python(tmp_path / "none.toml", AMD64.platform) is None
    assert read_lock(lock, AMD64).declared == "" and read_lock(lock, Target("3.12", Platform("linux", "arm64"))).declared == "d"  # type: ignore[union-attr]


def test_the_target_accepts_manylinux_and_pure_wheels_but_not_another_architecture_or_libc() -> None:
    accepted = {str(t) for t in target_tags(AMD64)}
    assert {"cp311-cp311-manylinux_2_17_x86_64", "cp311-abi3-manylinux_2_28_x86_64", "py3-none-any"} <= accepted
    assert not accepted & {"cp311-cp311-manylinux_2_17_aarch64", "cp311-cp311-musllinux_1_2_x86_64", "cp312-cp312-manylinux_2_17_x86_64"}


def test_pyimages_lock_records_first_party_packages_as_relative_directories_and_does_not_pin_them(tmp_path: Path) -> None:
    lock = tmp_path / "pylock.pyimage.toml"
    write_lock(lock, [SIX], "amd64-inputs", AMD64, local=[("shared-lib", "../../libs/shared")])
    write_lock(lock, [SIX], "arm64-inputs", ARM64)  # another platform's write keeps amd64's directory entry
    text = lock.read_text()
    assert text.count('directory = { path = "../../libs/shared" }') == 1 and str(tmp_path) not in text
    amd64 = read_lock(lock, AMD64)
    assert amd64 is not None and [p.name for p in amd64.pins] == ["six"]
    with pytest.raises(ConfigError, match="not a path relative to"):
        write_lock(lock, [SIX], "amd64-inputs", AMD64, local=[("shared-lib", "/home/me/libs/shared")])
