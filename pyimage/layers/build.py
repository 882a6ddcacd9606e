"""Turn a ``LayerSpec`` into a ``Layer``: a cache hit, or wheels streamed into a compressed blob.

A layer's key hashes everything that changes its bytes (format version, the ordered wheel sha256s, in-image
paths, Python version, bytecode setting, owner, epoch and the exact compressor), so the key is known before any
wheel is opened and a hit costs one small JSON read and a stat.

A layer of several wheels (``site-packages``, a heavy group of several packages) is assembled from per-wheel
fragments: each wheel's file entries, without directory entries and without end-of-archive blocks, compressed
as a gzip member or zstd frame of its own and cached by the wheel's key, so a changed dependency set compresses
only its new wheels. The layer is ``[directories] + fragments + [end]``: one small fragment holding every
directory the others need (sorted, so parents come first), then the wheels in plan order. No path appears twice:
a file that an earlier wheel of the layer already holds is left out of the later wheel's fragment (whose key
then names what it leaves out). The diff_id (sha256 of the whole uncompressed tar) is hashed as the parts are
written when all of them are written now (the directories foretold from the wheels' file maps), else by
inflating the fragments once more; with ``compression = "none"`` the blob is the tar and its digest the diff_id.

This stage never downloads: ``wheels_to_read`` says, before any layer work, which wheels the layers that miss the
cache will open (the pipeline fetches exactly those in one step); a wheel without a file here is a bug.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from pyimage.cache import Cache, LayerRecord, Meta, strings
from pyimage.errors import BuildError
from pyimage.layers.compress import BlobWriter, compression_id, decompress_stream, media_type_for
from pyimage.layers.paths import InstallPaths
from pyimage.layers.plan import LayerSpec
from pyimage.layers.tar import END_OF_ARCHIVE, Owner, TarWriter
from pyimage.oci.model import HISTORY_PREFIX, Descriptor, Layer
from pyimage.wheels import Wheel

__all__ = ["LayerContext", "LAYER_FORMAT", "layer_key", "build_layer", "build_custom_layer", "wheels_to_read"]

LAYER_FORMAT = 3  # bump when the output for the same inputs changes (2: no repeated paths; 3: chunked members)


@dataclass(frozen=True)
class LayerContext:
    cache: Cache
    paths: InstallPaths
    owner: Owner = Owner()
    epoch: int = 0
    compression: str = "gzip"
    compile_bytecode: bool = False
    # Push-only builds: "do the push targets hold this blob?" A layer whose record is known but whose blob is
    # gone (pruned) is then taken from the registry's word instead of being built again from its wheels.
    remote: Callable[[str], bool] | None = field(default=None, compare=False)
    # Threads compressing a blob's chunks (None: compress_workers(), one per core up to 4). Speed only, never bytes.
    compress_workers: int | None = field(default=None, compare=False)

    def key(self, kind: str, parts: object) -> str:
        material = {
            "format": LAYER_FORMAT,
            "kind": kind,
            "parts": parts,
            "venv": self.paths.venv,
            "python": self.paths.python,
            "owner": str(self.owner),
            "epoch": self.epoch,
            "compression": compression_id(self.compression),
            "bytecode": self.compile_bytecode,
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def writer(self, sink: BlobWriter, *, emit_dirs: bool = True, skip: frozenset[str] = frozenset()) -> TarWriter:
        return TarWriter(
            sink,
            mtime=self.epoch,
            owner=self.owner,
            owned_root=self.paths.venv,
            capture_sources=self.compile_bytecode,
            emit_dirs=emit_dirs,
            skip=skip,
        )


def layer_key(spec: LayerSpec, ctx: LayerContext) -> str:
    return ctx.key(spec.kind if spec.kind != "heavy" else "wheels", [w.sha256 for w in spec.wheels])


def _layer(name: str, record: LayerRecord, cache: Cache, packages: tuple[str, ...], cached: bool, remote: bool = False) -> Layer:
    return Layer(
        name=name,
        descriptor=Descriptor(record.media_type, record.digest, record.size),
        diff_id=record.diff_id,
        blob=cache.blob_path(record.digest),
        packages=packages,
        cached=cached,
        history=f"{HISTORY_PREFIX}{name}",
        uncompressed_size=record.uncompressed_size or None,
        remote=remote,
    )


def _in_registry(ctx: LayerContext, key: str) -> LayerRecord | None:
    """The record of a layer built before whose blob is gone from this machine but held by every push target;
    None when the build should find or build the blob here (no push-only build, a local hit, or unknown)."""
    if ctx.remote is None:
        return None
    record = ctx.cache.layer_record(key)
    if record is None or ctx.cache.valid_blob(record.digest, record.size) is not None:
        return None
    return record if ctx.remote(record.digest) else None


def _write_blob(
    ctx: LayerContext,
    fill: Callable[[TarWriter], None],
    finish: bool,
    *,
    fragment: bool = False,
    skip: frozenset[str] = frozenset(),
    tee: Callable[[Any], object] | None = None,
) -> LayerRecord:
    """Runs ``fill`` against a fresh tar writer into a temp blob, commits it by digest, returns its record.

    A ``fragment`` writes no directory entries; what it needs and holds is kept beside its record (``_contents``).
    ``tee`` is also given the blob's uncompressed bytes, in order (``_assemble``'s diff_id).
    """
    tmp = ctx.cache.tmp_path(".blob")
    try:
        # a part (``finish`` False: a fragment, the directories, the end) is never a layer: no diff_id of its own
        with BlobWriter(tmp, ctx.compression, workers=ctx.compress_workers, tee=tee, diff_id=finish) as sink:
            tw = ctx.writer(sink, emit_dirs=not fragment, skip=skip)
            fill(tw)
            if finish:
                tw.finish()
            result = sink.close()
        ctx.cache.commit_blob(tmp, result.digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if fragment:
        ctx.cache.put_meta(CONTENTS, _Contents(tuple(tw.dirs), frozenset(tw.files)), result.digest.removeprefix("sha256:"))
    return LayerRecord(result.digest, result.diff_id, result.size, media_type_for(ctx.compression), result.uncompressed_size)


def _cached_or_build(
    ctx: LayerContext, key: str, make: Callable[[], LayerRecord], valid: Callable[[LayerRecord], bool] = lambda r: True
) -> tuple[LayerRecord, bool]:
    record = ctx.cache.get_layer(key)
    if record is not None and valid(record):
        return record, True
    with ctx.cache.lock(key):  # another process may be building the same key: wait, then reuse
        record = ctx.cache.get_layer(key)
        if record is not None and valid(record):
            return record, True
        record = make()
        ctx.cache.put_layer(key, record)
        return record, False


def _install_all(wheels: Iterable[Wheel], ctx: LayerContext) -> Callable[[TarWriter], None]:
    def fill(tw: TarWriter) -> None:
        from pyimage.layers.bytecode import compile_captured
        from pyimage.layers.install import install_wheel  # only a cache miss needs pypa/installer
        from pyimage.layers.native import record_natives, unscanned

        for wheel in wheels:
            if wheel.path is None or not wheel.path.is_file():
                raise BuildError(
                    f"internal error: the layer stage must read {wheel.filename}, but it was not fetched (wheels_to_read missed it)",
                    "this is a bug in pyimage; run again with --debug and report it",
                )
            # A wheel never scanned for its native libraries (a cold build defers that check to here): its ELF
            # facts are gathered from the bytes this pass inflates anyway.
            keep = (lambda facts, sha=wheel.sha256: record_natives(ctx.cache, sha, facts)) if unscanned([wheel], ctx.cache) else None
            install_wheel(wheel.path, tw, ctx.paths, keep)
            if ctx.compile_bytecode:
                compile_captured(tw, ctx.paths)

    return fill


def build_layer(spec: LayerSpec, ctx: LayerContext) -> Layer:
    """The layer for ``spec``, from the cache when its key is known there."""
    key = layer_key(spec, ctx)
    remote = _in_registry(ctx, key)
    if remote is not None:  # no wheel is fetched or read
        return _layer(spec.name, remote, ctx.cache, spec.packages, True, remote=True)
    if len(spec.wheels) > 1:
        record, cached = _cached_or_build(ctx, key, lambda: _assemble(spec.wheels, ctx))
    else:
        record, cached = _cached_or_build(ctx, key, lambda: _write_blob(ctx, _install_all(spec.wheels, ctx), True))
    return _layer(spec.name, record, ctx.cache, spec.packages, cached)


def build_custom_layer(name: str, parts: object, fill: Callable[[TarWriter], None], ctx: LayerContext) -> Layer:
    """A layer whose content ``fill`` writes, cached under the key of ``parts`` (which must name every input)."""
    key = ctx.key(name, parts)
    remote = _in_registry(ctx, key)
    if remote is not None:
        return _layer(name, remote, ctx.cache, (), True, remote=True)
    record, cached = _cached_or_build(ctx, key, lambda: _write_blob(ctx, fill, True))
    return _layer(name, record, ctx.cache, (), cached)


# -- layers of several wheels, from fragments -------------------------------------------------------------
@dataclass(frozen=True)
class _Contents:
    """What a fragment blob holds: the directories its files need, and its files."""

    dirs: tuple[str, ...]
    files: frozenset[str]

    @classmethod
    def load(cls, value: Any) -> "_Contents":
        return cls(strings(value["dirs"]), frozenset(strings(value["files"])))

    def dump(self) -> dict[str, list[str]]:
        return {"dirs": list(self.dirs), "files": sorted(self.files)}


CONTENTS: Meta[_Contents] = Meta("fragment", _Contents.load, _Contents.dump)


def _contents_of(ctx: LayerContext, digest: str) -> _Contents | None:
    return ctx.cache.get_meta(CONTENTS, digest.removeprefix("sha256:"))


@dataclass(frozen=True)
class _Fragment:
    record: LayerRecord
    dirs: tuple[str, ...]
    files: frozenset[str]


def _fragment(wheel: Wheel, ctx: LayerContext, skip: frozenset[str] = frozenset(), tee: Callable[[Any], object] | None = None) -> tuple[_Fragment, bool]:
    """``wheel``'s files as a fragment, leaving out ``skip`` (paths an earlier wheel of the layer holds), and
    whether it came from the cache (else it was written now, its bytes given to ``tee``)."""
    key = ctx.key("fragment", wheel.sha256 if not skip else [wheel.sha256, sorted(skip)])
    record, cached = _cached_or_build(
        ctx,
        key,
        lambda: _write_blob(ctx, _install_all([wheel], ctx), False, fragment=True, skip=skip, tee=tee),
        valid=lambda r: _contents_of(ctx, r.digest) is not None,
    )
    contents = _contents_of(ctx, record.digest)
    if contents is None:  # `valid` above required it; a concurrent verify may have dropped it
        raise BuildError(f"{wheel.filename}: the layer record of its files is gone from the cache", "build again")
    return _Fragment(record, contents.dirs, contents.files), cached


def _dirs_fragment(dirs: Sequence[str], ctx: LayerContext, tee: Callable[[Any], object] | None = None) -> tuple[LayerRecord, bool]:
    def fill(tw: TarWriter) -> None:
        for path in dirs:
            tw.add_dir(path)

    material = hashlib.sha256("\n".join(dirs).encode()).hexdigest()
    return _cached_or_build(ctx, ctx.key("dirs", material), lambda: _write_blob(ctx, fill, False, tee=tee))


def _end_fragment(ctx: LayerContext) -> LayerRecord:
    record, _ = _cached_or_build(ctx, ctx.key("end-of-archive", None), lambda: _write_blob(ctx, lambda tw: tw.finish(), False))
    return record


def _fragments(wheels: tuple[Wheel, ...], ctx: LayerContext, tee: Callable[[Any], object] | None = None) -> tuple[list[_Fragment], bool]:
    """One fragment per wheel, in order, with no path held by two of them (the first wheel keeps it); and whether
    ``tee`` was given the bytes of exactly these fragments, in order (each written now, none rewritten)."""
    out: list[_Fragment] = []
    held: set[str] = set()
    teed = tee is not None
    for wheel in wheels:
        frag, cached = _fragment(wheel, ctx, tee=tee if teed else None)
        repeated = frag.files & held
        if repeated:  # rare: identical files, or a namespace __init__.py the conflict check allowed
            frag, cached = _fragment(wheel, ctx, frozenset(repeated))
            teed = False
        teed = teed and not cached
        held |= frag.files
        out.append(frag)
    return out, teed


def _predicted_dirs(wheels: Sequence[Wheel], ctx: LayerContext) -> list[str] | None:
    """The directories the fragments of ``wheels`` will need, from their file maps (recorded by the conflict
    check before layer work) and the bytecode rule: what lets the directory fragment, which comes first in the
    layer, be written before the wheels' fragments. None when a file map is not cached."""
    from pyimage.layers.bytecode import can_compile
    from pyimage.layers.conflicts import cached_files

    pyc = ctx.compile_bytecode and can_compile(ctx.paths.python)
    dirs: set[str] = set()
    for wheel in wheels:
        files = cached_files(wheel.sha256, ctx.paths, ctx.cache)
        if files is None:
            return None
        for path in files:
            parent = posixpath.dirname(path)
            if pyc and path.endswith(".py"):
                parent = posixpath.join(parent, "__pycache__")
            while parent and parent not in dirs:
                dirs.add(parent)
                parent = posixpath.dirname(parent)
            if pyc and path.endswith(".py"):  # the source's own directory too
                parent = posixpath.dirname(path)
                while parent and parent not in dirs:
                    dirs.add(parent)
                    parent = posixpath.dirname(parent)
    return sorted(dirs)


def _held_here(ctx: LayerContext, key: str) -> LayerRecord | None:
    """The record of ``key`` when its blob is here, without counting a cache hit or miss (``get_layer`` does)."""
    record = ctx.cache.layer_record(key)
    return record if record is not None and ctx.cache.valid_blob(record.digest, record.size) is not None else None


def _cached_contents(ctx: LayerContext, key: str) -> frozenset[str] | None:
    """The files of the fragment cached under ``key``; None when it would have to be built."""
    record = _held_here(ctx, key)
    contents = _contents_of(ctx, record.digest) if record is not None else None
    return contents.files if contents is not None else None


def wheels_to_read(specs: Iterable[LayerSpec], ctx: LayerContext) -> tuple[Wheel, ...]:
    """The wheels ``build_layer`` will open for ``specs``, decided from the cache alone, before any layer work: none
    for a layer the cache (or, push-only, every target registry) holds; a one-wheel layer that misses needs its
    wheel; a layer of several wheels needs those whose fragment misses, and a wheel whose cached fragment repeats
    a path of an earlier one when the fragment without those paths is not cached either. Where an earlier
    fragment is not cached its files are taken from the wheel's recorded file map (``layers/conflicts.py``), and
    a repeat is then assumed to need the wheel: this may fetch a wheel too many, never one too few."""
    from pyimage.layers.conflicts import cached_files

    need: dict[str, Wheel] = {}
    for spec in specs:
        key = layer_key(spec, ctx)
        if _in_registry(ctx, key) is not None or _held_here(ctx, key) is not None:
            continue
        if len(spec.wheels) == 1:
            need.setdefault(spec.wheels[0].sha256, spec.wheels[0])
            continue
        held: set[str] = set()
        exact = True  # every earlier wheel's fragment is cached, so its files are known exactly
        for wheel in spec.wheels:
            files = _cached_contents(ctx, ctx.key("fragment", wheel.sha256))
            if files is None:
                need.setdefault(wheel.sha256, wheel)
                mapped = cached_files(wheel.sha256, ctx.paths, ctx.cache)
                exact = False
                if mapped is None:  # nothing known of its files: any later wheel may repeat one
                    held = _EVERYTHING
                elif held is not _EVERYTHING:
                    held |= mapped
                continue
            repeated = files if held is _EVERYTHING else files & held
            if repeated and (not exact or _cached_contents(ctx, ctx.key("fragment", [wheel.sha256, sorted(repeated)])) is None):
                need.setdefault(wheel.sha256, wheel)
            if held is not _EVERYTHING:
                held |= files
    return tuple(need.values())


_EVERYTHING: set[str] = set()  # a marker: the held paths are not known


def _assemble(wheels: Iterable[Wheel], ctx: LayerContext) -> LayerRecord:
    """The layer of several wheels: the directory fragment, each wheel's fragment, the end of the archive.

    Its diff_id is a sha256 over the uncompressed parts in that order. When every part is written now (a cold
    build) their bytes go through that hash as they are written, the directories taken ahead from the wheels'
    file maps; otherwise (a fragment was cached, or the prediction missed) the parts are inflated once more."""
    wheels = tuple(wheels)
    raw = hashlib.sha256()
    plain = ctx.compression == "none"  # the layer is its tar: its digest is its diff_id, nothing to inflate
    predicted = None if plain else _predicted_dirs(wheels, ctx)
    streamed = False
    if predicted is not None:
        _, cached = _dirs_fragment(predicted, ctx, tee=raw.update)
        streamed = not cached
    frags, teed = _fragments(wheels, ctx, tee=raw.update if streamed else None)
    dirs = sorted(set().union(*(f.dirs for f in frags)))
    streamed = streamed and teed and dirs == predicted
    files = set().union(*(f.files for f in frags))
    clash = next((d for d in dirs if d in files), None)
    if clash is not None:
        raise BuildError(f"/{clash} is a file in one package of this layer and a directory in another", "drop one of the two packages, or pin versions that do not collide")
    parts = [_dirs_fragment(dirs, ctx)[0], *(f.record for f in frags), _end_fragment(ctx)]
    if streamed:
        raw.update(END_OF_ARCHIVE)
    else:
        raw = hashlib.sha256()
    tmp = ctx.cache.tmp_path(".blob")
    packed = hashlib.sha256()
    size = raw_size = 0
    blobs = [(ctx.cache.blob_path(part.digest), part.media_type) for part in parts]
    try:
        with open(tmp, "wb") as out:
            for blob, _ in blobs:
                with open(blob, "rb") as f:
                    while data := f.read(1 << 20):
                        packed.update(data)
                        out.write(data)
                        size += len(data)
            if plain:
                raw, raw_size = packed, size
            elif streamed:
                raw_size = sum(part.uncompressed_size for part in parts[:-1]) + len(END_OF_ARCHIVE)
            else:
                # The fragments inflated once more (a sha256 cannot be resumed from the fragments' own), on a
                # thread of its own while this one hashes.
                with _ahead(data for blob, media_type in blobs for data in decompress_stream(blob, media_type)) as inflated:
                    for data in inflated:
                        raw.update(data)
                        raw_size += len(data)
        digest = "sha256:" + packed.hexdigest()
        ctx.cache.commit_blob(tmp, digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return LayerRecord(digest, "sha256:" + raw.hexdigest(), size, media_type_for(ctx.compression), raw_size)


_END = object()


@contextlib.contextmanager
def _ahead(items: Iterator[bytes], depth: int = 8) -> Iterator[Iterator[bytes]]:
    """``items``, produced by a thread of its own up to ``depth`` ahead of the consumer; the thread's error is
    raised to the consumer, and leaving the block early stops the thread."""
    slots: queue.Queue[object] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_END)
        except BaseException as exc:  # handed to the consumer
            slots.put(exc)

    def consume() -> Iterator[bytes]:
        while (item := slots.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    thread = threading.Thread(target=produce, name="pyimage-inflate", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                slots.get(timeout=0.1)
        thread.join()
