"""The one owner of whole-file and stream hashing (pyimage/hashing.py), on real files."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from pyimage.hashing import BUFFER, copy_hashing, file_digest, hash_chunks, hash_sized, hash_stream, hex_of, matches


def _payload() -> bytes:
    return bytes(range(256)) * (BUFFER // 256 * 2 + 3)  # a little over two buffers: the loop's edges are crossed


def test_file_digest_is_the_sha256_of_the_file_in_oci_form(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(_payload())
    assert file_digest(path) == "sha256:" + hashlib.sha256(_payload()).hexdigest()


def test_file_digest_takes_another_algorithm(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(_payload())
    assert file_digest(path, "sha512") == "sha512:" + hashlib.sha512(_payload()).hexdigest()
    assert file_digest(str(path), "md5") == "md5:" + hashlib.md5(_payload()).hexdigest()  # noqa: S324 (identity, not security)


def test_an_unknown_algorithm_is_named(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported hash algorithm 'sha999'"):
        file_digest(path, "sha999")


def test_an_empty_file_has_the_empty_digest(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert file_digest(path) == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_copy_hashing_copies_the_bytes_and_returns_their_digest(tmp_path: Path) -> None:
    source, dest = tmp_path / "in.whl", tmp_path / "out.whl"
    source.write_bytes(_payload())
    assert copy_hashing(source, dest) == file_digest(source)
    assert dest.read_bytes() == _payload()
    assert copy_hashing(source, tmp_path / "again", "sha384") == "sha384:" + hashlib.sha384(_payload()).hexdigest()


def test_hash_stream_reads_what_is_left_and_can_copy_it() -> None:
    stream = io.BytesIO(b"header" + _payload())
    stream.read(6)
    out = io.BytesIO()
    assert hash_stream(stream, into=out) == "sha256:" + hashlib.sha256(_payload()).hexdigest()
    assert out.getvalue() == _payload()


def test_hash_chunks_is_the_digest_of_the_concatenation() -> None:
    assert hash_chunks([b"ab", b"", b"cd"], "sha1") == "sha1:" + hashlib.sha1(b"abcd").hexdigest()  # noqa: S324


def test_hash_sized_counts_the_bytes_it_hashed(tmp_path: Path) -> None:
    path = tmp_path / "layer.tar.gz"
    import gzip

    path.write_bytes(gzip.compress(_payload()))
    from pyimage.layers.compress import decompress_stream
    from pyimage.oci.model import MEDIA_OCI_LAYER_GZIP

    assert hash_sized(decompress_stream(path, MEDIA_OCI_LAYER_GZIP), "sha512") == ("sha512:" + hashlib.sha512(_payload()).hexdigest(), len(_payload()))


def test_matches_a_digest_with_or_without_its_prefix_and_in_any_case(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"payload")
    got = file_digest(path)
    assert matches(got, got)
    assert matches(hex_of(got), got)
    assert matches(got.upper().replace("SHA256", "sha256"), hex_of(got))


def test_a_changed_file_does_not_match(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"payload")
    before = file_digest(path)
    path.write_bytes(b"payloaD")
    assert not matches(before, file_digest(path))


def test_a_different_algorithm_or_an_empty_digest_does_not_match() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    assert not matches("sha256:" + sha, "sha512:" + sha)
    assert not matches("", "")
    assert not matches("sha256:", "sha256:")
    assert not matches("sha256:é", "sha256:e")  # not hex: compared as bytes, no TypeError


def test_hex_of_drops_the_algorithm() -> None:
    assert hex_of("sha256:abc") == "abc"
    assert hex_of("abc") == "abc"
