"""The image checker finds what strict engines refuse: repeated paths, misordered parents, bad blobs and documents."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from pyimage.layers.tar import TarWriter
from pyimage.oci.check import check_image
from pyimage.oci.dockerarchive import write_docker_archive
from pyimage.oci.layout import write_layout
from pyimage.oci.model import MEDIA_OCI_LAYER_GZIP, Descriptor, Image, Layer


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_from_tar(raw: bytes, where: Path, name: str = "site-packages") -> Layer:
    blob = gzip.compress(raw, mtime=0)
    path = where / sha(blob)[7:]
    where.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return Layer(name, Descriptor(MEDIA_OCI_LAYER_GZIP, sha(blob), len(blob)), sha(raw), path, history=f"pyimage: {name}")


def tar_of(*streams: list[tuple[str, bytes | None]]) -> bytes:
    """Concatenated TarWriter streams (each writes its own parents), then the end-of-archive blocks."""
    out = io.BytesIO()
    for entries in streams:
        tw = TarWriter(out)
        for path, data in entries:
            if data is None:
                tw.add_dir(path)
            else:
                tw.add_bytes(path, data)
    out.write(b"\0" * 1024)
    return out.getvalue()


def image_of(*layers: Layer, **config_overrides: object) -> Image:
    config: dict[str, object] = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": layer.history, "comment": "pyimage"} for layer in layers],
    }
    config.update(config_overrides)
    return Image(config=config, layers=layers)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    layer = layer_from_tar(tar_of([("opt/venv/a.py", b"a\n"), ("opt/venv/b.py", b"b\n")]), tmp_path / "blobs")
    write_layout(image_of(layer), tmp_path / "good", "t")
    return tmp_path / "good"


def blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.partition(":")[2]


def only_manifest(layout: Path) -> dict:
    index = json.loads((layout / "index.json").read_text())
    return json.loads(blob_path(layout, index["manifests"][0]["digest"]).read_bytes())


def test_a_well_formed_layout_passes(good: Path) -> None:
    report = check_image(good)
    assert report.ok, report.findings
    assert (report.manifests, report.layers, report.blobs) == (1, 1, 3)


def test_fragments_that_each_repeat_their_parent_directories_are_found(tmp_path: Path) -> None:
    # What pyimage wrote before 0.1: each wheel's fragment carried opt/, opt/venv/, ... of its own.
    raw = tar_of([("opt/venv/site/a.py", b"a\n")], [("opt/venv/site/b.py", b"b\n")])
    write_layout(image_of(layer_from_tar(raw, tmp_path / "blobs")), tmp_path / "l", "t")
    report = check_image(tmp_path / "l")
    assert not report.ok
    assert any("/opt appears more than once" in f for f in report.findings), report.findings
    assert any("/opt/venv/site appears more than once" in f for f in report.findings)


def test_a_directory_after_the_files_inside_it_is_found(tmp_path: Path) -> None:
    out = io.BytesIO()
    for name, kind in (("app/x.py", tarfile.REGTYPE), ("app/", tarfile.DIRTYPE)):
        info = tarfile.TarInfo(name)
        info.type = kind
        out.write(info.tobuf(tarfile.PAX_FORMAT))
    out.write(b"\0" * 1024)
    write_layout(image_of(layer_from_tar(out.getvalue(), tmp_path / "blobs")), tmp_path / "l", "t")
    assert any("directory /app comes after entries inside it" in f for f in check_image(tmp_path / "l").findings)


def test_a_whiteout_in_a_layer_pyimage_wrote_is_found(tmp_path: Path) -> None:
    raw = tar_of([("etc/.wh.passwd", b"")])
    write_layout(image_of(layer_from_tar(raw, tmp_path / "blobs")), tmp_path / "l", "t")
    assert any("/etc/.wh.passwd is a whiteout" in f for f in check_image(tmp_path / "l").findings)


@pytest.mark.parametrize(("tag", "ok"), [("1.0", True), ("v2.0-rc1_x", True), ("tëst", False), ("bad tag!", False), (".x", False)])
def test_a_tag_skopeo_and_engines_refuse_is_found(tmp_path: Path, tag: str, ok: bool) -> None:
    """A new-user trial: a layout tagged 'tëst' passed the check, then skopeo refused `oci:DIR:tëst`."""
    layer = layer_from_tar(tar_of([("a.txt", b"a\n")]), tmp_path / "blobs")
    write_layout(image_of(layer), tmp_path / "l", tag)
    findings = check_image(tmp_path / "l").findings
    assert (not any("outside the image-spec's grammar" in f for f in findings)) == ok, findings


def test_a_corrupt_blob_is_found(good: Path) -> None:
    layer = blob_path(good, only_manifest(good)["layers"][0]["digest"])
    data = bytearray(layer.read_bytes())
    data[20] ^= 0xFF
    os.chmod(layer, 0o644)
    layer.write_bytes(bytes(data))
    assert any("does not match its digest" in f for f in check_image(good).findings)


def test_a_missing_blob_is_found(good: Path) -> None:
    blob_path(good, only_manifest(good)["layers"][0]["digest"]).unlink()
    assert any("is missing" in f for f in check_image(good).findings)


def test_a_diff_id_that_does_not_match_the_layer_is_found(tmp_path: Path) -> None:
    layer = layer_from_tar(tar_of([("a", b"1")]), tmp_path / "blobs")
    wrong = "sha256:" + "0" * 64
    write_layout(image_of(layer, rootfs={"type": "layers", "diff_ids": [wrong]}), tmp_path / "l", "t")
    assert any(f"the config says {wrong}" in f for f in check_image(tmp_path / "l").findings)


def test_a_config_without_os_fails_the_schema(tmp_path: Path) -> None:
    layer = layer_from_tar(tar_of([("a", b"1")]), tmp_path / "blobs")
    image = image_of(layer)
    write_layout(Image(config={k: v for k, v in image.config.items() if k != "os"}, layers=image.layers), tmp_path / "l", "t")
    assert any("'os' is a required property" in f for f in check_image(tmp_path / "l").findings)


def test_a_digest_that_climbs_out_of_the_layout_is_a_finding_and_nothing_outside_is_read(tmp_path: Path, good: Path) -> None:
    canary = tmp_path / "secret"
    canary.write_text("do not read")
    index = json.loads((good / "index.json").read_text())
    index["manifests"][0]["digest"] = "sha256:../../../secret"
    (good / "index.json").write_text(json.dumps(index))
    report = check_image(good)
    assert any("sha256:../../../secret" in f and "does not match" in f for f in report.findings), report.findings
    assert canary.read_text() == "do not read"


def test_a_digest_the_schema_allows_but_that_is_not_hex_is_refused_before_any_path_is_made(good: Path) -> None:
    index = json.loads((good / "index.json").read_text())
    index["manifests"][0]["digest"] = "sha256:" + "A" * 64
    (good / "index.json").write_text(json.dumps(index))
    assert any("is not sha256:<64 hex>" in f for f in check_image(good).findings)


def test_a_blob_that_is_a_symlink_is_refused(tmp_path: Path, good: Path) -> None:
    layer = blob_path(good, only_manifest(good)["layers"][0]["digest"])
    outside = tmp_path / "outside"
    outside.write_bytes(layer.read_bytes())
    layer.unlink()
    layer.symlink_to(outside)
    assert any("is a symbolic link" in f for f in check_image(good).findings)


def test_a_docker_archive_is_checked_in_both_of_its_formats(tmp_path: Path) -> None:
    layer = layer_from_tar(tar_of([("opt/a", b"a")]), tmp_path / "blobs")
    write_docker_archive(image_of(layer), tmp_path / "app.tar", "app:1")
    report = check_image(tmp_path / "app.tar")
    assert report.ok, report.findings
    assert report.layers == 1


def test_something_that_is_not_an_image_is_one_finding(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    report = check_image(tmp_path / "notes.txt")
    assert len(report.findings) == 1 and "neither an OCI layout directory nor a readable tar archive" in report.findings[0]


def _inspect_check(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "pyimage", "inspect", "--check", *args], capture_output=True, text=True)


def test_inspect_check_prints_each_finding_and_fails(tmp_path: Path) -> None:
    raw = tar_of([("opt/a.py", b"a\n")], [("opt/b.py", b"b\n")])
    write_layout(image_of(layer_from_tar(raw, tmp_path / "blobs")), tmp_path / "l", "t")
    done = _inspect_check(f"oci:{tmp_path / 'l'}:t")
    assert done.returncode == 1
    assert "/opt appears more than once" in done.stdout
    assert done.stderr.strip().splitlines()[-2].startswith("error: ") and "1 problem(s) found" in done.stderr


def test_inspect_check_passes_a_good_archive_with_json(tmp_path: Path) -> None:
    write_docker_archive(image_of(layer_from_tar(tar_of([("opt/a", b"a")]), tmp_path / "blobs")), tmp_path / "app.tar", "app:1")
    done = _inspect_check(f"docker-archive:{tmp_path / 'app.tar'}")
    assert done.returncode == 0 and done.stdout == f"checked {tmp_path / 'app.tar'}: 1 manifest(s), 1 layer(s), 3 blob(s)\n"  # a result: stdout
    done = _inspect_check(f"docker-archive:{tmp_path / 'app.tar'}", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"version": 1, "image": str(tmp_path / "app.tar"), "ok": True, "manifests": 1, "layers": 1, "blobs": 3, "findings": []}
