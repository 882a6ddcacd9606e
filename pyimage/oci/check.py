"""Check an image the way the strictest engines read it, before a user finds out from ``docker load``.

``check_image(path)`` takes an OCI layout directory or an archive (docker-archive / oci-archive tar) and checks:
every document against the image-spec schemas (``pyimage.oci.schema``); every blob present with the size and
digest its descriptor claims; each layer's diff_id; and inside each layer tar, that no path repeats (Docker,
podman, buildah and CRI-O refuse such layers), that a directory entry never comes after entries below it,
that no name is absolute or climbs out with ``..``, and that layers pyimage wrote hold no whiteouts.

Everything read is untrusted: digests are parsed strictly before a blob path is made from them, symlinks in a
layout are refused, and a problem is a finding in the report, never an exception.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Protocol

from pyimage.oci import schema
from pyimage.oci.model import INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES

__all__ = ["CheckReport", "check_image"]

_STRICT_DIGEST = {"sha256": re.compile(r"^[a-f0-9]{64}$"), "sha512": re.compile(r"^[a-f0-9]{128}$")}
_MAX_DOCUMENT = 4 << 20  # a manifest, index or config bigger than this is not one (registries cap at 4 MiB)
_MAX_FINDINGS_PER_LAYER = 10
_LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "tar",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "tar",
}
_CONFIG_TYPES = ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")


@dataclass
class CheckReport:
    """What was checked and what is wrong; ``ok`` when nothing is."""

    findings: list[str] = field(default_factory=list)
    manifests: int = 0
    layers: int = 0
    blobs: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, where: str, problem: str) -> None:
        self.findings.append(f"{where}: {problem}")


# -- where the blobs are: a layout directory or a tar archive ----------------------------------------------
class _Store(Protocol):
    def size(self, name: str) -> int | None: ...
    def open(self, name: str) -> BinaryIO: ...


class _DirStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path | None:
        path = self.root
        for part in name.split("/"):
            path = path / part
            try:
                mode = path.lstat().st_mode
            except OSError:
                return None
            if stat.S_ISLNK(mode):
                raise _Refused(f"{name} is a symbolic link (a layout's files must be plain files)")
        return path if stat.S_ISREG(path.lstat().st_mode) else None

    def size(self, name: str) -> int | None:
        path = self._path(name)
        return None if path is None else path.stat().st_size

    def open(self, name: str) -> BinaryIO:
        path = self._path(name)
        if path is None:
            raise FileNotFoundError(name)
        return open(path, "rb")


class _TarStore:
    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.members: dict[str, tarfile.TarInfo] = {}
        for member in tar.getmembers():
            name = _normalize(member.name)
            if member.isreg():
                self.members[name] = member
            elif member.issym() or member.islnk():
                self.members.pop(name, None)

    def size(self, name: str) -> int | None:
        member = self.members.get(name)
        return None if member is None else member.size

    def open(self, name: str) -> BinaryIO:
        f = self.tar.extractfile(self.members[name])
        assert f is not None  # a regular member always has a file object
        return f  # type: ignore[return-value]


class _Refused(Exception):
    """A file of the image that must not be followed (a symlink): a finding, never a traversal."""


# -- entry point -----------------------------------------------------------------------------------------
def check_image(path: Path) -> CheckReport:
    """Checks the layout directory or archive at ``path``; every problem is a finding in the report."""
    path = Path(path)
    report = CheckReport()
    if path.is_dir():
        _check_store(_DirStore(path), report, str(path))
        return report
    try:
        tar = tarfile.open(path)
    except (OSError, tarfile.TarError) as exc:
        report.add(str(path), f"neither an OCI layout directory nor a readable tar archive ({exc})")
        return report
    with tar:
        _check_store(_TarStore(tar), report, str(path))
    return report


def _check_store(store: _Store, report: CheckReport, where: str) -> None:
    checker = _Checker(store, report)
    has_index = store.size("index.json") is not None
    has_docker = store.size("manifest.json") is not None
    if not has_index and not has_docker:
        report.add(where, "no index.json (OCI layout) and no manifest.json (docker-archive)")
        return
    if has_index:
        layout = checker.document("oci-layout", schema.LAYOUT)
        if layout is None and store.size("oci-layout") is None:
            report.add("oci-layout", "missing: an OCI layout needs it")
        index = checker.document("index.json", schema.INDEX)
        if index is not None:
            checker.index(index, "index.json")
    if has_docker:
        checker.docker_manifest()


# image-spec annotations.md: ref ::= component ("/" component)*; component ::= alphanum (separator alphanum)*;
# alphanum ::= [A-Za-z0-9]+; separator ::= [-._:@+] | "--"
_REF_NAME = re.compile(r"^[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*(?:/[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*)*$")


class _Checker:
    def __init__(self, store: _Store, report: CheckReport) -> None:
        self.store = store
        self.report = report
        self.verified: dict[str, bool] = {}
        self.checked_layers: set[str] = set()

    # -- documents ---------------------------------------------------------------------------------------
    def document(self, name: str, doc_schema: dict[str, Any]) -> Any | None:
        size = self._size(name)
        if size is None:
            return None
        if size > _MAX_DOCUMENT:
            self.report.add(name, f"{size} bytes: too large for an image document")
            return None
        with self.store.open(name) as f:
            data = f.read()
        return self._parse(data, name, doc_schema)

    def _parse(self, data: bytes, where: str, doc_schema: dict[str, Any]) -> Any | None:
        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            self.report.add(where, f"not JSON ({exc})")
            return None
        errors = _schema_errors(value, doc_schema)
        for error in errors:
            self.report.add(where, error)
        return None if errors else value

    def _size(self, name: str) -> int | None:
        try:
            return self.store.size(name)
        except _Refused as exc:
            self.report.add(name, str(exc))
            return None

    # -- blobs -------------------------------------------------------------------------------------------
    def blob_name(self, digest: str, where: str) -> str | None:
        algorithm, _, encoded = digest.partition(":")
        pattern = _STRICT_DIGEST.get(algorithm)
        if pattern is None or not pattern.match(encoded):
            self.report.add(where, f"digest {digest[:80]!r} is not sha256:<64 hex> or sha512:<128 hex>")
            return None
        return f"blobs/{algorithm}/{encoded}"

    def blob(self, desc: dict[str, Any], where: str) -> bytes | None:
        """A small blob (a document) after checking its size and digest; None (with a finding) otherwise."""
        name = self.blob_name(desc["digest"], where)
        if name is None or not self._blob_ok(name, desc, where, keep=True):
            return None
        if desc["size"] > _MAX_DOCUMENT:
            self.report.add(where, f"{desc['size']} bytes: too large for an image document")
            return None
        with self.store.open(name) as f:
            return f.read()

    def _blob_ok(self, name: str, desc: dict[str, Any], where: str, keep: bool = False) -> bool:
        digest = desc["digest"]
        if digest in self.verified:
            return self.verified[digest]
        size = self._size(name)
        ok = False
        if size is None:
            self.report.add(where, f"blob {digest} is missing")
        elif size != desc["size"]:
            self.report.add(where, f"blob {digest} has {size} bytes, its descriptor says {desc['size']}")
        else:
            h = hashlib.new(digest.partition(":")[0])
            with self.store.open(name) as f:
                while data := f.read(1 << 20):
                    h.update(data)
            ok = f"{digest.partition(':')[0]}:{h.hexdigest()}" == digest
            if not ok:
                self.report.add(where, f"blob {digest} does not match its digest (corrupt or tampered)")
        self.report.blobs += 1
        self.verified[digest] = ok
        return ok

    # -- index and manifests -----------------------------------------------------------------------------
    def index(self, index: dict[str, Any], where: str) -> None:
        for i, desc in enumerate(index["manifests"]):
            label = f"{where} manifests[{i}]"
            media = desc["mediaType"]
            ref = (desc.get("annotations") or {}).get("org.opencontainers.image.ref.name")
            if where == "index.json" and isinstance(ref, str) and not _REF_NAME.match(ref):
                self.report.add(label, f"ref.name {ref!r} is outside the image-spec's grammar for it: skopeo, podman and engines refuse oci:DIR:{ref}")
            data = self.blob(desc, label)
            if data is None:
                continue
            if media in INDEX_MEDIA_TYPES:
                nested = self._parse(data, f"index {desc['digest'][:19]}", schema.INDEX)
                if nested is not None:
                    self.index(nested, f"index {desc['digest'][:19]}")
            elif media in MANIFEST_MEDIA_TYPES:
                manifest = self._parse(data, f"manifest {desc['digest'][:19]}", schema.MANIFEST)
                if manifest is not None:
                    self.manifest(manifest, f"manifest {desc['digest'][:19]}")
            else:
                self.report.add(label, f"media type {media} is neither an image index nor a manifest")

    def manifest(self, manifest: dict[str, Any], where: str) -> None:
        self.report.manifests += 1
        config_desc = manifest["config"]
        if config_desc["mediaType"] not in _CONFIG_TYPES:
            self.report.add(where, f"config media type {config_desc['mediaType']} is not an image config")
        data = self.blob(config_desc, f"{where} config")
        config = None if data is None else self._parse(data, f"{where} config", schema.CONFIG)
        layers = manifest["layers"]
        if config is None:
            for i, desc in enumerate(layers):
                self.layer(desc, None, f"{where} layer {i}", False)
            return
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(layers):
            self.report.add(where, f"{len(layers)} layers but the config lists {len(diff_ids)} diff_ids")
        ours = _pyimage_layers(config, len(layers))
        for i, desc in enumerate(layers):
            name = ours[i] or f"layer {i}"
            self.layer(desc, diff_ids[i] if i < len(diff_ids) else None, f"{where} {name}", bool(ours[i]))

    def docker_manifest(self) -> None:
        entries = self.document("manifest.json", schema.DOCKER_MANIFEST_LIST)
        for i, entry in enumerate(entries or []):
            where = f"manifest.json[{i}]"
            missing = [n for n in [entry["Config"], *entry["Layers"]] if self._size(_normalize(n)) is None]
            for name in missing:
                self.report.add(where, f"names {name}, which the archive does not hold")

    # -- layers ------------------------------------------------------------------------------------------
    def layer(self, desc: dict[str, Any], diff_id: str | None, where: str, ours: bool) -> None:
        self.report.layers += 1
        kind = _LAYER_TYPES.get(desc["mediaType"])
        if kind is None:
            self.report.add(where, f"layer media type {desc['mediaType']} is not one engines unpack")
            return
        name = self.blob_name(desc["digest"], where)
        if name is None or not self._blob_ok(name, desc, where):
            return
        if desc["digest"] + str(diff_id) in self.checked_layers:
            return
        self.checked_layers.add(desc["digest"] + str(diff_id))
        with self.store.open(name) as f:
            found = _scan_layer(f, kind, ours)
        for problem in found.problems[:_MAX_FINDINGS_PER_LAYER]:
            self.report.add(where, problem)
        if len(found.problems) > _MAX_FINDINGS_PER_LAYER:
            self.report.add(where, f"... and {len(found.problems) - _MAX_FINDINGS_PER_LAYER} more problems")
        if diff_id is not None and found.diff_id is not None and found.diff_id != diff_id:
            self.report.add(where, f"diff_id is {found.diff_id}, the config says {diff_id}")


def _pyimage_layers(config: dict[str, Any], count: int) -> list[str]:
    """The name pyimage gave each layer (``""`` for layers it did not write), from the config's history."""
    history = [h for h in config.get("history") or [] if not h.get("empty_layer")]
    if len(history) != count:
        return [""] * count
    return [str(h.get("created_by", "")) if h.get("comment") == "pyimage" else "" for h in history]


@dataclass
class _LayerScan:
    problems: list[str] = field(default_factory=list)
    diff_id: str | None = None


def _scan_layer(blob: BinaryIO, kind: str, ours: bool) -> _LayerScan:
    scan = _LayerScan()
    raw = hashlib.sha256()
    reader = _RawReader(_decompress(blob, kind), raw)
    seen: set[str] = set()
    implied: set[str] = set()  # ancestors of entries seen so far that have no entry of their own yet
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                _check_member(member, seen, implied, ours, scan.problems)
        reader.drain()
    except (tarfile.TarError, zlib.error, OSError, EOFError, ValueError) as exc:
        scan.problems.append(f"layer tar is unreadable ({exc})")
        return scan
    scan.diff_id = "sha256:" + raw.hexdigest()
    return scan


def _check_member(member: tarfile.TarInfo, seen: set[str], implied: set[str], ours: bool, problems: list[str]) -> None:
    name = member.name
    if name.startswith("/"):
        problems.append(f"entry {name!r} is absolute")
    path = _normalize(name)
    if path in ("", "."):
        return  # the root itself ("./"), as many base layers have
    if path == ".." or path.startswith("../") or "/../" in f"/{path}/":
        problems.append(f"entry {name!r} climbs out of the root")
        return
    if path in seen:
        problems.append(f"/{path} appears more than once (Docker, podman and CRI-O refuse the layer)")
        return
    if member.isdir() and path in implied:
        problems.append(f"directory /{path} comes after entries inside it")
    seen.add(path)
    implied.discard(path)
    parent = posixpath.dirname(path)
    while parent and parent not in seen and parent not in implied:
        implied.add(parent)
        parent = posixpath.dirname(parent)
    if ours and posixpath.basename(path).startswith(".wh."):
        problems.append(f"/{path} is a whiteout, which pyimage never writes")


def _normalize(name: str) -> str:
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:]
    return posixpath.normpath(name) if name else ""


def _decompress(blob: BinaryIO, kind: str) -> Iterator[bytes]:
    if kind == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True)
        while data := reader.read(1 << 20):
            yield data
        return
    if kind == "tar":
        while data := blob.read(1 << 20):
            yield data
        return
    try:
        from isal import isal_zlib as inflate
    except ImportError:  # pragma: no cover - isal is a declared dependency
        inflate = zlib  # type: ignore[assignment,misc]
    obj = inflate.decompressobj(16 + zlib.MAX_WBITS)
    started = False  # whether the current member has been fed any byte
    while data := blob.read(1 << 20):
        while data:
            started = True
            out = obj.decompress(data)
            if out:
                yield out
            if not obj.eof:
                break
            data = obj.unused_data  # concatenated gzip members: the next one starts here
            obj = inflate.decompressobj(16 + zlib.MAX_WBITS)
            started = False
    if started:
        tail = obj.flush()
        if tail:
            yield tail
        if not obj.eof:
            raise EOFError("the gzip stream is truncated")


class _RawReader:
    """A read()-able view of decompressed chunks that hashes every byte it hands out (for the diff_id).

    Keeps one chunk and an offset into it, so a small read copies only what it returns."""

    def __init__(self, chunks: Iterator[bytes], digest: Any) -> None:
        self._chunks = chunks
        self._digest = digest
        self._chunk = b""
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        parts: list[bytes] = []
        want = (1 << 62) if n is None or n < 0 else n
        while want:
            if self._pos >= len(self._chunk):
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._chunk, self._pos = chunk, 0
            piece = self._chunk[self._pos : self._pos + want]
            self._pos += len(piece)
            want -= len(piece)
            parts.append(piece)
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        self._digest.update(out)
        return out

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _schema_errors(value: Any, doc_schema: dict[str, Any]) -> list[str]:
    from jsonschema import Draft7Validator  # type: ignore[import-untyped]

    validator = Draft7Validator(doc_schema, format_checker=Draft7Validator.FORMAT_CHECKER)
    out = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        at = "/".join(str(p) for p in error.absolute_path) or "(top)"
        out.append(f"{at}: {error.message[:200]}")
    return out
