"""pyimage's own lock: the resolved wheel set as a PEP 751 named lock (``pylock.pyimage.toml``), reused while its
inputs are unchanged. It is written only when the project has no lock of its own (``resolve/lockinput.py``).

One file holds every target platform: each package entry carries the platform's marker and
``tool.pyimage.target``, and ``[tool.pyimage.targets."linux/arm64"]`` that platform's inputs hash, so building
for one platform never rewrites another's entries.

It travels: a wheel is recorded by the URL it is published at and its sha256; a dependency built here from an
sdist is recorded as that sdist (``sdist = {…}``, its index URL and sha256), never as the wheel in this
machine's cache; a file from a local find-links directory or ``file://`` index has no ``url`` and is found
again through pip's configuration by name, version and hash. A first-party package built from the workspace (a
member, a path dependency) is a ``directory`` entry whose path is relative to the lock, with
``tool.pyimage.workspace = true``: it is built from its sources each time, never pinned to a file. No path of
this machine is ever written.

Each target's ``inputs`` records a hash of everything resolution depends on (the project's Requires-Dist
and extras, the requirements file, pip's configuration, the target); a build whose inputs hash differs is
told the lock is stale and resolves again, never silently using the old pins.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import pyimage.atomic as atomic
from pyimage.errors import ConfigError
from pyimage.resolve.pip import Pin
from pyimage.resolve.target import Target

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Lock", "inputs_key", "locked_python", "read_lock", "target_table", "write_lock", "pip_config_fingerprint"]

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


def inputs_key(requires_dist: Sequence[str], extras: Sequence[str], requirements_text: str, target: Target, uv_sources: str = "") -> str:
    material = {
        "requires": sorted(requires_dist),
        "extras": sorted(extras),
        "requirements": requirements_text,
        "pip": pip_config_fingerprint(),
        "target": [target.python, str(target.platform), target.libc, target.libc_version],
    }
    if uv_sources:  # only projects declaring uv indexes: every other lock keeps its key
        material["uv-sources"] = uv_sources
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class Lock:
    def __init__(self, pins: list[Pin], inputs: str, legacy: bool = False, declared: str = "") -> None:
        self.pins, self.inputs, self.legacy = pins, inputs, legacy  # legacy: the old single-target form
        self.declared = declared  # what the project asked of the resolver (pins.declared_digest); "" before 2026-11-25


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def target_key(target: Target) -> str:
    """What one lock entry is for: the platform (its Python and libc are in the entry's inputs hash)."""
    return str(target.platform)


def _marker(target: Target) -> str:
    """A PEP 508 marker other tools can select this target's entries by (libc is not expressible)."""
    return f"sys_platform == 'linux' and platform_machine == '{target.machine}' and python_version == '{target.python}'"


def _read_table(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a lock file pyimage can read ({exc})", "delete it and run `pyimage lock`") from exc


def _package_lines(pin: Pin, path: Path, key: str, marker: str) -> list[str]:
    if pin.url.startswith("file:") or not pin.sha256:
        raise ConfigError(
            f"{pin.name} {pin.version}: {pin.url or pin.filename} is a file of this machine (or has no hash), so {path.name} would not work elsewhere; not writing it",
            "report this with --debug output",
        )
    lines = ["[[packages]]", f"name = {_q(pin.name)}", f"version = {_q(pin.version)}", f"marker = {_q(marker)}"]
    url = f"url = {_q(pin.url)}, " if pin.url else ""
    entry = f"{{ name = {_q(pin.filename)}, {url}hashes = {{ sha256 = {_q(pin.sha256)} }} }}"
    lines += [f"sdist = {entry}"] if pin.is_sdist else ["wheels = [", f"  {entry},", "]"]
    return lines + [f"tool.pyimage.target = {_q(key)}", ""]


def _local_lines(name: str, rel: str, key: str, marker: str) -> list[str]:
    """A first-party package's entry: its directory relative to the lock, no version (PEP 751 lets a source tree
    omit it; a VCS-derived version would otherwise rewrite the lock on every commit)."""
    return [
        "[[packages]]", f"name = {_q(name)}", f"marker = {_q(marker)}",
        f"directory = {{ path = {_q(rel)} }}", "tool.pyimage.workspace = true", f"tool.pyimage.target = {_q(key)}", "",
    ]


def _pin_of(pkg: dict) -> Pin:
    file = pkg["wheels"][0] if pkg.get("wheels") else pkg["sdist"]
    return Pin(pkg["name"], pkg["version"], file["name"], file.get("url", ""), file["hashes"]["sha256"])


def write_lock(path: Path, pins: Sequence[Pin], inputs: str, target: Target, local: Sequence[tuple[str, str]] = (), declared: str = "") -> None:
    """Writes ``target``'s entries into ``path``, keeping every other platform's entries as they are, so
    building for amd64 and then arm64 leaves the amd64 entries (and, unchanged, the whole file) alone.
    ``local``: (name, directory relative to the lock) of each package built from the workspace. ``declared``:
    the digest of what the project asked (``requires-digest``), by which the next build can tell from
    pyproject.toml alone, before its wheel is built, that the lock is stale."""
    key = target_key(target)
    for name, rel in local:
        if rel.startswith("/") or "\\" in rel:
            raise ConfigError(f"{name}: {rel} is not a path relative to {path.name}; not writing it", "report this with --debug output")
    others: dict[str, tuple[dict, list[Pin], str]] = {}  # target key -> (its table, its pins, its marker)
    others_local: dict[str, list[tuple[str, str]]] = {}
    if path.exists():
        data = _read_table(path)
        targets = data.get("tool", {}).get("pyimage", {}).get("targets", {})
        for other, table in targets.items() if isinstance(targets, dict) else ():
            if other != key and isinstance(table, dict):
                entries = [p for p in data.get("packages", []) if p.get("tool", {}).get("pyimage", {}).get("target") == other]
                try:
                    others_local[other] = [(p["name"], p["directory"]["path"]) for p in entries if "directory" in p]
                    entries = [p for p in entries if "directory" not in p]
                    others[other] = (table, [_pin_of(p) for p in entries], entries[0]["marker"] if entries else "")
                except (KeyError, IndexError, TypeError):
                    continue  # an entry this version cannot read: resolved again when that platform is built
    tables = {**{k: v[0] for k, v in others.items()}, key: {"inputs": inputs, "target": target.describe(), "marker": _marker(target), **({"requires-digest": declared} if declared else {})}}
    lines = [
        "# Written by pyimage: the resolved wheel set for the image (PEP 751), one entry per package and target",
        "# platform (its marker). Refresh with `pyimage lock`. A file without a url came from a local find-links",
        "# directory or file:// index: pip's configuration finds it again by name, version and sha256. An sdist",
        "# entry is a dependency without a wheel, built for the target.",
        'lock-version = "1.0"',
        'created-by = "pyimage"',
        "",
    ]
    for k in sorted(tables):
        entry_pins, marker = (pins, _marker(target)) if k == key else (others[k][1], str(tables[k].get("marker") or others[k][2]))
        for pin in sorted(entry_pins, key=lambda p: p.name):
            lines += _package_lines(pin, path, k, marker)
        for name, rel in sorted(local if k == key else others_local.get(k, [])):
            lines += _local_lines(name, rel, k, marker)
    for k in sorted(tables):
        lines.append(f"[tool.pyimage.targets.{_q(k)}]")
        lines += [f"{name} = {_q(str(value))}" for name, value in sorted(tables[k].items())]
        lines.append("")
    atomic.write_text(path, "\n".join(lines), path.with_name(f".{path.name}.tmp"))


def target_table(path: Path, platform: object) -> dict[str, str]:
    """The ``[tool.pyimage.targets."<platform>"]`` table of the lock at ``path`` as ``write_lock`` writes it (one
    ``key = "value"`` a line), read without parsing the whole file (a 200-package lock is 20 ms of tomllib): what a
    build checks before it loads the base. Empty when there is no such table or file."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    head = text.find(f"[tool.pyimage.targets.{_q(str(platform))}]\n")
    if head < 0:
        return {}
    table: dict[str, str] = {}
    for line in text[head:].splitlines()[1:]:
        found = re.fullmatch(r'([A-Za-z0-9_-]+) = ("(?:[^"\\]|\\.)*")', line)
        if found is None:
            break
        try:
            table[found.group(1)] = json.loads(found.group(2))
        except ValueError:
            break
    return table


def locked_python(path: Path, platform: object) -> str | None:
    """The Python version (``3.11``) the lock at ``path`` was resolved for on ``platform`` (from its entry's
    marker), so the app wheel can be built for it before the base says; None when there is no such entry."""
    found = re.search(r"python_version == '(\d+\.\d+)'", target_table(path, platform).get("marker", ""))
    return found.group(1) if found else None


def read_lock(path: Path, target: Target | None = None) -> Lock | None:
    """``target``'s entries of the lock at ``path`` (None: no lock, or no entry for it). A lock of the old
    single-target form (``[tool.pyimage] inputs``) is read whole: its inputs hash says whether it fits."""
    if not path.exists():
        return None
    data = _read_table(path)
    try:
        tool = data.get("tool", {}).get("pyimage", {})
        if "targets" not in tool:
            return Lock([_pin_of(p) for p in data.get("packages", [])], tool.get("inputs", ""), legacy=True)
        # first-party packages (``directory`` entries) are built from the workspace, not pinned
        key = target_key(target) if target is not None else next(iter(tool["targets"]), "")
        table = tool["targets"].get(key)
        if not isinstance(table, dict):
            return None
        entries = [p for p in data.get("packages", []) if p.get("tool", {}).get("pyimage", {}).get("target") == key and "directory" not in p]
        return Lock([_pin_of(p) for p in entries], str(table.get("inputs", "")), declared=str(table.get("requires-digest", "")))
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a lock file pyimage can read ({exc})", "delete it and run `pyimage lock`") from exc
