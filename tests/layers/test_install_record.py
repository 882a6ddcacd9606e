"""RECORD is the wheel's promise of what it holds: every member listed, every hash checked with its own
algorithm (sha256 or better), in the same single pass that writes the tar."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from pyimage.errors import BuildError
from pyimage.layers.install import InstallPaths, install_wheel, wheel_file_map
from pyimage.layers.tar import TarWriter

PATHS = InstallPaths("/opt/venv", "3.11")
MODULE = b"VALUE = 42\n"


def digest(algo: str, data: bytes) -> str:
    return f"{algo}=" + base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).decode().rstrip("=")


def wheel_with_record(directory: Path, record: dict[str, str] | None, extra: dict[str, bytes] | None = None, *, tamper: bytes | None = None) -> Path:
    """A wheel holding demo/mod.py (+ ``extra``) whose RECORD maps member -> hash text exactly as given (None: no RECORD).

    Members missing from ``record`` are not listed; ``tamper`` replaces demo/mod.py's bytes after hashing."""
    members = {
        "demo/mod.py": MODULE,
        "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
        "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        **(extra or {}),
    }
    if record is not None:
        lines = "".join(f"{name},{h},{len(members.get(name, b''))}\n" for name, h in record.items())
        members["demo-1.0.dist-info/RECORD"] = (lines + "demo-1.0.dist-info/RECORD,,\n").encode()
    if tamper is not None:
        members["demo/mod.py"] = tamper
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def full_record(algo: str = "sha256", extra: dict[str, bytes] | None = None) -> dict[str, str]:
    wheel_files = {
        "demo/mod.py": MODULE,
        "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
        "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        **(extra or {}),
    }
    return {name: digest(algo, data) for name, data in wheel_files.items()}


def install(wheel: Path) -> None:
    install_wheel(wheel, TarWriter(io.BytesIO()), PATHS)


@pytest.mark.parametrize("algo", ["sha256", "sha384", "sha512", "blake2b"])
def test_a_record_hashed_with_sha256_or_better_installs(tmp_path: Path, algo: str) -> None:
    install(wheel_with_record(tmp_path, full_record(algo)))


@pytest.mark.parametrize("algo", ["sha384", "sha512", "sha256"])
def test_each_hash_is_checked_with_its_own_algorithm(tmp_path: Path, algo: str) -> None:
    wheel = wheel_with_record(tmp_path, full_record(algo), tamper=b"VALUE = 41\n")
    with pytest.raises(BuildError, match=f"demo/mod.py does not match the {algo} in the wheel's RECORD"):
        install(wheel)


@pytest.mark.parametrize("algo", ["md5", "sha1", "sha224"])
def test_weak_record_hashes_are_refused(tmp_path: Path, algo: str) -> None:
    wheel = wheel_with_record(tmp_path, full_record(algo))
    with pytest.raises(BuildError, match=f"hashed with '{algo}' in RECORD; the wheel spec requires sha256 or better"):
        install(wheel)


def test_a_member_missing_from_record_is_refused(tmp_path: Path) -> None:
    record = full_record()
    wheel = wheel_with_record(tmp_path, record, {"demo/extra.py": b"import os\n"})
    with pytest.raises(BuildError, match="demo/extra.py is not listed in the wheel's RECORD"):
        install(wheel)


def test_a_member_listed_without_a_hash_is_refused(tmp_path: Path) -> None:
    record = full_record()
    record["demo/mod.py"] = ""
    with pytest.raises(BuildError, match="demo/mod.py has no hash in the wheel's RECORD"):
        install(wheel_with_record(tmp_path, record))


def test_record_signatures_need_not_be_listed(tmp_path: Path) -> None:
    extra = {"demo-1.0.dist-info/RECORD.jws": b"{}", "demo-1.0.dist-info/RECORD.p7s": b"sig"}
    install(wheel_with_record(tmp_path, full_record(), extra))


def test_a_wheel_without_record_is_one_build_error(tmp_path: Path) -> None:
    wheel = wheel_with_record(tmp_path, None)
    with pytest.raises(BuildError, match="demo-1.0-py3-none-any.whl: malformed wheel: .*RECORD"):
        install(wheel)
    with pytest.raises(BuildError, match="demo-1.0-py3-none-any.whl: malformed wheel: .*RECORD"):
        wheel_file_map(wheel, PATHS)


def test_a_rewritten_script_is_checked_against_its_record_hash_in_any_algorithm(tmp_path: Path) -> None:
    script = b"#!python\nprint('hi')\n"
    extra = {"demo-1.0.data/scripts/demo-tool": script}
    install(wheel_with_record(tmp_path / "ok", full_record("sha512", extra), extra))
    record = full_record("sha512", extra)
    record["demo-1.0.data/scripts/demo-tool"] = digest("sha512", b"#!python\nprint('other')\n")
    with pytest.raises(BuildError, match="sha512"):
        install(wheel_with_record(tmp_path / "bad", record, extra))


# -- big files: their RECORD hash is checked on a thread of its own, still before the layer is committed ------
BIG = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MiB: several copy chunks, above _RecordChecks.OFFLOAD_MIN


def test_a_big_file_is_checked_against_record_off_the_writer_thread(tmp_path: Path) -> None:
    from pyimage.layers.install import _RecordChecks

    assert len(BIG) >= 4 * _RecordChecks.OFFLOAD_MIN
    wheel = wheel_with_record(tmp_path, full_record(extra={"demo/big.bin": BIG}), {"demo/big.bin": BIG})
    out = io.BytesIO()
    install_wheel(wheel, TarWriter(out), PATHS)
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(out.getvalue() + b"\0" * 1024)) as tar:
        site = "opt/venv/lib/python3.11/site-packages"
        assert tar.extractfile(f"{site}/demo/big.bin").read() == BIG  # type: ignore[union-attr]
        record = tar.extractfile(f"{site}/demo-1.0.dist-info/RECORD").read().decode()  # type: ignore[union-attr]
    assert f"demo/big.bin,{digest('sha256', BIG)},{len(BIG)}" in record.splitlines()


def test_a_tampered_big_file_fails_the_layer_and_no_blob_is_committed(tmp_path: Path) -> None:
    from pyimage.cache import Cache
    from pyimage.layers.build import LayerContext, build_layer
    from pyimage.layers.plan import LayerSpec
    from pyimage.wheels import read_wheel

    tampered = BIG[:-1] + b"!"
    wheel = wheel_with_record(tmp_path / "w", full_record(extra={"demo/big.bin": BIG}), {"demo/big.bin": tampered})
    with pytest.raises(BuildError, match="demo/big.bin does not match the sha256 in the wheel's RECORD"):
        install(wheel)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(BuildError, match="demo/big.bin does not match the sha256"):
        build_layer(LayerSpec("heavy:demo", "heavy", (read_wheel(wheel),)), LayerContext(cache=cache, paths=PATHS))
    assert list((cache.root / "blobs" / "sha256").iterdir()) == []
    assert list((cache.root / "layers").iterdir()) == []
