"""Hostile ``oci:`` and ``docker-archive:`` bases: refused with one error line, nothing outside touched or read.

Every case builds a real project (offline, ~1 s) on a base layout or archive made by hand with one defect, and
checks: exit code 1, exactly one ``error:`` line (and its hint), a canary tree beside the cache and the output
unchanged, nothing of the canary in the cache, ``pyimage cache verify`` clean, and a rerun on a good base that
succeeds with the same cache.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from support.tiny import assert_one_error, run_pyimage, snapshot, tiny_base, tiny_project, verify_clean

SECRET = b'{"auths": {"registry.example": {"auth": "c2VjcmV0OnRva2Vu"}}}'


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@dataclass
class HandLayout:
    """An OCI layout as plain data (blobs by digest, index, manifest, config) that a case bends before writing."""

    blobs: dict[str, bytes]
    index: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]

    @classmethod
    def good(cls) -> "HandLayout":
        tar = _tar({"usr/bin/python3.11": b"#!not python\n"})
        layer = gzip.compress(tar, mtime=0)
        config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [_sha(tar)]}, "config": {}}
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "", "size": 0},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _sha(layer), "size": len(layer)}],
        }
        index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "", "size": 0, "annotations": {"org.opencontainers.image.ref.name": "base"}}]}
        return cls({_sha(layer): layer}, index, manifest, config)

    def write(self, directory: Path, seal: bool = True) -> Path:
        """Writes the layout; ``seal`` fills the config and manifest descriptors with their true digests first."""
        blobs = dict(self.blobs)
        if seal:
            config = json.dumps(self.config).encode()
            self.manifest["config"].update(digest=_sha(config), size=len(config))
            blobs[_sha(config)] = config
            manifest = json.dumps(self.manifest).encode()
            self.index["manifests"][0].update(digest=_sha(manifest), size=len(manifest))
            blobs[_sha(manifest)] = manifest
        (directory / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        for digest, data in blobs.items():
            (directory / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
        (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        (directory / "index.json").write_text(json.dumps(self.index))
        return directory


@dataclass
class World:
    root: Path
    project: Path
    cache: Path
    out: Path
    canary: Path
    good_base: str

    def build(self, base: str) -> Any:
        return run_pyimage("build", "-C", str(self.project), "--base", base, "-o", f"oci:{self.out}:t", cache=self.cache)


@pytest.fixture
def world(tmp_path: Path) -> World:
    canary = tmp_path / "canary"
    (canary / "home").mkdir(parents=True)
    (canary / "home" / ".bashrc").write_text("echo canary\n")
    (canary / "home" / "config.json").write_bytes(SECRET)
    return World(tmp_path, tiny_project(tmp_path / "project"), tmp_path / "cache", tmp_path / "out", canary, tiny_base(tmp_path / "good-base"))


def assert_refused_and_harmless(world: World, base: str, *needles: str) -> None:
    """The build on ``base`` fails with one error; nothing outside changed or leaked; the cache is clean and usable."""
    before = snapshot(world.canary)
    result = world.build(base)
    assert_one_error(result, 1, *needles)
    assert snapshot(world.canary) == before
    assert not world.out.exists(), "a refused build must not create its output"
    if world.cache.exists():
        for path in world.cache.rglob("*"):
            if path.is_file():
                assert SECRET not in path.read_bytes(), f"the canary secret leaked into {path}"
    verify_clean(world.cache)
    again = world.build(world.good_base)
    assert again.returncode == 0, again.stderr
    assert snapshot(world.canary) == before


# -- the traversal canary ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_symlink", [True, False], ids=["symlinked-blobs-dir", "plain"])
def test_traversal_digest_never_writes_outside(world: World, with_symlink: bool) -> None:
    """The reported attack: a layer digest ``sha256:../../../canary/home/.bashrc``. With ``blobs/sha256`` a symlink
    to a deeper directory, the traversal resolves inside the layout to the attacker's bytes, and the old writer
    put them at out/blobs/sha256/../../../canary/home/.bashrc: outside the output, over a host file."""
    hand = HandLayout.good()
    layer = hand.blobs.pop(hand.manifest["layers"][0]["digest"])
    hand.manifest["layers"][0]["digest"] = "sha256:../../../canary/home/.bashrc"
    base = hand.write(world.root / "evil-base")
    if with_symlink:
        real = base / "deep" / "a" / "b"
        real.mkdir(parents=True)
        for f in (base / "blobs" / "sha256").iterdir():
            f.rename(real / f.name)
        (base / "blobs" / "sha256").rmdir()
        (base / "blobs" / "sha256").symlink_to(real)
        (base / "deep" / "canary" / "home").mkdir(parents=True)
        (base / "deep" / "canary" / "home" / ".bashrc").write_bytes(layer)

    assert_refused_and_harmless(world, f"oci:{base}:base", "symlink" if with_symlink else "not a valid digest")


def test_config_digest_pointing_at_a_host_file_is_refused(world: World) -> None:
    hand = HandLayout.good()
    base = hand.write(world.root / "evil-base")
    manifest = json.loads((base / "blobs" / "sha256" / hand.index["manifests"][0]["digest"].split(":")[1]).read_text())
    manifest["config"]["digest"] = "sha256:../../../canary/home/config.json"
    data = json.dumps(manifest).encode()
    (base / "blobs" / "sha256" / _sha(data).split(":")[1]).write_bytes(data)
    hand.index["manifests"][0].update(digest=_sha(data), size=len(data))
    (base / "index.json").write_text(json.dumps(hand.index))

    assert_refused_and_harmless(world, f"oci:{base}:base", "not a valid digest")


def test_blob_that_is_a_symlink_to_a_host_file_is_refused(world: World) -> None:
    hand = HandLayout.good()
    base = hand.write(world.root / "evil-base")
    (digest,) = [d for d in hand.blobs if d == hand.manifest["layers"][0]["digest"]]
    blob = base / "blobs" / "sha256" / digest.split(":")[1]
    blob.unlink()
    blob.symlink_to(world.canary / "home" / "config.json")

    assert_refused_and_harmless(world, f"oci:{base}:base", "symlink")


def test_index_json_that_is_a_symlink_is_refused(world: World) -> None:
    base = HandLayout.good().write(world.root / "evil-base")
    (base / "index.json").rename(base / "real-index.json")
    (base / "index.json").symlink_to(base / "real-index.json")

    assert_refused_and_harmless(world, f"oci:{base}:base", "symlink")


# -- blobs that are not what their descriptors say ----------------------------------------------------------
def _tamper_layer(hand: HandLayout) -> None:
    digest = hand.manifest["layers"][0]["digest"]
    data = bytearray(hand.blobs[digest])
    data[len(data) // 2] ^= 0xFF
    hand.blobs[digest] = bytes(data)


def _wrong_diff_id(hand: HandLayout) -> None:
    hand.config["rootfs"]["diff_ids"] = [_sha(b"not this layer")]


def _missing_diff_id(hand: HandLayout) -> None:
    hand.config["rootfs"]["diff_ids"] = []


def _truncated_layer(hand: HandLayout) -> None:
    """The blob is cut short and its descriptor says the short size and digest: only the diff_id can tell."""
    old = hand.manifest["layers"][0]["digest"]
    short = hand.blobs.pop(old)[:-12]
    hand.blobs[_sha(short)] = short
    hand.manifest["layers"][0].update(digest=_sha(short), size=len(short))


def _size_lie(hand: HandLayout) -> None:
    hand.manifest["layers"][0]["size"] += 1000


def _no_size(hand: HandLayout) -> None:
    del hand.manifest["layers"][0]["size"]


def _no_media_type(hand: HandLayout) -> None:
    del hand.manifest["layers"][0]["mediaType"]


def _uppercase_digest(hand: HandLayout) -> None:
    hand.manifest["layers"][0]["digest"] = hand.manifest["layers"][0]["digest"].upper()


def _missing_blob(hand: HandLayout) -> None:
    hand.blobs.pop(hand.manifest["layers"][0]["digest"])


def _not_gzip(hand: HandLayout) -> None:
    junk = b"\x1f\x8b" + os.urandom(200)
    hand.blobs = {_sha(junk): junk}
    hand.manifest["layers"][0].update(digest=_sha(junk), size=len(junk))


def _too_many_layers(hand: HandLayout) -> None:
    layer = hand.manifest["layers"][0]
    hand.manifest["layers"] = [layer] * 5000
    hand.config["rootfs"]["diff_ids"] = hand.config["rootfs"]["diff_ids"] * 5000


CASES: dict[str, tuple[Callable[[HandLayout], None], str]] = {
    "tampered-layer": (_tamper_layer, "does not match its digest"),
    "wrong-diff-id": (_wrong_diff_id, "not the sha256:"),
    "missing-diff-id": (_missing_diff_id, "diff_ids"),
    "truncated-layer": (_truncated_layer, "diff_id"),
    "size-lie": (_size_lie, "bytes, not the"),
    "no-size": (_no_size, "size"),
    "no-media-type": (_no_media_type, "mediaType"),
    "uppercase-digest": (_uppercase_digest, "not a valid digest"),
    "missing-blob": (_missing_blob, "missing"),
    "not-gzip": (_not_gzip, "cannot be decompressed"),
    "too-many-layers": (_too_many_layers, "at most"),
}


@pytest.mark.parametrize("bend, needle", list(CASES.values()), ids=list(CASES))
def test_a_base_layout_that_lies_is_refused(world: World, bend: Callable[[HandLayout], None], needle: str) -> None:
    hand = HandLayout.good()
    bend(hand)
    base = hand.write(world.root / "bad-base")
    assert_refused_and_harmless(world, f"oci:{base}:base", needle)


def test_manifest_that_does_not_match_its_digest_is_refused(world: World) -> None:
    hand = HandLayout.good()
    base = hand.write(world.root / "bad-base")
    path = base / "blobs" / "sha256" / hand.index["manifests"][0]["digest"].split(":")[1]
    path.write_bytes(path.read_bytes().replace(b'"schemaVersion": 2', b'"schemaVersion": 2 '))
    assert_refused_and_harmless(world, f"oci:{base}:base", "does not match its digest")


def test_index_that_nests_itself_is_refused(world: World) -> None:
    base = world.root / "loop-base"
    (base / "blobs" / "sha256").mkdir(parents=True)
    (base / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    # an index blob that lists itself cannot exist (its digest would be its own input), so: two that list each other
    # cannot either; the reachable form is a chain deeper than any real image nests
    child: dict[str, Any] = {"schemaVersion": 2, "manifests": []}
    for _ in range(8):
        data = json.dumps(child).encode()
        (base / "blobs" / "sha256" / _sha(data).split(":")[1]).write_bytes(data)
        child = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": _sha(data), "size": len(data)}]}
    (base / "index.json").write_text(json.dumps(child))
    assert_refused_and_harmless(world, f"oci:{base}", "nested")


def test_huge_index_json_is_refused_without_reading_it_all(world: World) -> None:
    base = HandLayout.good().write(world.root / "huge-base")
    with open(base / "index.json", "w") as f:
        f.write('{"manifests": [' + ",".join(['{"a": 1}'] * 1_500_000) + "]}")
    assert_refused_and_harmless(world, f"oci:{base}", "more than")


def test_verified_base_blobs_are_read_once_then_trusted_from_the_cache(world: World) -> None:
    hand = HandLayout.good()
    base = hand.write(world.root / "base")
    assert world.build(f"oci:{base}:base").returncode == 0
    layer = hand.manifest["layers"][0]["digest"]
    assert (world.cache / "blobs" / "sha256" / layer.split(":")[1]).is_file()
    # the layout's blob is gone now; the verified copy in the cache serves the next build
    (base / "blobs" / "sha256" / layer.split(":")[1]).unlink()
    again = world.build(f"oci:{base}:base")
    assert again.returncode == 0, again.stderr


# -- docker-archive bases -----------------------------------------------------------------------------------------
def _archive(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None, cut_in: str = "") -> Path:
    """A tar of ``members`` (and symlink ``links``); ``cut_in`` names a member the file ends in the middle of."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    data = raw.getvalue()
    if cut_in:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            info = tar.getmember(cut_in)
        data = data[: info.offset_data + info.size // 2]
    path.write_bytes(data)
    return path


def _archive_members(diff_id: str | None = None) -> dict[str, bytes]:
    tar = _tar({"usr/bin/python3.11": b"#!not python\n"})
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id or _sha(tar)]}}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["x:1"], "Layers": ["abc/layer.tar"]}]).encode()
    return {"manifest.json": manifest, "config.json": config, "abc/layer.tar": tar}


def test_good_docker_archive_base_builds(world: World) -> None:
    archive = _archive(world.root / "base.tar", _archive_members())
    result = world.build(f"docker-archive:{archive}")
    assert result.returncode == 0, result.stderr


def test_docker_archive_with_a_symlinked_layer_member_is_refused(world: World) -> None:
    members = _archive_members()
    members.pop("abc/layer.tar")
    archive = _archive(world.root / "base.tar", members, links={"abc/layer.tar": "../../canary/home/config.json"})
    assert_refused_and_harmless(world, f"docker-archive:{archive}", "refused")


def test_truncated_docker_archive_is_refused(world: World) -> None:
    archive = _archive(world.root / "base.tar", _archive_members(), cut_in="abc/layer.tar")
    assert_refused_and_harmless(world, f"docker-archive:{archive}", str(archive))


def test_docker_archive_whose_diff_id_lies_is_refused(world: World) -> None:
    archive = _archive(world.root / "base.tar", _archive_members(diff_id=_sha(b"something else")))
    assert_refused_and_harmless(world, f"docker-archive:{archive}", "diff_id")


def test_docker_archive_without_manifest_is_refused(world: World) -> None:
    members = _archive_members()
    members.pop("manifest.json")
    archive = _archive(world.root / "base.tar", members)
    assert_refused_and_harmless(world, f"docker-archive:{archive}", "manifest.json")


def test_docker_archive_naming_a_layer_by_a_false_digest_is_refused(world: World) -> None:
    members = _archive_members()
    fake = "blobs/sha256/" + "ab" * 32
    members[fake] = members.pop("abc/layer.tar")
    manifest = json.loads(members["manifest.json"])
    manifest[0]["Layers"] = [fake]
    members["manifest.json"] = json.dumps(manifest).encode()
    archive = _archive(world.root / "base.tar", members)
    assert_refused_and_harmless(world, f"docker-archive:{archive}", "does not match its digest")
