"""The lock file: the resolved wheel set as a PEP 751 named lock (``pylock.pyimage.toml``), reused while its
inputs are unchanged. ``pylock.toml`` belongs to the user's own tools (``uv export``, ``pip lock``): pyimage
never writes it, and moves a ``pylock.toml`` it wrote itself (before it used its own name) to its own name.

It travels: a wheel is recorded by the URL it is published at and its sha256; a dependency built here from an
sdist is recorded as that sdist (``sdist = {…}``, its index URL and sha256), never as the wheel in this
machine's cache; a file from a local find-links directory or ``file://`` index has no ``url`` and is found
again through pip's configuration by name, version and hash. No path of this machine is ever written.

``[tool.pyimage].inputs`` records a hash of everything resolution depends on (the project's Requires-Dist
and extras, the requirements file, pip's configuration, the target); a build whose inputs hash differs is
told the lock is stale and resolves again, never silently using the old pins.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from pyimage.errors import ConfigError
from pyimage.resolve.pip import Pin
from pyimage.resolve.target import Target

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Lock", "inputs_key", "read_lock", "write_lock", "written_by_pyimage", "pip_config_fingerprint"]

_PIP_CONFIG_FILES = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "~/.config/pip/pip.conf", "~/.pip/pip.conf")


def pip_config_fingerprint() -> str:
    """Hash of what pip's configuration can change: ``PIP_*`` variables and the config files' contents."""
    h = hashlib.sha256()
    for key in sorted(k for k in os.environ if k.startswith("PIP_")):
        h.update(f"{key}={os.environ[key]}\n".encode())
    files = list(_PIP_CONFIG_FILES)
    files += [f"{d}/pip/pip.conf" for d in os.environ.get("XDG_CONFIG_DIRS", "").split(":") if d]
    for env in ("PIP_CONFIG_FILE", "VIRTUAL_ENV"):
        if os.environ.get(env):
            files.append(os.environ[env] if env == "PIP_CONFIG_FILE" else f"{os.environ[env]}/pip.conf")
    for name in files:
        path = Path(name).expanduser()
        if path.is_file():
            h.update(name.encode() + b"\0" + path.read_bytes())
            for line in path.read_text(errors="replace").splitlines():  # constraint files named in the config
                key, _, value = line.partition("=")
                if key.strip() in ("constraint", "constraints") and Path(value.strip()).is_file():
                    h.update(Path(value.strip()).read_bytes())
    return h.hexdigest()


def inputs_key(requires_dist: Sequence[str], extras: Sequence[str], requirements_text: str, target: Target) -> str:
    material = {
        "requires": sorted(requires_dist),
        "extras": sorted(extras),
        "requirements": requirements_text,
        "pip": pip_config_fingerprint(),
        "target": [target.python, str(target.platform), target.libc, target.libc_version],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class Lock:
    def __init__(self, pins: list[Pin], inputs: str) -> None:
        self.pins, self.inputs = pins, inputs


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def write_lock(path: Path, pins: Sequence[Pin], inputs: str, target: Target) -> None:
    lines = [
        "# Written by pyimage: the resolved wheel set for the image (PEP 751). Refresh with `pyimage lock`.",
        "# A file without a url came from a local find-links directory or file:// index: pip's configuration finds it",
        "# again by name, version and sha256. An sdist entry is a dependency without a wheel, built for the target.",
        'lock-version = "1.0"',
        'created-by = "pyimage"',
        f"requires-python = {_q('==' + target.python + '.*')}",
        "",
    ]
    for pin in pins:
        if pin.url.startswith("file:") or not pin.sha256:
            raise ConfigError(
                f"{pin.name} {pin.version}: {pin.url or pin.filename} is a file of this machine (or has no hash), so {path.name} would not work elsewhere; not writing it",
                "report this with --debug output",
            )
        lines += ["[[packages]]", f"name = {_q(pin.name)}", f"version = {_q(pin.version)}"]
        url = f"url = {_q(pin.url)}, " if pin.url else ""
        entry = f"{{ name = {_q(pin.filename)}, {url}hashes = {{ sha256 = {_q(pin.sha256)} }} }}"
        lines += [f"sdist = {entry}", ""] if pin.is_sdist else ["wheels = [", f"  {entry},", "]", ""]
    lines += ["[tool.pyimage]", f"inputs = {_q(inputs)}", f"target = {_q(target.describe())}", ""]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)


def written_by_pyimage(path: Path) -> bool:
    """Whether the lock at ``path`` is one pyimage wrote (``created-by = "pyimage"``), not a user's or another
    tool's (``uv export``, ``pip lock``), which pyimage never rewrites."""
    try:
        return tomllib.loads(path.read_text()).get("created-by") == "pyimage"
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def read_lock(path: Path) -> Lock | None:
    if not path.exists():
        return None
    try:
        data = tomllib.loads(path.read_text())
        pins = []
        for pkg in data.get("packages", []):
            file = pkg["wheels"][0] if pkg.get("wheels") else pkg["sdist"]
            pins.append(Pin(pkg["name"], pkg["version"], file["name"], file.get("url", ""), file["hashes"]["sha256"]))
        return Lock(pins, data.get("tool", {}).get("pyimage", {}).get("inputs", ""))
    except (tomllib.TOMLDecodeError, KeyError, IndexError, TypeError) as exc:
        raise ConfigError(f"{path}: not a lock file pyimage can read ({exc})", "delete it and run `pyimage lock`") from exc
