"""Hashing whole files and streams for identity or verification: one owner, one buffer size, one comparison.

Every digest here is spelled ``"<algorithm>:<hex>"`` (the OCI form; ``hex_of`` drops the prefix where a lock or
pip wants bare hex). ``matches`` compares in constant time. The hashers that ride along bytes already in flight
(the tar writer, the compressor's diff_id/digest, the installer's RECORD checks) stay where those bytes are.
A leaf: it imports nothing of pyimage.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

__all__ = ["BUFFER", "copy_hashing", "file_digest", "hash_chunks", "hash_sized", "hash_stream", "hex_of", "matches"]

BUFFER = 1 << 20  # 1 MiB reads: past this, sha256 (not the syscalls) is the cost


def _hasher(algo: str) -> hashlib._Hash:
    try:
        return hashlib.new(algo)
    except ValueError:
        raise ValueError(f"unsupported hash algorithm {algo!r}") from None


def hash_chunks(chunks: Iterable[bytes], algo: str = "sha256", into: BinaryIO | None = None) -> str:
    """The digest of the concatenated ``chunks``, each written to ``into`` (when given) as it is hashed."""
    h = _hasher(algo)
    for chunk in chunks:
        h.update(chunk)
        if into is not None:
            into.write(chunk)
    return f"{algo}:{h.hexdigest()}"


def hash_sized(chunks: Iterable[bytes], algo: str = "sha256") -> tuple[str, int]:
    """``(digest, byte count)`` of the concatenated ``chunks``: a decompressed layer's diff_id and size in one pass."""
    h, size = _hasher(algo), 0
    for chunk in chunks:
        h.update(chunk)
        size += len(chunk)
    return f"{algo}:{h.hexdigest()}", size


def hash_stream(stream: BinaryIO, algo: str = "sha256", into: BinaryIO | None = None) -> str:
    """The digest of everything left in ``stream``, read in ``BUFFER`` pieces (copied to ``into`` when given)."""
    return hash_chunks(iter(lambda: stream.read(BUFFER), b""), algo, into)


def file_digest(path: Path | str, algo: str = "sha256") -> str:
    """The digest of the file at ``path``, streamed: wheels and layers can be gigabytes."""
    with open(path, "rb") as f:
        return hash_stream(f, algo)


def copy_hashing(source: Path | str, dest: Path | str, algo: str = "sha256") -> str:
    """Copies ``source`` to ``dest`` and returns the digest of the bytes written: one read, not two."""
    with open(source, "rb") as fin, open(dest, "wb") as fout:
        return hash_stream(fin, algo, fout)


def hex_of(digest: str) -> str:
    """The hex part of ``"<algorithm>:<hex>"`` (a bare hex string is returned as it is)."""
    return digest.rpartition(":")[2]


def matches(expected: str, actual: str) -> bool:
    """Whether two digests are the same, in constant time; case-insensitive hex, and ``"sha256:<hex>"`` matches
    a bare ``<hex>`` (the algorithm prefix is compared only when both carry one)."""
    e_algo, _, e_hex = expected.strip().lower().rpartition(":")
    a_algo, _, a_hex = actual.strip().lower().rpartition(":")
    if e_algo and a_algo and e_algo != a_algo:
        return False
    if not e_hex or not a_hex:
        return False
    return hmac.compare_digest(e_hex.encode("utf-8", "surrogateescape"), a_hex.encode("utf-8", "surrogateescape"))
