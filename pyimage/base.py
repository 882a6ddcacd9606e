"""Base images: where they come from (``scratch``, ``oci:``, ``docker-archive:``, ``rootfs:``, a registry
reference) and what is inside that the build needs to know (its Python interpreters, its libc).

Bases are untrusted. Every layer blob enters the cache through one door: copied in while hashed (``oci:``,
``docker-archive:``) or fetched and hashed (registries), then inflated once to check the diff_id its config
claims; both results are remembered by digest, so later builds trust them after a ``stat`` (the cache's
stat-stamp rule). The facts come from the base's own files, scanned once per set of verified diff_ids.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import io
import os
import posixpath
import re
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Iterator

from pyimage.cache import Cache, LayerRecord, Meta, count, sha256_digest, string, strings
from pyimage.errors import BuildError, ConfigError, PyimageError, RegistryError
from pyimage.hashing import copy_hashing, file_digest, hash_sized, matches
from pyimage.layers.compress import BlobWriter, decompress_stream, encoder_tag, media_type_for
from pyimage.oci.dockerarchive import read_docker_archive
from pyimage.oci.layout import open_blob, read_layout, split_layout_ref
from pyimage.oci.sniff import sniff, use_instead
from pyimage.oci.model import MEDIA_OCI_LAYER, MEDIA_OCI_LAYER_GZIP, Descriptor, Image, Layer, Platform, parse_digest

if TYPE_CHECKING:
    from pyimage.publish import RegistrySettings

__all__ = ["BaseFacts", "load_base", "scan_base", "scratch_image"]

_PYTHON_RE = re.compile(r"^(?:.*/)?bin/python(3\.\d+)$")
_GLIBC_RE = re.compile(rb"GLIBC_2\.(\d+)")
_GLIBC_RELEASE_RE = re.compile(rb"GNU C Library [^\0\n]{0,100}? release version (2\.\d+)")
_SCAN_FORMAT = 6  # 3: /etc/passwd and /etc/group; 4: library sonames, libc.so.6 read through its symlink; 5: executables and links (entrypoint check); 6: the root's names (`python -m`)
# The loader's default directories (and Debian's multiarch ones): a file there is found by its name; so is one in
# a directory /etc/ld.so.conf (and the files it includes, /etc/ld.so.conf.d/*.conf) names.
_LIBRARY_RE = re.compile(r"^(?:usr/(?:local/)?)?lib(?:64)?/(?:[a-z0-9_]+-linux-[a-z0-9_]+/)?([^/]*\.so(?:\.[^/]*)?)$")
_SHARED_OBJECT_RE = re.compile(r"^[^/]*\.so(?:\.[^/]*)?$")
_LD_CONF_RE = re.compile(r"^etc/ld\.so\.conf(?:\.d/[^/]+)?$")
_MAX_LD_CONF_READ = 64 << 10
_LIBC_FILE_RE = re.compile(r"^libc(?:\.so\.6|-2\.\d+\.so)$")  # libc.so.6, or what it links to before glibc 2.34
_MAX_LINK_HOPS = 40  # as Linux's own limit on symlinks followed in one lookup
_MAX_ACCOUNTS_READ = 1 << 20
_MAX_LIBC_READ = 64 << 20  # libc.so.6 is ~2 MB; a bigger one is not read into memory


@dataclass(frozen=True)
class BaseFacts:
    """``pythons`` maps in-image executable paths (``/usr/bin/python3.11``) to their ``X.Y`` version."""

    pythons: dict[str, str]
    libc: str  # "glibc" | "musl" | ""
    libc_version: str  # "2.36", "1.2", or ""
    machine: str = ""  # "x86_64", "aarch64", … from where libc lives (lib/x86_64-linux-gnu, ld-musl-aarch64)
    passwd: str = ""  # /etc/passwd and /etc/group as the base leaves them ("" when it has none)
    group: str = ""
    libraries: tuple[str, ...] = ()  # file names in the loader's directories (libpq.so.5, libz.so.1, …), sorted
    executables: frozenset[str] = frozenset()  # regular files with an x bit, in-image paths ("/usr/bin/sh")
    links: dict[str, str] = field(default_factory=dict)  # symlink -> target, so /bin/sh finds /usr/bin/sh (usrmerge)
    root: frozenset[str] | None = None  # the names at / ("usr", "app.py"): where `python -m` looks with no WorkingDir; None: not scanned

    def resolve(self, path: str) -> str:
        """``path`` with the base's symlinks followed (symlinked directories such as ``/bin -> usr/bin`` too), the
        way the kernel would, at most 40 hops."""
        return "/" + _resolve_link(path, self._root_links)

    @functools.cached_property
    def _root_links(self) -> dict[str, str]:  # ``links`` as the scan's own resolver keys them (no leading /)
        return {name.lstrip("/"): target.lstrip("/") for name, target in self.links.items()}

    def has_program(self, path: str) -> bool:
        """True if the absolute ``path`` is (or links to) an executable file of the base."""
        return self.resolve(path) in self.executables

    def programs_in(self, directory: str) -> set[str]:
        """The names of the executables ``directory`` holds, as a PATH lookup there would find them."""
        real = self.resolve(directory)
        names = {posixpath.basename(p) for p in self.executables if posixpath.dirname(p) == real}
        names |= {posixpath.basename(p) for p in self.links if posixpath.dirname(p) == real and self.has_program(p)}
        return names



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


def _rootfs_image(path: Path, platform: Platform, cache: Cache, compression: str, remote: Callable[[str], bool] | None = None) -> Image:
    """A plain root-filesystem tarball as a one-layer image; compressed once, cached by the file's sha256."""
    if path.is_dir():
        raise ConfigError(f"base rootfs:{path}: a directory, not a root filesystem tar", use_instead(sniff(path), str(path)))
    if not path.is_file():
        raise ConfigError(f"base rootfs:{path}: no such file", "build one, e.g. `mmdebstrap --include=python3 bookworm rootfs.tar`")
    stamp = _stat_key(path, path.stat())
    with open(path, "rb") as f:
        magic = f.read(4) + f.read(508)
    if magic[:2] != b"\x1f\x8b" and not _tar_header(magic):  # before hashing or compressing any of it
        raise ConfigError(f"base rootfs:{path}: not a tar archive (nor a gzip'd one)", "give a root filesystem as a tar, e.g. `mmdebstrap --include=python3 bookworm rootfs.tar`")
    magic = magic[:4]
    sha = cache.get_meta(ROOTFS_SHA, *stamp)
    record: LayerRecord | None = None
    if sha is None and magic[:2] != b"\x1f\x8b":
        # A plain tar not met at this path and stat: its sha256 is the layer's diff_id, so it is hashed while it is
        # compressed, one read instead of two (122 MB: 0.1 s). Met before under another path, it compresses to
        # the same bytes again (the encoder is deterministic).
        _refuse_image_archive(path, magic)
        with cache.lock("rootfs-" + hashlib.sha256("\0".join(stamp).encode()).hexdigest()[:32]):
            sha = cache.get_meta(ROOTFS_SHA, *stamp)  # another build may have ingested it meanwhile
            if sha is None:
                record = _ingest_rootfs(path, magic, cache, compression, None)
                sha = record.diff_id
                cache.put_layer(_rootfs_key(sha, compression), record)
                cache.put_meta(ROOTFS_SHA, sha, *stamp)
    if sha is None:  # a gzip'd rootfs: its file digest is not its diff_id
        sha = file_digest(path)
        cache.put_meta(ROOTFS_SHA, sha, *stamp)
    key = _rootfs_key(sha, compression)
    cached = False
    if record is None:  # not ingested just now: the cache may hold it
        record = cache.get_layer(key)
        cached = record is not None
    in_registry = False
    if record is None and remote is not None:  # compressed before, blob pruned, and the push targets hold it
        known = cache.layer_record(key)
        if known is not None and cache.get_meta(SCAN, known.diff_id) is not None and remote(known.digest):
            record, cached, in_registry = known, True, True
    if record is None:
        _refuse_image_archive(path, magic)
        with cache.lock(key):
            record = cache.get_layer(key) or _ingest_rootfs(path, magic, cache, compression, key)
    image = scratch_image(platform)
    layer = Layer("base", Descriptor(record.media_type, record.digest, record.size), record.diff_id, cache.blob_path(record.digest), cached=cached, history=f"rootfs {path.name}", uncompressed_size=record.uncompressed_size or None, remote=in_registry)
    config = dict(image.config)
    config["rootfs"] = {"type": "layers", "diff_ids": [record.diff_id]}
    config["history"] = [{"created": "1970-01-01T00:00:00Z", "created_by": f"rootfs:{path.name}"}]
    return Image(config=config, layers=(layer,))


_IMAGE_ARCHIVE_RE = re.compile(r"^(?:manifest\.json|oci-layout|index\.json|repositories|blobs/sha256/.*|[0-9a-f]{64}(?:\.json|/.*))$")


def _rootfs_key(sha: str, compression: str) -> str:
    return f"rootfs-{sha.partition(':')[2]}-{encoder_tag(compression)}"


def _refuse_image_archive(path: Path, magic: bytes) -> None:
    """A ``docker save`` archive (or an OCI layout in a tar) given as ``rootfs:`` would be one layer of image
    metadata and blobs, with no Python found in it: said as what it is. Its first members tell (``docker save``
    writes ``blobs/sha256/`` first since Docker 25, ``<id>/layer.tar`` before); a gzip'd file is read less far."""
    try:
        with tarfile.open(path, "r|*") as tar:
            for n, member in enumerate(tar):
                name = member.name[2:] if member.name.startswith("./") else member.name
                if _IMAGE_ARCHIVE_RE.match(name.rstrip("/") + ("/" if member.isdir() else "")):
                    raise ConfigError(
                        f"base rootfs:{path}: this is an image archive (it holds {name.rstrip('/')}), not a root filesystem tar",
                        f"use base = \"docker-archive:{path}\" for what `docker save` writes (or unpack an OCI layout and use oci:DIR)",
                    )
                if n >= (3 if magic[:2] == b"\x1f\x8b" else 16):
                    return
    except (tarfile.TarError, OSError, EOFError):
        return  # not a tar at all: the layer's own reading says so


def _tar_header(block: bytes) -> bool:
    """Whether ``block`` (a file's first 512 bytes) is a tar header: its checksum holds."""
    import tarfile

    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _docker_archive_image(path: Path, cache: Cache, verify_layers: bool = True) -> Image:
    """A ``docker save`` archive as a base; its layers are hashed into the cache once per archive version."""
    if not path.is_file():
        kind = sniff(path) if path.exists() else None
        raise ConfigError(f"base docker-archive:{path}: " + ("a directory, not a `docker save` archive" if kind else "no such file"), use_instead(kind, str(path)) if kind else "make one with `docker save` or `skopeo copy … docker-archive:FILE`")
    return _archive_image(("docker-archive", *_stat_key(path, path.stat())), path, cache, f"base docker-archive:{path}")


def _daemon_image(name: str, cache: Cache) -> Image:
    """An image of the local Docker Engine as a base (Jib's ``docker://``): exported once per image ID through the
    Engine API (``docker save``) and read as an untrusted archive; a later build with the same ID reads nothing."""
    from pyimage.oci.engine import docker_image_id, save_docker

    if not name:
        raise ConfigError("base docker-daemon:: no image named", "use docker-daemon:NAME:TAG, e.g. docker-daemon:python:3.12-slim")
    image_id = docker_image_id(name)
    key = ("docker-daemon", image_id)
    tmp = cache.tmp_path("-docker-save.tar")
    try:
        known = _archive_record(key, cache, f"base docker-daemon:{name}")
        if known is not None:
            return known
        with open(tmp, "wb") as out:
            save_docker(name, out)
        return _archive_image(key, tmp, cache, f"base docker-daemon:{name}")
    finally:
        tmp.unlink(missing_ok=True)


def _archive_record(key: tuple[str, ...], cache: Cache, where: str) -> Image | None:
    """The base an earlier build read from the same archive (``key``), when all its blobs are still cached."""
    known = cache.get_meta(ARCHIVE, *key)
    if known is None:
        return None
    config, descriptors = known
    layers = [Layer("base", d, diff_id, cache.blob_path(d.digest), cached=True, history="base") for d, diff_id in descriptors]
    if all(cache.valid_blob(l.digest, l.size) for l in layers):
        return Image(config=config, layers=tuple(_verified_diff_id(l, cache, where) for l in layers))
    return None


def _archive_image(key: tuple[str, ...], path: Path, cache: Cache, where: str) -> Image:
    """A ``docker save`` archive's image, its layers hashed into the cache and recorded under ``key``."""
    known = _archive_record(key, cache, where)
    if known is not None:
        return known
    image = read_docker_archive(path, lambda src, size, claimed, what: cache.ingest_blob(src, claimed, size, what))
    layers = tuple(_verified_diff_id(l, cache, where) for l in image.layers)
    cache.put_meta(ARCHIVE, (dict(image.config), tuple((l.descriptor, l.diff_id) for l in layers)), *key)
    return Image(config=image.config, layers=layers)


def _layout_image(directory: Path, tag: str | None, platform: Platform, cache: Cache, verify_layers: bool) -> Image:
    """An image from an OCI layout; each layer is copied into the cache through ``ingest_blob`` and verified."""
    image = read_layout(directory, tag, platform)
    if not verify_layers:
        return image
    where = f"base oci:{directory}"
    layers = []
    for layer in image.layers:
        if cache.valid_blob(layer.digest, layer.size) is None:
            with open_blob(directory, layer.digest) as src:
                cache.ingest_blob(src, layer.digest, layer.size, where)
        layers.append(_verified_diff_id(replace(layer, blob=cache.blob_path(layer.digest)), cache, where))
    return Image(config=image.config, layers=tuple(layers), annotations=image.annotations)


def _verified_diff_id(layer: Layer, cache: Cache, where: str) -> Layer:
    """``layer`` once its blob (in the cache, digest verified) inflates to the diff_id its config claims.

    The inflated hash is computed once per blob and remembered under the blob's digest, so this costs a JSON
    read on later builds; a mismatch (damaged, truncated or forged base) is a BuildError, never an image.
    """
    try:
        algo, _ = parse_digest(layer.diff_id)
    except ValueError as exc:
        raise BuildError(f"{where}: base layer {layer.digest[:19]}…: {exc}", "the base is damaged or tampered with") from None
    known = cache.get_meta(DIFF_ID, algo, layer.digest)
    if known is None:
        try:
            diff_id, size = hash_sized(decompress_stream(layer.blob, layer.descriptor.media_type), algo)
        except Exception as exc:  # isal, zlib and zstd each raise their own error type for a corrupt stream
            raise BuildError(
                f"{where}: base layer {layer.digest[:19]}… cannot be decompressed ({type(exc).__name__}: {str(exc)[:120]})",
                "the base is damaged or tampered with; re-export or re-pull it",
            ) from None
        known = (diff_id, size)
        cache.put_meta(DIFF_ID, known, algo, layer.digest)
    diff_id, size = known
    if not matches(layer.diff_id, diff_id):
        raise BuildError(
            f"{where}: base layer {layer.digest[:19]}… unpacks to diff_id {diff_id[:19]}…, not the {layer.diff_id[:19]}… its config claims",
            "the base is damaged or tampered with; re-export or re-pull it",
        )
    return replace(layer, uncompressed_size=size)


def _stat_key(path: Path, st: os.stat_result) -> tuple[str, ...]:
    """Names a file's current version (path, size, mtime, inode) so its sha256 is computed once, not per build."""
    return str(path.resolve()), str(st.st_size), str(st.st_mtime_ns), str(st.st_ino)


# -- what the cache keeps of bases (cache.META_KINDS) -----------------------------------------------------
def _archived(value: Any) -> tuple[dict[str, Any], tuple[tuple[Descriptor, str], ...]]:
    config = value["config"]
    if not isinstance(config, dict):
        raise TypeError("not an image config")
    if not isinstance(value["layers"], list):
        raise TypeError("not a list of layers")
    layers = []
    for l in value["layers"]:
        media_type, digest, size, diff_id = string(l["media_type"]), string(l["digest"]), count(l["size"]), string(l["diff_id"])
        parse_digest(digest)  # a path is made of it
        layers.append((Descriptor(media_type, digest, size), diff_id))
    return config, tuple(layers)


def _dump_archived(value: tuple[dict[str, Any], tuple[tuple[Descriptor, str], ...]]) -> dict[str, Any]:
    config, layers = value
    return {"config": config, "layers": [{"media_type": d.media_type, "digest": d.digest, "size": d.size, "diff_id": diff_id} for d, diff_id in layers]}


def _diff_id(value: Any) -> tuple[str, int]:
    return string(value["diff_id"]), count(value["size"])


def _facts(hit: Any) -> BaseFacts:
    pythons, links = hit["pythons"], hit["links"]
    if not all(isinstance(m, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()) for m in (pythons, links)):
        raise TypeError("not a map of paths")
    return BaseFacts(
        pythons, string(hit["libc"]), string(hit["libc_version"]), string(hit["machine"]), string(hit["passwd"]), string(hit["group"]),
        strings(hit["libraries"]), frozenset(strings(hit["executables"])), links, frozenset(strings(hit["root"])),
    )


def _dump_facts(facts: BaseFacts) -> dict[str, Any]:
    return {
        "pythons": facts.pythons, "libc": facts.libc, "libc_version": facts.libc_version, "machine": facts.machine, "passwd": facts.passwd,
        "group": facts.group, "libraries": list(facts.libraries), "executables": sorted(facts.executables), "links": facts.links,
        "root": sorted(facts.root or ()),
    }


ROOTFS_SHA: Meta[str] = Meta("rootfs-sha", sha256_digest)  # by the file's path and stat
ARCHIVE: Meta[tuple[dict[str, Any], tuple[tuple[Descriptor, str], ...]]] = Meta("archive", _archived, _dump_archived)
DIFF_ID: Meta[tuple[str, int]] = Meta("diff-id", _diff_id, lambda v: {"diff_id": v[0], "size": v[1]})  # by algorithm and blob digest
SCAN: Meta[BaseFacts] = Meta("scan", _facts, _dump_facts, version=_SCAN_FORMAT)  # by the layers' diff_ids


_UNCOMPRESSED = (MEDIA_OCI_LAYER, "application/vnd.docker.image.rootfs.diff.tar")


def _compressed(image: Image, cache: Cache, compression: str) -> Image:
    """``image`` with its uncompressed layers (``docker save`` writes them so, as does a docker-daemon export)
    compressed once, like every layer pyimage writes: an image pushed from it uploads the compressed bytes (2.5×
    fewer for a Debian base). Done once per layer digest and compression (a cache record), so a rebuild reads
    nothing; the diff_id is the layer's own, unchanged. Compressed layers are kept as they are."""
    if compression == "none" or not any(l.descriptor.media_type in _UNCOMPRESSED for l in image.layers):
        return image  # with `compression = "none"` plain layers are what the image wants
    layers = []
    for layer in image.layers:
        if layer.descriptor.media_type not in _UNCOMPRESSED:
            layers.append(layer)
            continue
        key = f"compressed-{layer.digest.replace(':', '-')}-{encoder_tag(compression)}"
        record = cache.get_layer(key) or cache.built_blob(media_type_for(compression), layer.diff_id)  # a layer built here
        if record is None:
            with cache.lock(key):
                record = cache.get_layer(key) or _compress_rootfs(layer.blob, b"", cache, compression, key)
        if record.diff_id != layer.diff_id:  # the blob was verified against its diff_id: compressing cannot change it
            raise BuildError(f"base layer {layer.digest[:19]}… compressed to a different tar", "run `pyimage cache verify`, then build again")
        layers.append(replace(layer, descriptor=Descriptor(record.media_type, record.digest, record.size), blob=cache.blob_path(record.digest), uncompressed_size=record.uncompressed_size or layer.uncompressed_size))
    return replace(image, layers=tuple(layers))


def _ingest_rootfs(path: Path, magic: bytes, cache: Cache, compression: str, key: str | None) -> LayerRecord:
    """A plain rootfs tar compressed as the base layer and, on a thread of its own meanwhile, scanned from the
    same file (``scan_base`` then finds its facts recorded): the scan's tar parsing no longer waits for the
    compression, nor inflates the blob it wrote (a bookworm rootfs: 0.35 s + 0.38 s in a row before)."""
    if magic[:2] == b"\x1f\x8b":
        return _compress_rootfs(path, magic, cache, compression, key)
    import threading

    scanned: list[BaseFacts] = []

    def scan() -> None:
        try:
            scanned.append(_scan([(open(path, "rb"), "rootfs")]))
        except Exception:  # noqa: BLE001 - scan_base reads it again and says what is wrong
            pass

    thread = threading.Thread(target=scan, name="pyimage-scan", daemon=True)
    thread.start()
    try:
        record = _compress_rootfs(path, magic, cache, compression, key)
    finally:
        thread.join()
    if scanned:
        cache.put_meta(SCAN, scanned[0], record.diff_id)
    return record


def _compress_rootfs(path: Path, magic: bytes, cache: Cache, compression: str, key: str | None) -> LayerRecord:
    """The base layer's blob into the cache, and its record under ``key`` (the caller records it when None)."""
    tmp = cache.tmp_path(".blob")
    try:
        if magic[:2] == b"\x1f\x8b":  # already gzip: ship the bytes as they are
            try:
                diff_id, raw_size = hash_sized(decompress_stream(path, MEDIA_OCI_LAYER_GZIP))
            except OSError:
                raise
            except Exception as exc:  # isal/zlib's own error types for a corrupt stream
                raise BuildError(f"base rootfs:{path}: not a readable gzip ({str(exc)[:120]})", "give an uncompressed or gzip'd root filesystem tar") from None
            digest = copy_hashing(path, tmp)  # one read: the copy is hashed as it is written
            cache.commit_blob(tmp, digest)
            record = LayerRecord(digest, diff_id, path.stat().st_size, MEDIA_OCI_LAYER_GZIP, raw_size)
        else:
            with BlobWriter(tmp, compression) as sink, open(path, "rb") as f:
                while data := f.read(1 << 20):
                    sink.write(data)
                result = sink.close()
            cache.commit_blob(tmp, result.digest)
            record = LayerRecord(result.digest, result.diff_id, result.size, media_type_for(compression), result.uncompressed_size)
    finally:
        tmp.unlink(missing_ok=True)
    if key is not None:
        cache.put_layer(key, record)
    return record


def load_base(
    source: str,
    platform: Platform,
    cache: Cache,
    compression: str = "gzip",
    registry: RegistrySettings | None = None,
    *,
    verify_layers: bool = True,
    remote: Callable[[str], bool] | None = None,
    any_platform: bool = False,
) -> tuple[Image, str]:
    """The base image named by ``source`` and a description for reports (with a pinned digest when pulled).

    Its layers are in the cache, their digests and diff_ids verified; ``verify_layers=False`` (for ``inspect``)
    reads only the manifest and config of a local layout. ``remote`` (push-only builds): a registry or rootfs
    base layer this cache verified and scanned before, whose blob was pruned, is not fetched (or compressed)
    again when the push targets hold it; the layer is marked ``remote``. ``any_platform`` (``inspect`` without
    ``--platform``): a registry reference naming one image is read whatever its platform.
    """
    source = source.strip()
    if source in ("", "scratch"):
        return scratch_image(platform), "scratch"
    kind, sep, rest = source.partition(":")
    if sep and kind == "oci":
        directory, tag = split_layout_ref(rest, default_tag="")
        if not str(directory):
            raise ConfigError(f"base {source!r}: no directory given", "use oci:DIR[:TAG]")
        image = _layout_image(directory, tag or None, platform, cache, verify_layers)
        return (_compressed(image, cache, compression) if verify_layers else image), source
    if sep and kind == "docker-archive":
        image = _docker_archive_image(Path(rest), cache, verify_layers)
        return (_compressed(image, cache, compression) if verify_layers else image), source
    if sep and kind == "docker-daemon":
        return _compressed(_daemon_image(rest, cache), cache, compression), source
    if sep and kind == "rootfs":
        return _rootfs_image(Path(rest).expanduser(), platform, cache, compression, remote), source
    from pyimage.oci.pull import pull_image
    from pyimage.oci.reference import parse_reference
    from pyimage.publish import RegistrySettings

    ref = parse_reference(source)
    factory = (registry or RegistrySettings()).client_factory()
    try:
        pulled = pull_image(
            ref,
            platform,
            cache.blobs_dir,
            client_factory=factory,
            # the cache's stat stamps decide reuse (no re-hash of every base blob per build); a blob fetch_blob just
            # verified is stamped as such
            is_valid=lambda path, desc: cache.valid_blob(desc.digest, desc.size) is not None,
            progress=lambda digest, status, _size: cache.mark_verified(digest) if status == "downloaded" else None,
            skip=None if remote is None else lambda desc: cache.get_meta(DIFF_ID, "sha256", desc.digest) is not None and remote(desc.digest),
            any_platform=any_platform,
        )
    except RegistryError as exc:
        if _engine_holds(source):  # `docker images` lists it: the user meant that one (a new-user trial's `inspect app:dev`)
            raise RegistryError(exc.message, f"the local Docker Engine holds {source}: name it docker-daemon:{source}") from None
        raise
    where = f"base {ref}"
    layers = tuple(
        _verified_diff_id(Layer("base", l.descriptor, l.diff_id, l.blob, cached=True, history="base", remote=remote is not None and cache.valid_blob(l.digest, l.size) is None), cache, where)
        for l in pulled.layers
    )
    if any(l.remote for l in layers) and cache.get_meta(SCAN, *(l.diff_id for l in layers)) is None:
        raise BuildError(f"{where}: some of its layers are neither on this machine nor scanned before", "build again with an output such as -o oci:DIR, which downloads them")
    return Image(config=pulled.config, layers=layers), str(pulled.pinned)


def _engine_holds(name: str) -> bool:
    """Whether the local Docker Engine (found as the docker CLI finds it) holds an image called ``name``."""
    from pyimage.oci.engine import docker_image_id

    if "@" in name or "://" in name:
        return False
    try:
        docker_image_id(name)
    except (PyimageError, OSError):
        return False
    return True


class _IterReader(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._buf = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:  # a writable buffer (memoryview or bytearray)
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n


def scan_base(image: Image, cache: Cache) -> BaseFacts:
    """Finds the base's Python interpreters, libc and shared libraries by reading its layers' tar headers (and
    the libc file, through its symlink where libc.so.6 is one, as on bullseye)."""
    key = tuple(l.diff_id for l in image.layers)
    hit = cache.get_meta(SCAN, *key)
    if hit is not None:
        return hit
    streams = ((io.BufferedReader(_IterReader(decompress_stream(layer.blob, layer.descriptor.media_type)), 1 << 20), layer.digest) for layer in image.layers)
    facts = _scan(streams)
    cache.put_meta(SCAN, facts, *key)
    return facts


def _scan(layers: Iterable[tuple[BinaryIO, str]]) -> BaseFacts:
    """The facts of a root filesystem made of ``layers`` (uncompressed tar streams, lowest first, each with the
    name an error gives it), read from their tar headers and the few files named above."""
    present: dict[str, str] = {}
    accounts: dict[str, str] = {}
    libraries: dict[str, str] = {}  # path -> file name of shared objects anywhere, for whiteouts to remove
    ld_conf: dict[str, str] = {}  # etc/ld.so.conf and the files it may include -> their text
    links: dict[str, str] = {}  # symlinks and hard links: path -> target path (absolute in the image, no leading /)
    libc_files: dict[str, str] = {}  # path -> "2.36" for regular files named like libc
    libc_names: list[str] = []  # paths of libc.so.6, the last one last
    executables: set[str] = set()  # regular files with an x bit (and hard links to them), no leading /
    root: set[str] = set()  # first components of every path
    musl, machine = False, ""
    for stream, digest in layers:
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    name = (member.name[2:] if member.name.startswith("./") else member.name).lstrip("/")
                    base = name.rsplit("/", 1)[-1]
                    if base.startswith(".wh."):
                        gone = name[: -len(base)] + base[4:]
                        root.discard(gone)  # a name at / (an opaque whiteout there, ".wh..wh..opq", keeps the rest: a superset)
                        for known in (present, accounts, libraries, links, libc_files, ld_conf):
                            known.pop(gone, None)
                        executables.difference_update([p for p in executables if p == gone or p.startswith(gone + "/")])  # a directory's whiteout takes its tree
                        continue
                    if name:
                        root.add(name.split("/", 1)[0])
                    for known in (libraries, links, libc_files, ld_conf):  # a later layer's entry replaces the path
                        known.pop(name, None)
                    if _LD_CONF_RE.match(name) and member.isfile() and member.size <= _MAX_LD_CONF_READ:
                        ld_conf[name] = tar.extractfile(member).read().decode("utf-8", "replace")  # type: ignore[union-attr]
                    if name in ("etc/passwd", "etc/group") and member.isfile() and member.size <= _MAX_ACCOUNTS_READ:
                        accounts[name] = tar.extractfile(member).read().decode("utf-8", "replace")  # type: ignore[union-attr]
                    m = _PYTHON_RE.match(name)
                    if m and (member.isfile() or member.issym() or member.islnk()):
                        present[name] = m.group(1)
                    if (member.isfile() or member.issym() or member.islnk()) and _SHARED_OBJECT_RE.match(base):
                        libraries[name] = base
                    if member.isfile() and member.mode & 0o111:
                        executables.add(name)
                    elif member.islnk() and (member.linkname[2:] if member.linkname.startswith("./") else member.linkname).lstrip("/") in executables:
                        executables.add(name)
                    else:
                        executables.discard(name)  # a later layer's entry replaces the path
                    if member.issym():  # relative to its directory, or from the image's root; `..` is left to _resolve_link
                        links[name] = posixpath.join(posixpath.dirname(name), member.linkname).lstrip("/")
                    elif member.islnk():  # names another member of the archive
                        links[name] = (member.linkname[2:] if member.linkname.startswith("./") else member.linkname).lstrip("/")
                    if base.startswith("ld-musl-"):
                        musl = True
                        machine = base[len("ld-musl-"):].split(".so")[0]
                    if base == "libc.so.6":
                        libc_names.append(name)
                        triplet = name.rsplit("/", 2)[-2] if name.count("/") >= 1 else ""
                        if triplet.endswith("-linux-gnu"):
                            machine = triplet.split("-")[0]
                    if _LIBC_FILE_RE.match(base) and member.isfile() and member.size <= _MAX_LIBC_READ:
                        data = tar.extractfile(member).read()  # type: ignore[union-attr]
                        release = _GLIBC_RELEASE_RE.search(data)  # a release adding no symbol version (2.31) says it here
                        versions = [int(v) for v in _GLIBC_RE.findall(data)]
                        if release or versions:
                            libc_files[name] = release.group(1).decode() if release else f"2.{max(versions)}"
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BuildError(f"base layer {digest[:19]}… is not a readable tar ({exc})", "check the base image") from exc
        finally:
            stream.close()
    libc, libc_version = ("musl", "1.2") if musl else ("", "")
    # a layer may name a file through a linked directory (lib/… on a merged-/usr base): key everything by the
    # path its directory resolves to, which is what _resolve_link arrives at
    links = {_canonical(name, links): target for name, target in links.items()}
    libc_files = {_canonical(name, links): version for name, version in libc_files.items()}
    for name in libc_names:
        version = libc_files.get(_resolve_link(name, links), "")
        if version:
            libc, libc_version = "glibc", version
    configured = {_resolve_link(d, links) for d in _ld_conf_dirs(ld_conf)}
    found = {base for name, base in libraries.items() if _LIBRARY_RE.match(name) or _canonical(name, links).rpartition("/")[0] in configured}
    return BaseFacts(
        {"/" + k: v for k, v in sorted(present.items())}, libc, libc_version, machine, accounts.get("etc/passwd", ""), accounts.get("etc/group", ""),
        tuple(sorted(found)),
        frozenset("/" + _canonical(name, links) for name in executables),  # keyed as BaseFacts.resolve arrives at them
        {"/" + name: "/" + target for name, target in sorted(links.items())},
        frozenset(root),
    )


def _ld_conf_dirs(files: dict[str, str]) -> list[str]:
    """The directories ``etc/ld.so.conf`` names, following its ``include`` globs among ``files`` (one level deep
    per include, each file once, as ldconfig reads them). Paths come back without the leading /."""
    dirs: list[str] = []
    seen: set[str] = set()
    todo = ["etc/ld.so.conf"]
    while todo:
        name = todo.pop(0)
        if name in seen or name not in files:
            continue
        seen.add(name)
        for line in files[name].splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("include") and line[7:8] in (" ", "\t"):
                for pattern in line[8:].split():
                    pattern = posixpath.join("etc", pattern.lstrip("/")) if not pattern.startswith("/") else pattern.lstrip("/")
                    todo += sorted(f for f in files if fnmatch.fnmatchcase(f, pattern))
            elif line.startswith("/"):
                dirs += [d.strip("/") for d in re.split(r"[\s:,=]+", line) if d.startswith("/")]
    return dirs


def _canonical(name: str, links: dict[str, str]) -> str:
    parent, _, base = name.rpartition("/")
    return "/".join(p for p in (_resolve_link(parent, links), base) if p)


def _resolve_link(path: str, links: dict[str, str]) -> str:
    """``path`` (in the image, no leading /) with every symlink on the way followed through ``links``, as the
    kernel would inside the image's root (``lib`` -> ``usr/lib`` on merged-/usr bases); at most
    ``_MAX_LINK_HOPS`` links, ``..`` never leaves the root. Pure string work on the base's names: no host path."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        current = "/".join([*done, part])
        target = links.get(current)
        if target is None:
            done.append(part)
            continue
        hops += 1
        if hops > _MAX_LINK_HOPS:
            return current
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
        done = []  # targets are stored from the root
    return "/".join(done)
