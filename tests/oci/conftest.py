"""Fixtures for the registry tests: real registries and small real images, both from ``support.registry``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import pytest
from support.registry import (  # noqa: F401  (fixtures are registered by being imported here)
    Registry,
    make_image,
    make_layer,
    registry_factory,
    tls_files,
    token_signing_key,
)

from pyimage.oci.model import Image, Platform


@pytest.fixture
def layer_dir(tmp_path: Path) -> Path:
    return tmp_path / "layers"


@pytest.fixture
def image_factory(layer_dir: Path) -> Callable[..., Image]:
    """``make(layer_files..., platform=, label=)``: each positional argument is one layer's {path: bytes}."""

    def make(*layer_files: Mapping[str, bytes], platform: Platform = Platform(), label: str = "") -> Image:
        layers = [make_layer(layer_dir, files, name=f"layer{i}") for i, files in enumerate(layer_files)]
        return make_image(layers, platform, label)

    return make


@pytest.fixture
def registry(registry_factory: Callable[..., Registry]) -> Registry:  # noqa: F811
    """A plain-HTTP registry on loopback with htpasswd user alice."""
    return registry_factory()
