"""Fixtures for the registry tests: real registries (from ``support.registry``) and small real images.

Images are built here from scratch: gzip'd tar layers written with ``tarfile`` and an OCI config whose
``rootfs.diff_ids`` match, so skopeo and umoci accept what gets pushed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pytest
from support.registry import Registry, registry_factory, tls_files, token_signing_key  # noqa: F401

from pyimage.oci.auth import Credentials
from pyimage.oci.model import MEDIA_OCI_LAYER_GZIP, Descriptor, Image, Layer, Platform
from pyimage.oci.registry import RegistryClient

ImageFactory = Callable[..., Image]


def make_layer(directory: Path, files: Mapping[str, bytes], name: str = "app") -> Layer:
    """A deterministic gzip'd tar layer of ``files`` (path → content), with its parent directories."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in files if str(Path(p).parent) != "."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    blob = gzip.compress(tar_bytes, compresslevel=1, mtime=0)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / digest.split(":")[1]
    path.write_bytes(blob)
    return Layer(name, Descriptor(MEDIA_OCI_LAYER_GZIP, digest, len(blob)),
                 "sha256:" + hashlib.sha256(tar_bytes).hexdigest(), path)


def make_image(layers: Sequence[Layer], platform: Platform = Platform(), label: str = "") -> Image:
    config = {
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {"Cmd": ["/bin/sh"], "Labels": {"test": label} if label else {}},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": f"pyimage test layer {layer.name}"} for layer in layers],
    }
    if platform.variant:
        config["variant"] = platform.variant
    return Image(config=config, layers=tuple(layers))


@pytest.fixture
def layer_dir(tmp_path: Path) -> Path:
    return tmp_path / "layers"


@pytest.fixture
def image_factory(layer_dir: Path) -> ImageFactory:
    """``make(layer_files..., platform=, label=)``: each positional argument is one layer's {path: bytes}."""

    def make(*layer_files: Mapping[str, bytes], platform: Platform = Platform(), label: str = "") -> Image:
        layers = [make_layer(layer_dir, files, name=f"layer{i}") for i, files in enumerate(layer_files)]
        return make_image(layers, platform, label)

    return make


@pytest.fixture
def registry(registry_factory: Callable[..., Registry]) -> Registry:  # noqa: F811
    """A plain-HTTP registry on loopback with htpasswd user alice."""
    return registry_factory()


def client_factory_for(
    reg: Registry, user: str | None = None, **kwargs: object
) -> Callable[[str], RegistryClient]:
    """A factory giving clients with ``user``'s credentials and fast retries (tests must not sleep long)."""
    name = user or next(iter(reg.users))
    options: dict[str, object] = {"retries": 2, "backoff": 0.05, "backoff_cap": 0.2}
    options.update(kwargs)
    creds = Credentials(name, reg.users[name], source="test") if name in reg.users else None

    def make(host: str) -> RegistryClient:
        return RegistryClient(host, credentials=creds, **options)  # type: ignore[arg-type]

    return make


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, check=check, timeout=60)


def skopeo_inspect(reg: Registry, ref: str, *, raw: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
    args = ["inspect", "--tls-verify=false", "--creds", reg.creds(), *(["--raw"] if raw else []), f"docker://{ref}"]
    return skopeo(*args, check=check)


def inspect_json(reg: Registry, ref: str) -> dict[str, object]:
    return json.loads(skopeo_inspect(reg, ref).stdout)
