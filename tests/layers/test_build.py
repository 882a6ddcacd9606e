"""Layers of several wheels: assembled from per-wheel fragments, never repeating a path, reused by content."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from pyimage.cache import Cache
from pyimage.errors import BuildError
from pyimage.layers.build import LayerContext, build_layer, wheels_to_read
from pyimage.layers.conflicts import wheel_files
from pyimage.layers.paths import InstallPaths
from pyimage.layers.plan import LayerSpec
from pyimage.layers.tar import Owner
from pyimage.oci.check import check_image
from pyimage.oci.layout import write_layout
from pyimage.oci.model import Image, Layer
from pyimage.wheels import Wheel, read_wheel
from wheels_fixture import make_wheel

PATHS = InstallPaths("/opt/venv", "3.11")
SITE = "opt/venv/lib/python3.11/site-packages"


def members(layer: Layer) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.blob.read_bytes()))) as tar:
        return tar.getmembers()


def names(layer: Layer) -> list[str]:
    return [m.name for m in members(layer)]


def spec(*wheels: Wheel, kind: str = "site-packages", name: str = "site-packages") -> LayerSpec:
    return LayerSpec(name, kind, tuple(wheels))


def image_of(*layers: Layer) -> Image:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": layer.name, "comment": "pyimage"} for layer in layers],
    }
    return Image(config=config, layers=layers)


@pytest.fixture
def ctx(tmp_path: Path) -> LayerContext:
    return LayerContext(cache=Cache(tmp_path / "cache"), paths=PATHS)


@pytest.fixture
def namespace_wheels(tmp_path: Path) -> tuple[Wheel, Wheel]:
    """Two wheels of one pkgutil-style namespace: both ship ``ns/__init__.py`` (differently) and ``ns/py.typed``."""
    a = make_wheel(tmp_path / "w", "ns_a", files={"ns/__init__.py": b"# a\n", "ns/py.typed": b"", "ns/a/__init__.py": b"A = 1\n"})
    b = make_wheel(tmp_path / "w", "ns_b", files={"ns/__init__.py": b"# b\n", "ns/py.typed": b"", "ns/b/__init__.py": b"B = 1\n"})
    return read_wheel(a), read_wheel(b)


def test_a_layer_of_several_wheels_holds_each_directory_once_before_its_files(ctx: LayerContext, real_wheels: dict[str, Path]) -> None:
    layer = build_layer(spec(read_wheel(real_wheels["six"]), read_wheel(real_wheels["wheel"])), ctx)
    entries = names(layer)
    assert len(entries) == len(set(entries)), [n for n in entries if entries.count(n) > 1]
    dirs = [m.name for m in members(layer) if m.isdir()]
    assert dirs[:4] == ["opt", "opt/venv", "opt/venv/bin", "opt/venv/lib"]
    assert entries[: len(dirs)] == dirs  # every directory first, parents before children
    assert f"{SITE}/six.py" in entries and "opt/venv/bin/wheel" in entries


def test_a_file_two_wheels_ship_appears_once_and_the_first_wheel_keeps_it(ctx: LayerContext, namespace_wheels: tuple[Wheel, Wheel]) -> None:
    layer = build_layer(spec(*namespace_wheels), ctx)
    entries = names(layer)
    assert entries.count(f"{SITE}/ns/__init__.py") == 1
    assert entries.count(f"{SITE}/ns/py.typed") == 1
    assert f"{SITE}/ns/a/__init__.py" in entries and f"{SITE}/ns/b/__init__.py" in entries
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.blob.read_bytes()))) as tar:
        assert tar.extractfile(f"{SITE}/ns/__init__.py").read() == b"# a\n"  # type: ignore[union-attr]


def test_an_assembled_layer_passes_the_image_checker(ctx: LayerContext, namespace_wheels: tuple[Wheel, Wheel], real_wheels: dict[str, Path], tmp_path: Path) -> None:
    site = build_layer(spec(*namespace_wheels, read_wheel(real_wheels["six"])), ctx)
    heavy = build_layer(spec(read_wheel(real_wheels["wheel"]), kind="heavy", name="heavy:wheel"), ctx)
    write_layout(image_of(heavy, site), tmp_path / "layout", "t")
    report = check_image(tmp_path / "layout")
    assert report.ok, report.findings
    assert (report.manifests, report.layers) == (1, 2)


def test_the_same_wheels_give_the_same_layer_bytes_from_another_cache(namespace_wheels: tuple[Wheel, Wheel], tmp_path: Path) -> None:
    first = build_layer(spec(*namespace_wheels), LayerContext(cache=Cache(tmp_path / "c1"), paths=PATHS))
    second = build_layer(spec(*namespace_wheels), LayerContext(cache=Cache(tmp_path / "c2"), paths=PATHS))
    assert (first.digest, first.diff_id) == (second.digest, second.diff_id)
    assert first.blob.read_bytes() == second.blob.read_bytes()


def test_a_new_dependency_compresses_only_its_own_wheel(ctx: LayerContext, namespace_wheels: tuple[Wheel, Wheel], real_wheels: dict[str, Path]) -> None:
    six = read_wheel(real_wheels["six"])
    build_layer(spec(namespace_wheels[0], six), ctx)
    before = set((ctx.cache.root / "blobs" / "sha256").iterdir())
    grown = spec(namespace_wheels[0], read_wheel(real_wheels["wheel"]), six)
    for wheel in grown.wheels:  # the plan's conflict check records each wheel's file map
        wheel_files(wheel, PATHS, ctx.cache)
    assert [w.name for w in wheels_to_read([grown], ctx)] == ["wheel"]  # the fragments of ns_a and six are cached
    build_layer(grown, ctx)
    new = set((ctx.cache.root / "blobs" / "sha256").iterdir()) - before
    assert len(new) == 3  # wheel's fragment, the directory fragment and the assembled layer


def unfetched(wheel: Wheel) -> Wheel:
    """``wheel`` as the plan holds one whose file is not on this machine."""
    return replace(wheel, path=None)


def test_the_layer_stage_never_fetches_a_wheel_it_was_not_given(ctx: LayerContext, real_wheels: dict[str, Path]) -> None:
    six = unfetched(read_wheel(real_wheels["six"]))
    with pytest.raises(BuildError, match=r"must read six-.*\.whl, but it was not fetched"):
        build_layer(spec(six, kind="heavy", name="heavy:six"), ctx)
    with pytest.raises(BuildError, match=r"must read six-.*\.whl, but it was not fetched"):
        build_layer(spec(read_wheel(real_wheels["wheel"]), six), ctx)


def test_only_the_wheels_of_layers_that_miss_the_cache_are_to_be_read(ctx: LayerContext, real_wheels: dict[str, Path]) -> None:
    six, whl = read_wheel(real_wheels["six"]), read_wheel(real_wheels["wheel"])
    specs = [spec(six, kind="heavy", name="heavy:six"), spec(whl, kind="heavy", name="heavy:wheel")]
    assert {w.name for w in wheels_to_read(specs, ctx)} == {"six", "wheel"}
    for one in specs:
        build_layer(one, ctx)
    assert wheels_to_read(specs, ctx) == ()
    # every layer cached: built again from wheels that have no file here, as a pruned wheel cache leaves them
    assert [build_layer(replace(one, wheels=tuple(map(unfetched, one.wheels))), ctx).cached for one in specs] == [True, True]
    six_layer = build_layer(specs[0], ctx)
    ctx.cache.blob_path(six_layer.digest).unlink()  # one layer's blob pruned
    assert [w.name for w in wheels_to_read(specs, ctx)] == ["six"]


def test_a_fragment_that_repeats_a_path_is_read_unless_its_trimmed_fragment_is_cached(
    ctx: LayerContext, namespace_wheels: tuple[Wheel, Wheel], real_wheels: dict[str, Path]
) -> None:
    """ns_b repeats ns/py.typed of ns_a: in their layer its fragment is built without it, from ns_b's file."""
    ns_a, ns_b = namespace_wheels
    six = read_wheel(real_wheels["six"])
    build_layer(spec(ns_a, six), ctx)
    build_layer(spec(ns_b, six), ctx)  # each one's own fragment is cached; not ns_b's without ns_a's paths
    both = spec(ns_a, ns_b)
    assert [w.name for w in wheels_to_read([both], ctx)] == ["ns-b"]
    built = build_layer(both, ctx)
    ctx.cache.blob_path(built.digest).unlink()  # the assembled layer is gone, every fragment it needs is cached
    assert wheels_to_read([both], ctx) == ()
    rebuilt = build_layer(spec(*map(unfetched, both.wheels)), ctx)
    assert (rebuilt.digest, rebuilt.cached) == (built.digest, False)


def test_a_repeat_after_a_fragment_that_is_not_cached_counts_as_a_read(ctx: LayerContext, namespace_wheels: tuple[Wheel, Wheel], real_wheels: dict[str, Path]) -> None:
    """ns_a's fragment is missing, so what ns_b's repeats is not known exactly: ns_b is read too."""
    ns_a, ns_b = namespace_wheels
    build_layer(spec(ns_b, read_wheel(real_wheels["six"])), ctx)
    assert [w.name for w in wheels_to_read([spec(ns_a, ns_b)], ctx)] == ["ns-a", "ns-b"]


def test_owner_applies_to_directories_of_an_assembled_layer(tmp_path: Path, namespace_wheels: tuple[Wheel, Wheel]) -> None:
    ctx = LayerContext(cache=Cache(tmp_path / "c"), paths=PATHS, owner=Owner(1000, 1000))
    by_name = {m.name: m for m in members(build_layer(spec(*namespace_wheels), ctx))}
    assert (by_name["opt"].uid, by_name["opt/venv"].uid) == (0, 1000)
    assert by_name[f"{SITE}/ns"].uid == 1000 and by_name[f"{SITE}/ns"].isdir()


def test_a_wheel_that_installs_one_path_twice_is_refused(ctx: LayerContext, tmp_path: Path) -> None:
    from pyimage.errors import BuildError

    bad = make_wheel(tmp_path / "w", "twice", files={"twice.py": b"1\n", "twice-1.0.data/purelib/twice.py": b"2\n"})
    with pytest.raises(BuildError, match="twice.py is written twice in one layer"):
        build_layer(spec(read_wheel(bad), kind="heavy", name="heavy:twice"), ctx)


# -- the diff_id of a layer of several wheels: hashed as its parts are written, or inflated again ------------
def build_counting_inflates(wheels: tuple[Wheel, ...], cache: Path, monkeypatch: pytest.MonkeyPatch, *, maps: bool, compile_bytecode: bool = False) -> tuple[Layer, int]:
    """The layer of ``wheels`` built in a fresh ``cache`` (with the wheels' file maps recorded first when
    ``maps``, as the conflict check does in a build), and how many blobs were inflated to make it."""
    import pyimage.layers.build as build

    context = LayerContext(cache=Cache(cache), paths=PATHS, compile_bytecode=compile_bytecode)
    if maps:
        for wheel in wheels:
            wheel_files(wheel, PATHS, context.cache)
    inflated: list[Path] = []
    real = build.decompress_stream

    def counting(path: Path, media_type: str, *args: object) -> object:
        inflated.append(path)
        return real(path, media_type, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(build, "decompress_stream", counting)
    layer = build_layer(spec(*wheels), context)
    monkeypatch.setattr(build, "decompress_stream", real)
    return layer, len(inflated)


@pytest.mark.parametrize("compile_bytecode", [False, True])
def test_a_cold_layer_of_several_wheels_is_hashed_as_written_and_equals_the_inflated_one(
    real_wheels: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compile_bytecode: bool
) -> None:
    wheels = (read_wheel(real_wheels["six"]), read_wheel(real_wheels["wheel"]))
    streamed, inflates = build_counting_inflates(wheels, tmp_path / "a", monkeypatch, maps=True, compile_bytecode=compile_bytecode)
    assert inflates == 0  # the directories were known ahead from the file maps: no part read back
    again, inflates = build_counting_inflates(wheels, tmp_path / "b", monkeypatch, maps=False, compile_bytecode=compile_bytecode)
    assert inflates == 4  # directories, two fragments, end of archive
    assert (streamed.digest, streamed.diff_id, streamed.size, streamed.uncompressed_size) == (again.digest, again.diff_id, again.size, again.uncompressed_size)
    assert streamed.blob.read_bytes() == again.blob.read_bytes()
    assert streamed.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(streamed.blob.read_bytes())).hexdigest()
    assert any(name.endswith("/__pycache__") for name in names(streamed)) == compile_bytecode


def test_the_inflated_diff_id_is_used_when_the_directories_were_not_foreseen(
    tmp_path: Path, namespace_wheels: tuple[Wheel, Wheel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ways the directories known ahead can be wrong, each built both ways to the same bytes: a wheel
    repeating another's path (its fragment is written again without it) and, with bytecode, a directory whose
    only source does not compile (no ``__pycache__`` there)."""
    broken = read_wheel(make_wheel(tmp_path / "w", "broken", files={"broken/__init__.py": b"", "broken/old/legacy.py": b"print 'py2'\n"}))
    for wheels, compile_bytecode in ((namespace_wheels, False), ((namespace_wheels[0], broken), True)):
        predicted, inflates = build_counting_inflates(wheels, tmp_path / f"p{compile_bytecode}", monkeypatch, maps=True, compile_bytecode=compile_bytecode)
        assert inflates == 4
        plain, _ = build_counting_inflates(wheels, tmp_path / f"q{compile_bytecode}", monkeypatch, maps=False, compile_bytecode=compile_bytecode)
        assert (predicted.digest, predicted.diff_id, predicted.uncompressed_size) == (plain.digest, plain.diff_id, plain.uncompressed_size)
        assert predicted.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(predicted.blob.read_bytes())).hexdigest()


def test_plain_tar_layers_are_their_own_diff_id(real_wheels: dict[str, Path], tmp_path: Path) -> None:
    """`compression = "none"`: the blob is the tar (a layer of several wheels too: its fragments concatenate),
    so its digest is its diff_id and nothing is inflated to know it."""
    wheels = (read_wheel(real_wheels["six"]), read_wheel(real_wheels["wheel"]))
    plain_ctx = LayerContext(cache=Cache(tmp_path / "plain"), paths=PATHS, compression="none")
    plain = build_layer(spec(*wheels), plain_ctx)
    gz = build_layer(spec(*wheels), LayerContext(cache=Cache(tmp_path / "gz"), paths=PATHS))
    tar = plain.blob.read_bytes()
    assert plain.digest == plain.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest() == gz.diff_id
    assert tar == gzip.decompress(gz.blob.read_bytes())
    assert plain.descriptor.media_type == "application/vnd.oci.image.layer.v1.tar" and plain.uncompressed_size == len(tar) == plain.size
    single = build_layer(spec(wheels[0], kind="heavy", name="heavy:six"), plain_ctx)
    assert single.digest == single.diff_id == "sha256:" + hashlib.sha256(single.blob.read_bytes()).hexdigest()
    assert check_image(_layout(tmp_path, plain, single)).ok


def _layout(tmp_path: Path, *layers: Layer) -> Path:
    write_layout(image_of(*layers), tmp_path / "layout", "t")
    return tmp_path / "layout"
