"""The ``[tool.pyimage]`` schema: keys, types, defaults, and errors that name the key, the file and the line.

Values come from pyproject.toml, then from command-line overrides (a flag wins). ``Config`` is the checked,
typed result; nothing downstream reads raw TOML.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from pyimage.errors import ConfigError
from pyimage.layers.plan import MAX_LAYERS_DEFAULT, HeavyGroup, normalize_pattern
from pyimage.layers.tar import Owner
from pyimage.oci.model import Platform

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Config", "KEYS", "load_config", "parse_size", "DEFAULT_BASE"]

DEFAULT_BASE = "docker.io/library/python:3.12-slim"
DEFAULT_THRESHOLD = "100MB"  # torch, tensorflow, jaxlib, nvidia-* get a layer of their own; numpy does not


def parse_size(value: Any) -> int:
    """``123``, ``"200MB"``, ``"1.5GiB"`` -> bytes."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(value)
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", str(value), re.IGNORECASE)
    if not m:
        raise ValueError(value)
    power = " KMGT".index(m.group(2).upper() or " ")
    return int(float(m.group(1)) * (1024 if m.group(3) else 1000) ** power)


@dataclass(frozen=True)
class Key:
    kind: str  # human-readable type, used in errors and the README
    default: Any
    doc: str
    check: Callable[[Any], Any]


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError
    return v


def _opt_str(v: Any) -> str | None:
    return None if v in (None, "") else _str(v)


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return v.lower() in ("1", "true", "yes", "on")
    raise ValueError


def _int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError
    return int(v)


def _argv(v: Any) -> tuple[str, ...] | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = v.strip()
        if v.startswith("["):
            v = json.loads(v)
        else:
            return tuple(shlex.split(v))
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(v)
    raise ValueError


def _str_list(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        return tuple(x.strip() for x in v.split(",") if x.strip())
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(v)
    raise ValueError


def _table(v: Any) -> dict[str, str]:
    if isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, (str, int, float, bool)) for k, x in v.items()):
        return {k: (str(x).lower() if isinstance(x, bool) else str(x)) for k, x in v.items()}
    raise ValueError


def _heavy(v: Any) -> tuple[HeavyGroup, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list):
        raise ValueError
    groups = []
    for item in v:
        if isinstance(item, str) and item.strip():
            groups.append(HeavyGroup(item.strip(), (item.strip(),)))
        elif isinstance(item, dict) and set(item) <= {"name", "packages"} and isinstance(item.get("name"), str):
            packages = item.get("packages", [item["name"]])
            if isinstance(packages, str):
                packages = [packages]
            if not packages or not all(isinstance(p, str) and p for p in packages):
                raise ValueError
            groups.append(HeavyGroup(item["name"], tuple(packages)))
        else:
            raise ValueError
    names = [normalize_pattern(g.name) for g in groups]
    if len(set(names)) != len(names):
        raise ValueError
    return tuple(groups)


def _choice(*options: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise ValueError
        return v

    return check


def _platforms(v: Any) -> tuple[Platform, ...]:
    """``"linux/amd64"``, ``"linux/amd64,linux/arm64"`` or a list of them; each once, at least one."""
    items = [x.strip() for x in v.split(",")] if isinstance(v, str) else v
    if not isinstance(items, list) or not items or not all(isinstance(x, str) and x for x in items):
        raise ValueError
    platforms = tuple(Platform.parse(x) for x in items)
    if len(set(platforms)) != len(platforms):
        raise ValueError
    return platforms


PER_PLATFORM_KEYS = ("base", "interpreter", "interpreter-sha256")


def _per_platform(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A key that also takes a table keyed by platform: ``{ "linux/amd64" = …, "linux/arm64" = … }``."""

    def per(v: Any) -> Any:
        if isinstance(v, dict):
            if not v:
                raise ValueError
            return {str(Platform.parse(k)): check(x) for k, x in v.items()}
        return check(v)

    return per


def _owner(v: Any) -> Owner:
    if isinstance(v, int):
        return Owner(v, v)
    if not re.fullmatch(r"\d+(:\d+)?", _str(v)):
        raise ValueError
    return Owner.parse(v)


def _epoch(v: Any) -> int:
    n = _int(v)
    if n < 0:
        raise ValueError
    return n


def _venv(v: Any) -> str:
    s = _str(v)
    if not s.startswith("/") or ".." in s.split("/") or s.rstrip("/") == "":
        raise ValueError
    return s.rstrip("/")


def _python_version(v: Any) -> str | None:
    if v is None:
        return None
    if not re.fullmatch(r"3\.\d+", _str(v)):
        raise ValueError
    return v


def _max_layers(v: Any) -> int:
    n = _int(v)
    if not 2 <= n <= 127:
        raise ValueError
    return n


KEYS: dict[str, Key] = {
    "base": Key("string, or a table of them keyed by platform", DEFAULT_BASE, "Base image: `scratch`, `oci:DIR[:TAG]`, `docker-archive:FILE`, `rootfs:FILE.tar`, or a registry reference (`python:3.12-slim`, `docker://REF`); a table keyed by platform gives each platform its own.", _per_platform(_str)),
    "python": Key('string "X.Y"', None, "Target Python version; default: the one interpreter found in the base (or in `interpreter`).", _python_version),
    "interpreter": Key('"base" or a path/URL, or a table of them keyed by platform', "base", "`base` uses the base image's Python; a directory or `.tar.gz`/`.tar.zst` archive of a relocatable CPython (e.g. python-build-standalone `install_only`) is written as its own layer at `/opt/python`.", _per_platform(_str)),
    "interpreter-sha256": Key("hex string, or a table of them keyed by platform", None, "sha256 of the `interpreter` archive; required when it is a URL.", _per_platform(_opt_str)),
    "platform": Key('string "os/arch[/variant]" or a list of them', "linux/amd64", "Target platform; several (`[\"linux/amd64\", \"linux/arm64\"]` or `linux/amd64,linux/arm64`) make one image index.", _platforms),
    "heavy": Key("list of names, globs or {name, packages} tables", [], "Packages that get a layer of their own (`torch`), or share one (`{ name = \"cuda\", packages = [\"nvidia-*\", \"triton\"] }`).", _heavy),
    "heavy-threshold": Key('size ("100MB") or bytes', DEFAULT_THRESHOLD, "Any wheel that installs at least this much gets a layer of its own; `0` turns this off.", parse_size),
    "max-layers": Key("integer 2..127", MAX_LAYERS_DEFAULT, "Upper bound on the image's layer count (base included); the smallest heavy groups merge into `site-packages` to stay under it.", _max_layers),
    "entrypoint": Key("list of strings or a string", None, "Image Entrypoint; default: the project's only console script.", _argv),
    "command": Key("list of strings or a string", None, "Image Cmd (arguments to the entrypoint).", _argv),
    "env": Key("table of strings", {}, "Extra environment variables.", _table),
    "labels": Key("table of strings", {}, "Image labels.", _table),
    "user": Key("string", None, "User the app runs as (`1000`, `1000:1000`, `app`); default: the base's.", _opt_str),
    "workdir": Key("string", None, "Working directory; default: the base's.", _opt_str),
    "venv": Key("absolute path", "/opt/venv", "The in-image virtual environment; `PATH` starts with its `bin`.", _venv),
    "source-date-epoch": Key("integer", None, "Timestamp for every file and the image's `created`; default: `$SOURCE_DATE_EPOCH`, else 0.", lambda v: None if v is None else _epoch(v)),
    "compile-bytecode": Key("boolean", False, "Write unchecked-hash `.pyc` files (needs a host Python of the target's version).", _bool),
    "compression": Key('"gzip" or "zstd"', "gzip", "Layer compression. zstd needs Docker ≥ 23, containerd ≥ 1.5 or podman.", _choice("gzip", "zstd")),
    "owner": Key('string "uid:gid"', "0:0", "Numeric owner of everything under `venv`, set at write time (no chown layer).", _owner),
    "requirements": Key("path", None, "A pinned requirements file to resolve from instead of the project's dependencies.", _opt_str),
    "extras": Key("list of strings", [], "Extras of the project to install.", _str_list),
    "output": Key("list of strings", [], "Where to write the image: `oci:DIR[:TAG]`, `docker-archive:FILE[:NAME:TAG]`, `docker-daemon:[NAME:TAG]` or `podman:[NAME:TAG]` (load into a local engine); default `oci:dist/image:<version>`.", _str_list),
    "repository": Key("string", None, "Registry repository to push to (`ghcr.io/org/app`).", _opt_str),
    "tags": Key("list of strings", [], "Tags to push under `repository`; default: the project version.", _str_list),
    "lock": Key("path", "pylock.toml", "Lock file recording the resolved wheel set (PEP 751).", _str),
}


@dataclass(frozen=True)
class Config:
    project_dir: Path
    pyproject: Path
    values: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def platforms(self) -> tuple[Platform, ...]:
        """Every target platform; ``self["platform"]`` is the first, and what single-platform code reads."""
        return tuple(self.values["platforms"])

    def for_platform(self, platform: Platform) -> "Config":
        """This config for one of its platforms: per-platform tables resolved, ``platform`` that one, and (when
        there are several) its own lock file beside the configured one (``pylock.linux-arm64.toml``)."""
        values = dict(self.values)
        values["platform"], values["platforms"] = platform, (platform,)
        for key, table in (self.values.get("per-platform") or {}).items():
            values[key] = table[str(platform)]
        values["per-platform"] = {}
        if len(self.platforms) > 1 and platform != self.platforms[0]:
            lock = Path(self.values["lock"])
            values["lock"] = str(lock.with_name(f"{lock.stem}.{str(platform).replace('/', '-')}{lock.suffix}"))
        return Config(self.project_dir, self.pyproject, values)

    @property
    def epoch(self) -> int:
        value = self.values["source-date-epoch"]
        if value is None:
            env = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
            if env and not env.isdigit():
                raise ConfigError(f"SOURCE_DATE_EPOCH={env!r} is not a whole number of seconds", "unset it, or set it to e.g. $(git log -1 --format=%ct)")
            return int(env) if env else 0
        return value


_PATH_SOURCES = ("oci:", "docker-archive:", "rootfs:")


def _anchor_paths(key: str, value: Any, anchor: Path) -> Any:
    """Relative paths in the file are relative to the project; on the command line, to the current directory."""

    def absolute(text: str) -> str:
        return text if text.startswith("/") else str((anchor / text).resolve())

    if key in ("base", "interpreter") and isinstance(value, dict):
        return {k: _anchor_paths(key, v, anchor) for k, v in value.items()}
    if key == "base" and value.startswith(_PATH_SOURCES):
        kind, _, rest = value.partition(":")
        return f"{kind}:{absolute(rest)}"
    if key == "interpreter" and value != "base" and not value.startswith(("http://", "https://")):
        return absolute(value)
    if key == "output":
        return [f"{v.partition(':')[0]}:{absolute(v.partition(':')[2])}" if v.startswith(_PATH_SOURCES) else v for v in value]
    return value


def _line_of(text: str, key: str) -> int | None:
    in_section = False
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("["):
            in_section = stripped.startswith("[tool.pyimage")
            continue
        if in_section and re.match(rf'^\s*"?{re.escape(key)}"?\s*=', line):
            return n
    return None


def load_config(project_dir: Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Reads and checks ``[tool.pyimage]`` of ``project_dir/pyproject.toml``, then applies ``overrides``."""
    pyproject = Path(project_dir) / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no pyproject.toml in {project_dir}", "run pyimage in a Python project directory, or `pyimage init` to start one") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{pyproject}: invalid TOML: {exc}", "fix the syntax at the line shown") from None
    section = data.get("tool", {}).get("pyimage", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{pyproject}: [tool.pyimage] must be a table", "write it as a [tool.pyimage] section")
    values: dict[str, Any] = {}
    for origin, source in (("file", section), ("flag", dict(overrides or {}))):
        for key, raw in source.items():
            where = f"{pyproject}:{_line_of(text, key) or '?'}: [tool.pyimage] {key}" if origin == "file" else f"command line: --{key}"
            spec = KEYS.get(key)
            if spec is None:
                import difflib

                near = difflib.get_close_matches(key.replace("_", "-"), KEYS, n=1, cutoff=0.75)
                hint = f"did you mean {near[0]!r}?" if near else f"known keys: {', '.join(KEYS)}"
                raise ConfigError(f"{where}: unknown key", hint)
            try:
                values[key] = spec.check(raw)
            except (ValueError, TypeError, json.JSONDecodeError):
                raise ConfigError(f"{where}: expected {spec.kind}, got {raw!r}", f"{key}: {spec.doc}") from None
            anchor = Path(project_dir) if origin == "file" else Path.cwd()
            values[key] = _anchor_paths(key, values[key], anchor)
    for key, spec in KEYS.items():
        if key not in values:
            values[key] = spec.check(spec.default) if spec.default is not None else None
    platforms = values["platform"]
    values["platforms"], values["platform"] = platforms, platforms[0]
    tables = {key: values[key] for key in PER_PLATFORM_KEYS if isinstance(values[key], dict)}
    for key, table in tables.items():
        missing = [str(p) for p in platforms if str(p) not in table]
        if missing:
            raise ConfigError(
                f"{pyproject}: [tool.pyimage] {key} has no entry for {', '.join(missing)} (it has: {', '.join(table)})",
                f"add \"{missing[0]}\" = … to the {key} table, or drop that platform",
            )
        values[key] = table[str(platforms[0])]
    values["per-platform"] = tables
    for platform in platforms:
        interp = tables.get("interpreter", {}).get(str(platform), values["interpreter"])
        sha = tables.get("interpreter-sha256", {}).get(str(platform), values["interpreter-sha256"])
        if interp.startswith(("http://", "https://")) and not sha:
            raise ConfigError(f"{pyproject}: [tool.pyimage] interpreter is a URL but interpreter-sha256 is not set" + (f" for {platform}" if tables else ""), "add interpreter-sha256 = \"<hex>\" (the archive's sha256)")
    return Config(project_dir=Path(project_dir).resolve(), pyproject=pyproject, values=values)
