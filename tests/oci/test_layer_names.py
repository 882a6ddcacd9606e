"""``layer_names``: the names ``inspect`` and ``build --json`` give an image's layers, read from its history."""

from __future__ import annotations

from pyimage.oci.model import layer_names


def config(*lines: str) -> dict:
    return {"history": [{"created_by": line} for line in lines]}


def test_a_pyimage_image_names_its_layers_and_calls_the_rest_base() -> None:
    names = layer_names(config("debootstrap", "pyimage: heavy:numpy", "pyimage: site-packages", "pyimage: app"), 4)
    assert names == [("base", "debootstrap"), ("heavy:numpy", ""), ("site-packages", ""), ("app", "")]


def test_a_pyimage_built_base_is_base_not_this_builds_layers() -> None:
    """Built on an image pyimage made: the base's own app and site-packages layers are the base's."""
    lines = ("rootfs:bookworm.tar", "pyimage: site-packages", "pyimage: app", "pyimage: heavy:torch", "pyimage: site-packages", "pyimage: app")
    names = layer_names(config(*lines), 6)
    assert names == [
        ("base", "rootfs:bookworm.tar"), ("base", "pyimage: site-packages"), ("base", "pyimage: app"),
        ("heavy:torch", ""), ("site-packages", ""), ("app", ""),
    ]  # fmt: skip


def test_another_tools_layers_on_top_keep_their_lines() -> None:
    """A Dockerfile FROM a pyimage image: its own layer keeps its history line; pyimage's keep their names."""
    names = layer_names(config("debootstrap", "pyimage: app", "COPY . /srv"), 3)
    assert names == [("base", "debootstrap"), ("app", ""), ("COPY . /srv", "")]


def test_an_image_pyimage_did_not_build_keeps_its_lines_and_a_mismatch_names_nothing() -> None:
    assert layer_names(config("ADD rootfs", "RUN pip install"), 2) == [("ADD rootfs", ""), ("RUN pip install", "")]
    assert layer_names(config("ADD rootfs"), 2) == [("", ""), ("", "")]
