"""A requirements file with --hash pins, as the real ``uv pip compile --generate-hashes`` writes it, is a lock:
exactly its pins, the file whose hash it lists, pip's all-or-nothing hash rule."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyimage.cache import Cache
from pyimage.errors import BuildError, ConfigError
from pyimage.oci.model import Platform
from pyimage.resolve import hashedreqs
from pyimage.resolve.target import Target
from wheels_fixture import make_wheel

AMD64 = Target("3.11", Platform("linux", "amd64"), "glibc", "2.36")
ARM64 = Target("3.11", Platform("linux", "arm64"), "glibc", "2.36")


def compile_hashed(links: Path, tmp_path: Path, requirements: str) -> Path:
    """``uv pip compile --generate-hashes`` (the real uv) against the find-links directory alone."""
    (tmp_path / "requirements.in").write_text(requirements)
    out = tmp_path / "requirements.txt"
    subprocess.run(
        [sys.executable, "-m", "uv", "pip", "compile", "--generate-hashes", "--universal", "--no-index", "--find-links", str(links),
         "--no-config", "-q", str(tmp_path / "requirements.in"), "-o", str(out)],
        check=True, capture_output=True, text=True,
    )
    return out


def pins(path: Path, target: Target = AMD64) -> dict[str, str]:
    cache = Cache(path.parent / "cache")
    got = hashedreqs.locked_pins(path, target, cache, lambda _: None)
    for pin in got:
        assert cache.cached_wheel(pin.sha256, pin.filename) is not None and pin.url == ""  # fetched, checked; no local path kept
    return {p.name: p.version for p in got}


def test_a_file_uv_compiled_with_hashes_installs_exactly_its_pins(links: Path, tmp_path: Path) -> None:
    make_wheel(links, "winonly", "1.0")
    path = compile_hashed(links, tmp_path, "left\nnewpy==1.0 ; python_version >= '3.9'\nwinonly ; sys_platform == 'win32'\n")
    text = path.read_text()
    assert "--hash=sha256:" in text and "six==1.16.0" in text and "winonly==1.0 ; sys_platform == 'win32'" in text
    assert hashedreqs.is_hashed(text)
    assert pins(path) == {"left": "1.0", "newpy": "1.0", "six": "1.16.0"}  # winonly is for Windows


def test_the_wheel_whose_hash_is_listed_and_ranks_first_is_taken(links: Path, tmp_path: Path) -> None:
    path = compile_hashed(links, tmp_path, "six==1.17.0\n")
    native = links / "six-1.17.0-cp311-cp311-manylinux_2_17_x86_64.whl"
    shutil.copyfile(links / "six-1.17.0-py3-none-any.whl", native)  # same bytes: its hash is listed too
    cache = Cache(tmp_path / "cache")
    (pin,) = hashedreqs.locked_pins(path, AMD64, cache, lambda _: None)
    assert pin.filename == native.name
    (pin,) = hashedreqs.locked_pins(path, ARM64, cache, lambda _: None)
    assert pin.filename == "six-1.17.0-py3-none-any.whl"

    path.write_text("six==1.17.0 --hash=sha256:" + "0" * 64 + "\n")  # a hash no file on the index has
    with pytest.raises(BuildError, match=r"^six 1.17.0: no file on .*/links has a sha256 that requirements.txt line 1 lists"):
        hashedreqs.locked_pins(path, AMD64, cache, lambda _: None)
    path.write_text(f"six==1.17.0 --hash=sha256:{pin.sha256}\n")
    native.unlink()
    (links / "six-1.17.0-py3-none-any.whl").rename(links / "six-1.17.0-cp311-cp311-manylinux_2_17_x86_64.whl")  # x86_64 only
    with pytest.raises(BuildError, match=r"^six 1.17.0: requirements.txt line 1 lists no wheel for CPython 3.11 on linux/arm64"):
        hashedreqs.locked_pins(path, ARM64, cache, lambda _: None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("six==1.16.0 --hash=sha256:" + "a" * 64 + "\nnewpy==1.0\n", r"requirements.txt line 2: newpy has no --hash=sha256:…, and once one requirement has a hash every one must"),
        ("six>=1.16 --hash=sha256:" + "a" * 64 + "\n", r"requirements.txt line 1: 'six>=1.16' is not pinned with =="),
        ("-r other.txt\nsix==1.16.0 --hash=sha256:" + "a" * 64 + "\n", r"requirements.txt line 1: -r is not supported"),
        ("six==1.16.0 --hash=sha256:abc\n", r"'sha256:abc' is not a sha256 digest"),
    ],
)
def test_a_partly_hashed_or_unpinned_file_is_one_error_naming_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text(text)
    assert hashedreqs.is_hashed(text)
    with pytest.raises(ConfigError, match=message) as caught:
        hashedreqs.parse(path)
    assert "--generate-hashes" in caught.value.hint


def test_a_file_without_hashes_is_not_a_lock_and_continuations_and_comments_are_read(tmp_path: Path) -> None:
    assert not hashedreqs.is_hashed("six==1.16.0\n# --hash=sha256:" + "a" * 64 + "\n")
    path = tmp_path / "requirements.txt"
    path.write_text("# header\n--index-url https://example.invalid/simple\nsix==1.16.0 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64 + "\n    # via app\n")
    parsed = hashedreqs.parse(path)
    assert parsed.index_url == "https://example.invalid/simple"
    assert [(r.name, r.version, r.hashes, r.line) for r in parsed.requirements] == [("six", "1.16.0", ("a" * 64, "b" * 64), 3)]


def test_an_arbitrary_equality_pin_is_compared_as_text() -> None:
    from pyimage.resolve.hashedreqs import _same_version

    assert _same_version("1.0.0", "1.0") and not _same_version("1.0.1", "1.0")
    assert _same_version("abc", "abc") and not _same_version("abc", "abd")  # `===abc`: no valid version, no crash


def test_environment_variables_in_index_lines_are_expanded_as_pip_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyimage.resolve.hashedreqs import parse

    monkeypatch.setenv("INDEX_TOKEN", "t0k3n")
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    (tmp_path / "requirements.txt").write_text(
        "--index-url https://__token__:${INDEX_TOKEN}@pypi.example.org/simple\n--extra-index-url https://${NOT_SET_HERE}@other.example.org/simple\n"
        "six==1.16.0 --hash=sha256:" + "a" * 64 + "\n"
    )
    parsed = parse(tmp_path / "requirements.txt")
    assert parsed.index_url == "https://__token__:t0k3n@pypi.example.org/simple"
    assert parsed.extra_index_urls == ("https://${NOT_SET_HERE}@other.example.org/simple",)


def test_a_place_named_by_pip_conf_and_by_the_file_is_asked_and_listed_once(links: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pip-compile copies pip.conf's --extra-index-url and --find-links into the file: the trial's error listed
    every index twice."""
    simple, extra = tmp_path / "simple", tmp_path / "extra"
    for root in (simple, extra):
        (root / "six").mkdir(parents=True)
        (root / "six" / "index.html").write_text("<html><body></body></html>\n")  # PEP 503: the project, no files
    monkeypatch.delenv("PIP_NO_INDEX")
    monkeypatch.setenv("PIP_INDEX_URL", simple.as_uri())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", extra.as_uri())
    path = tmp_path / "requirements.txt"
    path.write_text(f"--extra-index-url {extra.as_uri()}/\n--find-links {links}\nsix==1.17.0 --hash=sha256:{'0' * 64}\n")
    listed = f"{simple.as_uri()}, {extra.as_uri()}, {links}"
    with pytest.raises(BuildError, match=rf"^six 1.17.0: no file on {re.escape(listed)} has a sha256 that requirements.txt line 3 lists"):
        hashedreqs.locked_pins(path, AMD64, Cache(tmp_path / "cache"), lambda _: None)
