"""Base images: where they come from (``scratch``, ``oci:``, ``docker-archive:``, ``rootfs:``, a registry
reference) and what is inside that the build needs to know (its Python interpreters, its libc).

The facts come from the base's own files, scanned once per set of layer diff_ids and cached.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from pyimage.cache import Cache, LayerRecord
from pyimage.errors import BuildError, ConfigError
from pyimage.layers.compress import BlobWriter, decompress_stream, file_sha256, media_type_for
from pyimage.oci.dockerarchive import read_docker_archive
from pyimage.oci.layout import read_layout, split_layout_ref
from pyimage.oci.model import MEDIA_OCI_LAYER_GZIP, Descriptor, Image, Layer, Platform

if TYPE_CHECKING:
    from pyimage.publish import RegistrySettings

__all__ = ["BaseFacts", "load_base", "scan_base", "scratch_image"]

_PYTHON_RE = re.compile(r"^(?:.*/)?bin/python(3\.\d+)$")
_GLIBC_RE = re.compile(rb"GLIBC_2\.(\d+)")
_SCAN_FORMAT = 2


@dataclass(frozen=True)
class BaseFacts:
    """``pythons`` maps in-image executable paths (``/usr/bin/python3.11``) to their ``X.Y`` version."""

    pythons: dict[str, str]
    libc: str  # "glibc" | "musl" | ""
    libc_version: str  # "2.36", "1.2", or ""
    machine: str = ""  # "x86_64", "aarch64", … from where libc lives (lib/x86_64-linux-gnu, ld-musl-aarch64)


def scratch_image(platform: Platform) -> Image:
    config = {
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    }
    if platform.variant:
        config["variant"] = platform.variant
    return Image(config=config, layers=())


def _rootfs_image(path: Path, platform: Platform, cache: Cache, compression: str) -> Image:
    """A plain root-filesystem tarball as a one-layer image; compressed once, cached by the file's sha256."""
    if not path.is_file():
        raise ConfigError(f"base rootfs:{path}: no such file", "build one, e.g. `mmdebstrap --include=python3 bookworm rootfs.tar`")
    st = path.stat()
    stamp = f"rootfs-{_stat_key(path, st)}"
    sha = cache.get_meta(stamp)
    if sha is None:
        sha = file_sha256(path)
        cache.put_meta(stamp, sha)
    with open(path, "rb") as f:
        magic = f.read(4)
    key = f"rootfs-{sha.partition(':')[2]}-{compression}"
    record = cache.get_layer(key)
    cached = record is not None
    if record is None:
        with cache.lock(key):
            record = cache.get_layer(key) or _compress_rootfs(path, magic, cache, compression, key)
    image = scratch_image(platform)
    layer = Layer("base", Descriptor(record.media_type, record.digest, record.size), record.diff_id, cache.blob_path(record.digest), cached=cached, history=f"rootfs {path.name}", uncompressed_size=record.uncompressed_size or None)
    config = dict(image.config)
    config["rootfs"] = {"type": "layers", "diff_ids": [record.diff_id]}
    config["history"] = [{"created": "1970-01-01T00:00:00Z", "created_by": f"rootfs:{path.name}"}]
    return Image(config=config, layers=(layer,))


def _docker_archive_image(path: Path, cache: Cache) -> Image:
    """A ``docker save`` archive as a base; its layers are extracted into the cache once per archive version."""
    if not path.is_file():
        raise ConfigError(f"base docker-archive:{path}: no such file", "make one with `docker save` or `skopeo copy … docker-archive:FILE`")
    key = f"docker-archive-{_stat_key(path, path.stat())}"
    known = cache.get_meta(key)
    if known is not None:
        layers = [Layer("base", Descriptor(l["media_type"], l["digest"], l["size"]), l["diff_id"], cache.blob_path(l["digest"]), cached=True, history="base") for l in known["layers"]]
        if all(cache.valid_blob(l.digest, l.size) for l in layers):
            return Image(config=known["config"], layers=tuple(layers))
    image = read_docker_archive(path, cache.root / "blobs" / "sha256")
    for layer in image.layers:
        cache.mark_verified(layer.digest)  # hashed while extracted
    layers_json = [{"media_type": l.descriptor.media_type, "digest": l.digest, "size": l.size, "diff_id": l.diff_id} for l in image.layers]
    cache.put_meta(key, {"config": dict(image.config), "layers": layers_json})
    return image


def _stat_key(path: Path, st: os.stat_result) -> str:
    """Names a file's current version (path, size, mtime, inode) so its sha256 is computed once, not per build."""
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}".encode()).hexdigest()[:32]


def _compress_rootfs(path: Path, magic: bytes, cache: Cache, compression: str, key: str) -> LayerRecord:
    if magic[:2] == b"\x1f\x8b":  # already gzip: ship the bytes as they are
        h = hashlib.sha256()
        raw_size = 0
        for data in decompress_stream(path, MEDIA_OCI_LAYER_GZIP):
            h.update(data)
            raw_size += len(data)
        tmp = cache.tmp_path(".blob")
        shutil.copyfile(path, tmp)
        digest = file_sha256(tmp)
        cache.commit_blob(tmp, digest)
        record = LayerRecord(digest, "sha256:" + h.hexdigest(), path.stat().st_size, MEDIA_OCI_LAYER_GZIP, raw_size)
    else:
        tmp = cache.tmp_path(".blob")
        with BlobWriter(tmp, compression) as sink, open(path, "rb") as f:
            while data := f.read(1 << 20):
                sink.write(data)
            result = sink.close()
        cache.commit_blob(tmp, result.digest)
        record = LayerRecord(result.digest, result.diff_id, result.size, media_type_for(compression), result.uncompressed_size)
    cache.put_layer(key, record)
    return record


def load_base(source: str, platform: Platform, cache: Cache, compression: str = "gzip", registry: RegistrySettings | None = None) -> tuple[Image, str]:
    """The base image named by ``source`` and a description for reports (with a pinned digest when pulled)."""
    source = source.strip()
    if source in ("", "scratch"):
        return scratch_image(platform), "scratch"
    kind, sep, rest = source.partition(":")
    if sep and kind == "oci":
        directory, tag = split_layout_ref(rest, default_tag="")
        return read_layout(directory, tag or None, platform), source
    if sep and kind == "docker-archive":
        return _docker_archive_image(Path(rest), cache), source
    if sep and kind == "rootfs":
        return _rootfs_image(Path(rest).expanduser(), platform, cache, compression), source
    from pyimage.oci.pull import pull_image
    from pyimage.oci.reference import parse_reference
    from pyimage.publish import RegistrySettings

    ref = parse_reference(source)
    factory = (registry or RegistrySettings()).client_factory()
    pulled = pull_image(
        ref,
        platform,
        cache.root / "blobs",
        client_factory=factory,
        # the cache's stat stamps decide reuse (no re-hash of every base blob per build); a blob fetch_blob just
        # verified is stamped as such
        is_valid=lambda path, desc: cache.valid_blob(desc.digest, desc.size) is not None,
        progress=lambda digest, status, _size: cache.mark_verified(digest) if status == "downloaded" else None,
    )
    layers = tuple(Layer("base", l.descriptor, l.diff_id, l.blob, cached=True, history="base") for l in pulled.layers)
    return Image(config=pulled.config, layers=layers), str(pulled.pinned)


class _IterReader(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._buf = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n


def scan_base(image: Image, cache: Cache) -> BaseFacts:
    """Finds the base's Python interpreters and libc by reading its layers' tar headers (and libc.so.6)."""
    key = "scan-" + hashlib.sha256(f"{_SCAN_FORMAT}|{[l.diff_id for l in image.layers]}".encode()).hexdigest()[:32]
    hit = cache.get_meta(key)
    if hit is not None:
        return BaseFacts(hit["pythons"], hit["libc"], hit["libc_version"], hit.get("machine", ""))
    present: dict[str, str] = {}
    libc, libc_version, machine = "", "", ""
    for layer in image.layers:
        stream = io.BufferedReader(_IterReader(decompress_stream(layer.blob, layer.descriptor.media_type)), 1 << 20)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    name = (member.name[2:] if member.name.startswith("./") else member.name).lstrip("/")
                    base = name.rsplit("/", 1)[-1]
                    if base.startswith(".wh."):
                        gone = name[: -len(base)] + base[4:]
                        present.pop(gone, None)
                        continue
                    m = _PYTHON_RE.match(name)
                    if m and (member.isfile() or member.issym() or member.islnk()):
                        present[name] = m.group(1)
                    if base.startswith("ld-musl-"):
                        libc, libc_version = "musl", "1.2"
                        machine = base[len("ld-musl-"):].split(".so")[0]
                    if base == "libc.so.6" and member.isfile():
                        data = tar.extractfile(member).read()  # type: ignore[union-attr]
                        found = [int(v) for v in _GLIBC_RE.findall(data)]
                        if found:
                            libc, libc_version = "glibc", f"2.{max(found)}"
                        triplet = name.rsplit("/", 2)[-2] if name.count("/") >= 1 else ""
                        if triplet.endswith("-linux-gnu"):
                            machine = triplet.split("-")[0]
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BuildError(f"base layer {layer.digest[:19]}… is not a readable tar ({exc})", "check the base image") from exc
    facts = BaseFacts({"/" + k: v for k, v in sorted(present.items())}, libc, libc_version, machine)
    cache.put_meta(key, {"pythons": facts.pythons, "libc": facts.libc, "libc_version": facts.libc_version, "machine": machine})
    return facts
