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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from pyimage.errors import ConfigError
from pyimage.layers.plan import MAX_LAYERS_DEFAULT, HeavyGroup, normalize_pattern
from pyimage.layers.tar import Owner
from pyimage.oci.model import Platform
from pyimage.oci.sniff import sniff, use_instead

if TYPE_CHECKING:
    from pyimage.outputs import Output

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Config", "KEYS", "load_config", "find_project", "field_name", "parse_size", "DEFAULT_BASE"]

DEFAULT_BASE = "docker.io/library/python:3.12-slim"
DEFAULT_THRESHOLD = "100MB"  # torch, tensorflow, jaxlib, nvidia-* get a layer of their own; numpy does not


def parse_size(value: Any) -> int:
    """``123``, ``"200MB"``, ``"1.5GiB"`` -> bytes (a TOML float is refused: write it as a string with a unit)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
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


class _Invalid(ValueError):
    """A validator's reason, said to the user in place of "expected KIND, got VALUE"; ``hint`` replaces the
    key's documentation as the fix when the validator knows a better one (a did-you-mean)."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.hint = hint


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
    """A whole number: a TOML integer, or digits from the command line; never a float (``3.9`` is not 3)."""
    if isinstance(v, bool) or isinstance(v, float):
        raise ValueError
    if isinstance(v, str):
        if not re.fullmatch(r"\s*-?\d+\s*", v):
            raise ValueError
        return int(v)
    if not isinstance(v, int):
        raise ValueError
    return v


_NO_CONTROL = re.compile(r"[^\x00-\x1f\x7f]*")  # strings that end up in JSON, tar headers or shebangs


def _plain(v: Any) -> str:
    s = _str(v)
    if not _NO_CONTROL.fullmatch(s):
        raise ValueError
    return s


def _argv(v: Any) -> tuple[str, ...] | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = v.strip()
        if v.startswith("["):
            v = json.loads(v)
        else:
            v = shlex.split(v)
    if isinstance(v, list) and all(isinstance(x, str) and "\0" not in x for x in v):
        return tuple(v)
    raise ValueError


def _entrypoint_argv(v: Any) -> tuple[str, ...] | None:
    """``_argv`` that refuses an empty one: an image with ``Entrypoint: []`` and no Cmd has nothing to run."""
    argv = _argv(v)
    if argv is not None and (not argv or not argv[0].strip()):
        raise _Invalid("it is empty, so the image would have nothing to run; name the program (or leave entrypoint out for the project's console script)")
    return argv


def _str_list(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        return tuple(x.strip() for x in v.split(",") if x.strip())
    if isinstance(v, list) and all(isinstance(x, str) and x.strip() and _NO_CONTROL.fullmatch(x) for x in v):
        return tuple(v)
    raise ValueError


def _names(pattern: str) -> Callable[[Any], tuple[str, ...]]:
    """A list whose every item matches ``pattern`` (extras, tags)."""

    def check(v: Any) -> tuple[str, ...]:
        items = _str_list(v)
        if not all(re.fullmatch(pattern, x) for x in items):
            raise ValueError
        return items

    return check


def _table_of(key: str, example: str, flag: str = "") -> Callable[[Any], dict[str, str]]:
    """A table of strings for ``key``; numbers and booleans are written as text (``PORT = 8000`` is "8000")."""
    hint = f"write {key} = {{ {example} }} (on the command line: --set '{key}={{{example.replace(' = ', '=')}}}'{flag})"

    def check(v: Any) -> dict[str, str]:
        if not isinstance(v, dict):
            raise _Invalid(f"expected table of strings, got {v!r}", hint)
        out = {}
        for k, x in v.items():
            if not isinstance(x, (str, int, float, bool)):
                raise _Invalid(f"{k!r} = {x!r}: a value is a string (or a number or boolean, written as text)", hint)
            out[k] = str(x).lower() if isinstance(x, bool) else str(x)
            if not k or not _NO_CONTROL.fullmatch(k) or "\0" in out[k]:
                raise _Invalid(f"{k!r} = {out[k]!r}: names are not empty, and names and values hold no control character", hint)
        return out

    return check


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")  # no "", no "=", no spaces: `A=B` would set another variable


_env_table = _table_of("env", 'LOG_LEVEL = "info"')


def _env(v: Any) -> dict[str, str]:
    table = _env_table(v)
    for name in table:
        if not _ENV_NAME.fullmatch(name):
            raise _Invalid(f"{name!r} is not a variable name (letters, digits, '_', '.', '-'; not starting with a digit)", 'write env = { LOG_LEVEL = "info" }')
    return table


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
                raise _Invalid(f"heavy group {item['name']!r}: packages must be a non-empty list of names or globs")
            groups.append(HeavyGroup(item["name"], tuple(packages)))
        else:
            raise ValueError
    names = [normalize_pattern(g.name) for g in groups]
    if len(set(names)) != len(names):
        twice = sorted({g.name for g, n in zip(groups, names) if names.count(n) > 1})
        raise _Invalid(f"the group name {twice[0]!r} appears more than once; each heavy group needs its own name")
    return tuple(groups)


def _choice(*options: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise _Invalid(f"{v!r} is not one of {', '.join(map(repr, options))}")
        return v

    return check


# What pyimage can build for: Linux, the architectures Go (and so the OCI image spec and the engines) name, each
# with the variants it may carry (arm64's only one, v8, is its default; amd64's are the GOAMD64 levels).
TARGET_ARCHITECTURES: Mapping[str, tuple[str, ...]] = {
    "amd64": ("v1", "v2", "v3", "v4"), "arm64": ("v8",), "arm": ("v5", "v6", "v7"), "386": (), "ppc64le": (),
    "s390x": (), "riscv64": (), "mips64le": (), "loong64": (),
}
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "x64": "amd64", "aarch64": "arm64", "armv8": "arm64", "armv7l": "arm/v7", "armhf": "arm/v7", "armv7": "arm/v7", "armv6l": "arm/v6", "i386": "386", "i686": "386", "x86": "386", "ppc64el": "ppc64le", "loongarch64": "loong64", "riscv": "riscv64"}


def _platform(v: Any) -> Platform:
    """A platform pyimage is to build for: Linux, an architecture (and variant) the engines know; reading other
    people's images (``inspect``, ``index``) takes any platform through ``Platform.parse`` instead."""
    text = _str(v).strip()
    if not re.fullmatch(r"[a-z0-9_]+/[a-z0-9_]+(/[a-z0-9_]+)?", text):
        raise ValueError
    platform = Platform.parse(text)
    if platform.os != "linux":
        raise _Invalid(
            f"{text!r}: pyimage builds Linux images (its wheels, interpreter and base are Linux ones), not {platform.os}",
            f"use linux/{platform.architecture}" if platform.architecture in TARGET_ARCHITECTURES else "use linux/amd64 or linux/arm64",
        )
    variants = TARGET_ARCHITECTURES.get(platform.architecture)
    if variants is None:
        alias = _ARCH_ALIASES.get(platform.architecture)
        if alias is None:
            import difflib

            near = difflib.get_close_matches(platform.architecture, TARGET_ARCHITECTURES, n=1, cutoff=0.6)
            alias = near[0] if near else ""
        known = ", ".join(TARGET_ARCHITECTURES)
        raise _Invalid(
            f"{text!r}: {platform.architecture!r} is not an architecture pyimage can build for (known: {known})",
            f"did you mean linux/{alias}?" if alias else f"name the architecture as the engines do (known: {known})",
        )
    if platform.variant and platform.variant not in variants:
        allowed = f"its variants are {', '.join(variants)}" if variants else "it has no variants"
        raise _Invalid(
            f"{text!r}: {platform.variant!r} is not a variant of {platform.architecture} ({allowed})",
            f"did you mean linux/{platform.architecture}/{variants[-1] if platform.architecture == 'arm' else ''}?".replace("/?", "?"),
        )
    return platform


def _platforms(v: Any) -> tuple[Platform, ...]:
    """``"linux/amd64"``, ``"linux/amd64,linux/arm64"`` or a list of them; each once, at least one."""
    items = [x.strip() for x in v.split(",")] if isinstance(v, str) else v
    if not isinstance(items, list) or not items or not all(isinstance(x, str) and x for x in items):
        raise ValueError
    platforms = tuple(_platform(x) for x in items)
    if len(set(platforms)) != len(platforms):
        raise _Invalid(f"{next(str(p) for p in platforms if platforms.count(p) > 1)} is listed twice")
    return platforms


PER_PLATFORM_KEYS = ("base", "interpreter", "interpreter-sha256")


def _per_platform(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A key that also takes a table keyed by platform: ``{ "linux/amd64" = …, "linux/arm64" = … }``."""

    def per(v: Any) -> Any:
        if isinstance(v, dict):
            if not v:
                raise ValueError
            return {str(_platform(k)): check(x) for k, x in v.items()}
        return check(v)

    return per


MAX_ID = 2**32 - 2  # uid/gid 4294967295 is (uid_t)-1, "no change" to chown(2); bigger wraps around to root


def _owner(v: Any) -> Owner:
    if isinstance(v, int) and not isinstance(v, bool):
        uid = gid = v
    else:
        m = re.fullmatch(r"(\d+)(?::(\d+))?", _str(v).strip())
        if not m:
            raise ValueError
        uid, gid = int(m.group(1)), int(m.group(2) or m.group(1))
    if not (0 <= uid <= MAX_ID and 0 <= gid <= MAX_ID):
        raise _Invalid(f"uid and gid must be 0..{MAX_ID}")
    return Owner(uid, gid)


MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z: the last `created` time RFC 3339 can write


def _epoch(v: Any) -> int:
    n = _int(v)
    if not 0 <= n <= MAX_EPOCH:
        raise ValueError
    return n


# Directories a base image's own system lives in: a venv there would shadow or loop into the base's files
# (`venv = "/usr"` makes /usr/bin/python3 a link to itself). Deeper paths under these trees are refused too.
_SYSTEM_DIRS = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt",
                "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/usr/local",
                "/usr/local/bin", "/usr/local/lib", "/usr/local/sbin", "/usr/local/include", "/usr/local/share",
                "/var/lib", "/var/tmp", "/var/log", "/var/cache"}
_SYSTEM_TREES = ("/bin/", "/boot/", "/dev/", "/etc/", "/lib/", "/lib32/", "/lib64/", "/libx32/", "/proc/", "/sbin/",
                 "/sys/", "/run/", "/usr/bin/", "/usr/sbin/", "/usr/lib/", "/usr/lib64/", "/usr/libexec/",
                 "/usr/include/", "/usr/share/", "/usr/local/bin/", "/usr/local/lib/", "/usr/local/sbin/")


def _venv(v: Any) -> str:
    s = _str(v)
    if not s.startswith("/") or ".." in s.split("/") or s.rstrip("/") == "":
        raise ValueError
    s = "/" + "/".join(p for p in s.split("/") if p and p != ".")
    if not re.fullmatch(r"[A-Za-z0-9._+\-/]+", s):  # goes into shebangs and pyvenv.cfg: no spaces or quotes
        raise _Invalid(f"{s!r} has characters a shebang line cannot carry; use letters, digits and ._+- only")
    if s in _SYSTEM_DIRS or (s + "/").startswith(_SYSTEM_TREES):
        raise _Invalid(f"{s} is a directory of the base's own system; the venv would shadow it (use e.g. /opt/venv)")
    return s


def _sha256_hex(v: Any) -> str | None:
    if v in (None, ""):
        return None
    if not re.fullmatch(r"[0-9a-f]{64}", _str(v)):
        raise ValueError
    return v


def _user(v: Any) -> str | None:
    if v in (None, ""):
        return None
    text = str(v) if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else _str(v)  # user = 1000: the uid
    parts = text.split(":")
    if len(parts) > 2 or any(p == "" for p in parts):
        raise _Invalid(f"{text!r} is not USER or USER:GROUP" + (" (the group after ':' is empty)" if text.endswith(":") else " (a part is empty)" if len(parts) <= 2 else ""), 'write user = "app", "1000" or "1000:1000"')
    for part in parts:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", part):
            raise _Invalid(f"{part!r} is not a user or group name (letters, digits, '_', '.', '-'; not starting with '.' or '-') nor a numeric id", 'write user = "app", "1000" or "1000:1000"')
        if part.isdigit() and int(part) > MAX_ID:
            raise _Invalid(f"{part} is above the largest id, {MAX_ID}", 'write user = "app", "1000" or "1000:1000"')
    return text


_GLOB_OR_PATH = re.compile(r"[\w.+\-/*?\[\]{}@=,~ ]+")  # \w: letters and digits of any script (données/, 日本語.txt)


def _image_path(text: Any) -> str:
    """An absolute in-image path, normalised; no ``..``, no control characters."""
    s = _plain(text)
    if not s.startswith("/") or ".." in s.split("/"):
        raise ValueError
    return "/" + "/".join(p for p in s.split("/") if p and p != ".") + ("/" if s.endswith("/") and s.strip("/") else "")


def _files(v: Any) -> tuple[dict[str, Any], ...]:
    """``[{src = "migrations/**", dest = "/app/migrations/", mode = "0644", exclude = ["*.pyc"]}, …]``: ``src``
    a path or glob inside the project (never absolute, never ``..``), ``dest`` an absolute in-image path (a
    directory when it ends in ``/`` or ``src`` names several files)."""
    example = '[{src = "migrations/", dest = "/app/migrations/"}]'
    if not isinstance(v, list):
        raise _Invalid(f"expected a list of tables, got {v!r}", f"write files = {example}")
    out = []
    for n, item in enumerate(v, 1):
        entry = f"entry {n}"
        if not isinstance(item, dict):
            raise _Invalid(f"{entry} is {item!r}, not a table", f"write files = {example}")
        unknown = sorted(set(item) - {"src", "dest", "mode", "exclude"})
        if unknown:
            import difflib

            near = difflib.get_close_matches(unknown[0], ["src", "dest", "mode", "exclude"], n=1, cutoff=0.5)
            raise _Invalid(f"{entry} has an unknown key {unknown[0]!r}" + (f" (did you mean {near[0]!r}?)" if near else ""), "each entry takes src, dest, mode and exclude")
        missing = [k for k in ("src", "dest") if k not in item]
        if missing:
            raise _Invalid(f"{entry} has no {missing[0]!r}", f"write files = {example}")
        src = item["src"]
        if not isinstance(src, str) or not src.strip():
            raise _Invalid(f"{entry}: src must be a path or glob in the project, got {src!r}", f"write files = {example}")
        if not _NO_CONTROL.fullmatch(src):
            raise _Invalid(f"{entry}: src {src!r} has control characters", "write the path as it is in the project")
        src = src.strip()
        if src.startswith("/") or ".." in src.replace("\\", "/").split("/"):
            raise _Invalid(f"{entry}: src {src!r} leaves the project (absolute or '..')", "files come from inside the project; copy what you need there first")
        if not _GLOB_OR_PATH.fullmatch(src):
            odd = next(c for c in src if not _GLOB_OR_PATH.fullmatch(c))
            raise _Invalid(f"{entry}: src {src!r} has {odd!r}, a character pyimage does not take in a path or glob", "rename the file, or match that character with ? (a glob keeps the path up to its first wildcard: give dest the directory the match goes in)")
        mode = item.get("mode")
        if mode is not None:
            mode = int(mode, 8) if isinstance(mode, str) and re.fullmatch(r"0?[0-7]{3,4}", mode) else mode
            if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
                raise _Invalid(f"{entry}: mode {item['mode']!r} is not a file mode", 'write mode = "0644" (octal, as a string) or 0o644')
        try:
            exclude = _str_list(item.get("exclude", []))
        except ValueError:
            raise _Invalid(f"{entry}: exclude {item['exclude']!r} is not a list of globs", 'write exclude = ["*.pyc", "tests/"]') from None
        try:
            dest = _image_path(item["dest"])
        except (ValueError, TypeError):
            raise _Invalid(f"{entry}: dest {item['dest']!r} is not an absolute path in the image (no '..')", 'write dest = "/app/data/" (a directory) or "/app/data/file.txt"') from None
        out.append({"src": src, "dest": dest, "mode": mode, "exclude": exclude})
    return tuple(out)


def _writable(v: Any) -> tuple[str, ...]:
    return tuple(_image_path(x).rstrip("/") for x in _str_list(v))


def _workdir(v: Any) -> str | None:
    if v in (None, ""):
        return None
    s = _plain(v)
    if not s.startswith("/"):
        raise ValueError
    return s


def _path(v: Any) -> str:
    s = _plain(v)
    if not s.strip():
        raise ValueError
    return s


def _opt_path(v: Any) -> str | None:
    return None if v is None else _path(v)


def _outputs(v: Any) -> tuple[Any, ...]:
    """Output specs, each checked as ``outputs.parse_output`` reads it (a kind it knows, a path where one is
    needed: ``-o oci:`` alone would write into the current directory); values already parsed pass as they are."""
    from pyimage.outputs import parse_output

    if isinstance(v, (list, tuple)) and v and not any(isinstance(item, str) for item in v):
        return tuple(v)  # Output values (``with_values(output=…)``)
    items = _str_list(v)
    for item in items:
        try:
            parse_output(item, Path("/"))
        except ConfigError as exc:
            raise _Invalid(exc.message) from None
    return items


def _base(v: Any) -> str:
    s = _plain(v).strip()
    if s.startswith(("oci:", "docker-archive:", "rootfs:", "docker-daemon:")) and not s.partition(":")[2].strip():
        raise ValueError
    return s


def _repository(v: Any) -> str | None:
    if v in (None, ""):
        return None
    from pyimage.oci.reference import parse_reference

    s = _str(v)
    try:
        ref = parse_reference(s)
    except Exception:  # its own error type: here it only means "not a repository"
        raise ValueError from None
    if ref.tag not in (None, "", "latest") or ref.digest or s.rsplit("/", 1)[-1].count(":") or "@" in s:
        raise ValueError
    return s


def _python_version(v: Any) -> str | None:
    if v is None:
        return None
    if not re.fullmatch(r"3\.\d+", _str(v)):
        raise ValueError
    return v


def _ports(v: Any) -> tuple[str, ...]:
    """``[8000, "53/udp"]`` -> ``("8000/tcp", "53/udp")``, as the image config's ``ExposedPorts`` keys them."""
    items = v if isinstance(v, list) else [v] if isinstance(v, (int, str)) and not isinstance(v, bool) else None
    if items is None:
        raise _Invalid(f"expected a list of ports, got {v!r}", "write ports = [8000] or [\"8000/tcp\", \"53/udp\"]")
    out: list[str] = []
    for item in items:
        text = str(item) if isinstance(item, int) and not isinstance(item, bool) else item if isinstance(item, str) else None
        m = re.fullmatch(r"(\d{1,5})(?:/(tcp|udp|sctp))?", text.strip().lower()) if text is not None else None
        if m is None or not 1 <= int(m.group(1)) <= 65535:
            raise _Invalid(f"{item!r} is not a port (1..65535, optionally /tcp, /udp or /sctp)", "write ports = [8000] or [\"8000/tcp\", \"53/udp\"]")
        port = f"{int(m.group(1))}/{m.group(2) or 'tcp'}"
        if port not in out:
            out.append(port)
    return tuple(out)


def _max_layers(v: Any) -> int:  # noqa: D401
    n = _int(v)
    if not 2 <= n <= 127:
        raise _Invalid(f"{n} is outside 2..127 (engines refuse images of more than 127 layers)")
    return n


KEYS: dict[str, Key] = {
    "base": Key("string, or a table of them keyed by platform", DEFAULT_BASE, "Base image: `scratch`, `oci:DIR[:TAG]`, `docker-archive:FILE`, `docker-daemon:NAME:TAG` (an image of the local Docker Engine), `rootfs:FILE.tar`, or a registry reference (`python:3.12-slim`, `docker://REF`); a table keyed by platform gives each platform its own.", _per_platform(_base)),
    "python": Key('string "X.Y"', None, "Target Python version; default: the one interpreter found in the base (or in `interpreter`).", _python_version),
    "interpreter": Key('"base" or a path/URL, or a table of them keyed by platform', "base", "`base` uses the base image's Python; a directory or `.tar.gz`/`.tar.zst` archive of a relocatable CPython (e.g. python-build-standalone `install_only`) is written as its own layer at `/opt/python`.", _per_platform(_str)),
    "interpreter-sha256": Key("hex string, or a table of them keyed by platform", None, "sha256 of the `interpreter` archive; required when it is a URL.", _per_platform(_sha256_hex)),
    "platform": Key('string "os/arch" (or "os/arch/variant"), or a list of them', "linux/amd64", "Target platform, a Linux one (`linux/amd64`, `linux/arm64`, `linux/arm/v7`, …); several (`[\"linux/amd64\", \"linux/arm64\"]` or `linux/amd64,linux/arm64`) make one image index.", _platforms),
    "heavy": Key("list of names, globs or {name, packages} tables", [], "Packages that get a layer of their own (`torch`), or share one (`{ name = \"cuda\", packages = [\"nvidia-*\", \"triton\"] }`).", _heavy),
    "heavy-threshold": Key('size ("100MB") or bytes', DEFAULT_THRESHOLD, "Any wheel that installs at least this much gets a layer of its own; `0` turns this off.", parse_size),
    "max-layers": Key("integer 2..127", MAX_LAYERS_DEFAULT, "Upper bound on the image's layer count (base included); the smallest heavy groups merge into `site-packages` to stay under it.", _max_layers),
    "entrypoint": Key("list of strings or a string", None, "Image Entrypoint; default: the project's only console script (required for an app that is not a package).", _entrypoint_argv),
    "command": Key("list of strings or a string", None, "Image Cmd (arguments to the entrypoint).", _argv),
    "env": Key("table of strings", {}, "Extra environment variables (names: letters, digits, `_`, `.`, `-`; not starting with a digit).", _env),
    "labels": Key("table of strings", {}, "Image labels.", _table_of("labels", 'team = "web"', " or --label team=web")),
    "ports": Key("list of ports", [], "Ports the app listens on (`8000`, `\"53/udp\"`), as the image's `ExposedPorts` (Dockerfile `EXPOSE`): documentation for engines and `docker run -P`, which publishes them; added to the base's.", _ports),
    "annotations": Key("table of strings", {}, "Manifest annotations (`org.opencontainers.image.source`, …).", _table_of("annotations", '"org.opencontainers.image.source" = "https://…"', " or --annotation KEY=VALUE")),
    "user": Key("string (or a number: the uid)", None, "User the app runs as (`1000`, `1000:1000`, `app`); a name the base lacks is created (passwd, group, home) in the `runtime` layer and set by its numeric id; default: the base's.", _user),
    "workdir": Key("absolute path", None, "Working directory; default: the base's, or `/app` for an app that is not a package (its files are copied there).", _workdir),
    "files": Key("list of tables", [], 'Files outside the package, in a `files` layer above `app`: `{src = "PATH or GLOB in the project", dest = "/ABS/PATH[/]", mode = "0644", exclude = ["GLOB"]}`.', _files),
    "writable": Key("list of absolute paths", [], "Directories created owned by the runtime `user` (and writable by it) in the `runtime` layer, e.g. `/data`.", _writable),
    "venv": Key("absolute path", "/opt/venv", "The in-image virtual environment; `PATH` starts with its `bin`. Not a system directory (`/usr`, `/opt`, `/usr/local`, …); letters, digits and `._+-` only.", _venv),
    "source-date-epoch": Key("integer 0..253402300799", None, "Timestamp for every file and the image's `created`; default: `$SOURCE_DATE_EPOCH`, else 0.", lambda v: None if v is None else _epoch(v)),
    "compile-bytecode": Key("boolean", False, "Write unchecked-hash `.pyc` files (needs a host Python of the target's version).", _bool),
    "compression": Key('"gzip", "zstd" or "none"', "gzip", "Layer compression. zstd needs Docker ≥ 23, containerd ≥ 1.5 or podman. none writes plain tar layers, as docker build stores them: faster to build and to load into a local engine, several times bigger to push.", _choice("gzip", "zstd", "none")),
    "owner": Key('string "uid:gid"', "0:0", "Numeric owner of everything under `venv`, set at write time (no chown layer); uid and gid in 0..4294967294.", _owner),
    "requirements": Key("path", None, "A pinned requirements file to resolve from instead of the project's dependencies; one with `--hash` on every line is installed as a lock, without resolving.", _opt_path),
    "extras": Key("list of strings", [], "Extras of the project to install.", _names(r"[A-Za-z0-9][A-Za-z0-9._\-]*")),
    "output": Key("list of strings", [], "Where to write the image: `oci:DIR[:TAG]`, `docker-archive:FILE[:NAME:TAG]`, `docker-daemon:[NAME:TAG]` or `podman:[NAME:TAG]` (load into a local engine); default `oci:dist/image:<version>`.", _outputs),
    "repository": Key("string", None, "Registry repository to push to (`ghcr.io/org/app`), without a tag.", _repository),
    "tags": Key("list of strings", [], "Tags to push under `repository`; default: the project version.", _names(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")),
    "lock-input": Key('path, or "none"', None, "The team's lock to install from, never resolving again: `uv.lock`, `poetry.lock`, a PEP 751 `pylock.toml` / `pylock.<name>.toml`; default: `uv.lock`, else `poetry.lock`, else a `pylock.toml` another tool wrote, else none (pyimage resolves and writes `lock`). `\"none\"` ignores the project's locks.", _opt_path),
    "groups": Key("list of strings", [], "Dependency groups to install from the lock input (none by default: a `dev` group stays out of the image).", _names(r"[A-Za-z0-9][A-Za-z0-9._\-]*")),
    "resolver": Key('"auto", "uv" or "pip"', "auto", "Who resolves the dependencies: uv (fast; from pip's configuration) or pip; `auto` takes uv unless it cannot serve the build (a pip setting it has no flag for, a platform it cannot target).", _choice("auto", "uv", "pip")),
    "lock": Key("path", "pylock.pyimage.toml", "pyimage's own lock file (a PEP 751 named lock), written when the project has no lock of its own (`lock-input`).", _path),
    "allow-missing-libraries": Key("list of sonames or globs", [], "Shared libraries taken as present though neither the base nor a wheel has them (`libfoo.so.1`, `libcuda*`): for one the image gets another way; any other missing library an extension needs is an error at build time.", _names(r"[A-Za-z0-9_.+*?\[\]-]+")),
}


def field_name(key: str) -> str:
    """The ``Config`` attribute of a ``[tool.pyimage]`` key: ``heavy-threshold`` -> ``heavy_threshold``."""
    return key.replace("-", "_")


@dataclass(frozen=True)
class Config:
    """The checked, typed ``[tool.pyimage]`` of one project: one field per key (``KEYS``; ``field_name`` maps a
    key to its field), with everything that needs no work already checked and resolved (paths anchored, platforms
    parsed, ``epoch`` from ``source-date-epoch`` or ``$SOURCE_DATE_EPOCH``)."""

    project_dir: Path
    pyproject: Path
    base: str
    python: str | None
    interpreter: str
    interpreter_sha256: str | None
    platform: Platform  # the first target platform; ``platforms`` has them all
    heavy: tuple[HeavyGroup, ...]
    heavy_threshold: int
    max_layers: int
    entrypoint: tuple[str, ...] | None
    command: tuple[str, ...] | None
    env: Mapping[str, str]
    labels: Mapping[str, str]
    ports: tuple[str, ...]
    annotations: Mapping[str, str]
    user: str | None
    workdir: str | None
    files: tuple[dict[str, Any], ...]
    writable: tuple[str, ...]
    venv: str
    source_date_epoch: int | None
    compile_bytecode: bool
    compression: str
    owner: Owner
    requirements: str | None
    extras: tuple[str, ...]
    output: tuple[Output, ...]  # parsed at load (outputs.py)
    repository: str | None
    tags: tuple[str, ...]
    lock_input: str | None
    groups: tuple[str, ...]
    resolver: str
    lock: str
    allow_missing_libraries: tuple[str, ...]
    epoch: int = 0  # source-date-epoch, else $SOURCE_DATE_EPOCH, else 0: resolved at load
    all_platforms: tuple[Platform, ...] = ()  # every target platform, when there are several
    per_platform: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # key -> {platform: value} tables

    @property
    def platforms(self) -> tuple[Platform, ...]:
        """Every target platform; ``platform`` is the first, and what single-platform code reads."""
        return self.all_platforms or (self.platform,)

    def as_dict(self) -> dict[str, Any]:
        """Every key's value by its ``[tool.pyimage]`` name (for reports and generic checks)."""
        return {key: getattr(self, field_name(key)) for key in KEYS}

    def with_values(self, **values: Any) -> "Config":
        """A copy with some keys replaced (``labels=…``), each checked as the file's would be."""
        checked = {name: KEYS[name.replace("_", "-")].check(value) for name, value in values.items()}
        return replace(self, **checked)

    def for_platform(self, platform: Platform) -> "Config":
        """This config for one of its platforms: per-platform tables resolved, ``platform`` that one (the lock
        file is shared: pyimage's lock holds one entry per platform)."""
        values = {field_name(key): table[str(platform)] for key, table in self.per_platform.items()}
        return replace(self, platform=platform, all_platforms=(), per_platform={}, **values)


def _resolve_epoch(value: int | None) -> int:
    if value is not None:
        return value
    env = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if env and (not env.isdigit() or int(env) > MAX_EPOCH):
        raise ConfigError(f"SOURCE_DATE_EPOCH={env[:40]!r} is not a whole number of seconds up to {MAX_EPOCH}", "unset it, or set it to e.g. $(git log -1 --format=%ct)")
    return int(env) if env else 0


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


_PATH_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.xz")


def _refuse_bare_path(base: str, anchor: Path, where: str) -> None:
    """``base = "/work/base.tar"`` would be read as a registry reference and fail on its empty first component:
    a base that looks like a path (or names an image file or layout on disk) is an error that says which prefix
    it needs, after a look at what is there (``manifest.json``: ``docker save``; ``oci-layout``: a layout)."""
    if base == "scratch" or re.match(r"[a-z][a-z0-9-]*:(?!\d)", base):
        return  # scratch, or a kind: prefix (oci:, rootfs:, docker://…); NAME:TAG and host:port go on
    path = Path(base).expanduser()
    path = path if path.is_absolute() else anchor / path
    looks = base.startswith(("/", "./", "../", "~")) or base.lower().endswith(_PATH_SUFFIXES)
    kind = sniff(path) if path.exists() else None
    if not looks and kind not in ("docker-archive", "oci-layout", "oci-archive"):
        return  # `python` is an image name even with a python/ directory in the project
    shown = base  # as the user wrote it: a relative path stays relative to the same place under a prefix
    fix = use_instead(kind, shown)
    raise ConfigError(f"{where}: {base!r} looks like a path, not an image reference", fix)


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


_VCS_DIRS = (".git", ".hg", ".svn", ".jj")


def toml_error(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    """A TOML syntax error as ``FILE:LINE:COLUMN: invalid TOML: what``; tomllib says "at end of document" for
    something left open (``ports = [8000``), which is named as such at the file's last line."""
    message = str(exc)
    at = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if at:
        return ConfigError(f"{path}:{at.group(1)}:{at.group(2)}: invalid TOML: {message[: at.start()]}", "fix the syntax at that line and column")
    if message.endswith(" (at end of document)"):
        last = text.count("\n") + (0 if text.endswith("\n") else 1)
        return ConfigError(
            f"{path}:{last}: invalid TOML: {message.removesuffix(' (at end of document)')} at the end of the file",
            "a bracket, brace or quote opened above is never closed: close it where the value ends",
        )
    return ConfigError(f"{path}: invalid TOML: {message}", "fix the syntax of the file")


def _is_project(pyproject: Path) -> bool:
    """A pyproject.toml that makes its directory a project pyimage builds: ``[project]`` or ``[tool.pyimage]``
    (a tool-only pyproject.toml, ``[tool.ruff]`` alone, is not one)."""
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return True  # unreadable: it is the user's project all the same, and load_config says what is wrong with it
    tool = data.get("tool")
    return "project" in data or (isinstance(tool, dict) and "pyimage" in tool)


def find_project(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` whose pyproject.toml has ``[project]`` or ``[tool.pyimage]``,
    as ``uv run`` finds its project from a subdirectory. The walk stops at a VCS root (``.git``, ``.hg``, …),
    so a project outside the repository the user is in is never picked up, and at a setup.py project (which is
    the user's project even before it has a pyproject.toml); None when there is none."""
    here = Path(start).resolve()
    for directory in (here, *here.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and _is_project(candidate):
            return directory
        if any((directory / marker).exists() for marker in (*_VCS_DIRS, "setup.py", "setup.cfg")):
            return None  # a repository's root, or a setup.py project with no pyproject.toml yet (`pyimage init`)
    return None


_NO_PROJECT_HINT = "run pyimage in (or below) a project directory, or name it: `pyimage build DIR` or -C DIR; `pyimage init` adds [tool.pyimage] to a project that has a pyproject.toml or setup.py"


def _no_project_hint(directory: Path) -> str:
    """What to do in a directory without pyproject.toml: an app of .py files and a requirements.txt (as people
    put them in Docker) is what ``pyimage init`` writes one for; elsewhere, the way to the project."""
    try:
        app_like = (directory / "requirements.txt").is_file() or any(p.suffix == ".py" for p in directory.iterdir() if p.name != "setup.py")
    except OSError:
        app_like = False
    if app_like and not (directory / "setup.py").exists():
        return "this looks like an app without a pyproject.toml: run `pyimage init` here, which writes one from requirements.txt and guesses the command it runs"
    return _NO_PROJECT_HINT


def _misspelt_table(pyproject: Path, text: str, data: Mapping[str, Any]) -> None:
    """``[tool.pyimgae]`` would be ignored and the build would go on with every default (and the default base
    needs Docker Hub): a ``[tool.X]`` table close to ``pyimage`` with no ``[tool.pyimage]`` is an error."""
    import difflib

    tool = data.get("tool")
    if not isinstance(tool, dict) or "pyimage" in tool:
        return
    for name in tool:
        folded = str(name).lower().replace("-", "").replace("_", "")
        # one letter added, dropped or swapped (pyimages, pyimge, pyimgae); [tool.image] is some other tool's
        if folded == "pyimage" or (abs(len(folded) - 7) <= 1 and difflib.SequenceMatcher(None, folded, "pyimage").ratio() >= 0.85):
            line = next((n for n, l in enumerate(text.splitlines(), 1) if re.match(rf"\s*\[\[?\s*tool\.\"?{re.escape(str(name))}\b", l)), None)
            raise ConfigError(f"{pyproject}:{line or '?'}: [tool.{name}] looks like a misspelt [tool.pyimage]; pyimage reads only [tool.pyimage]", "rename the table to [tool.pyimage]")


# Keys that have a flag of their own; any other key on the command line came from --set KEY=VALUE.
_FLAG_KEYS = ("base", "python", "heavy", "platform", "compression", "output")


def load_config(project_dir: Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Reads and checks ``[tool.pyimage]`` of ``project_dir/pyproject.toml``, then applies ``overrides``."""
    pyproject = Path(project_dir) / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except FileNotFoundError:
        above = find_project(Path(project_dir)) if Path(project_dir).is_dir() else None
        if above is not None:  # a directory inside the project named (`pyimage build .` in src/pkg)
            raise ConfigError(
                f"no pyproject.toml in {project_dir}; it is inside the project at {above}",
                f"leave DIR out (pyimage then finds the project above, as `uv run` does), or name the project: -C {above}",
            ) from None
        raise ConfigError(f"no pyproject.toml in {project_dir}", _no_project_hint(Path(project_dir))) from None
    except UnicodeDecodeError as exc:
        line = pyproject.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{pyproject}:{line}: not valid UTF-8 (byte {exc.object[exc.start]:#04x})", "save pyproject.toml as UTF-8 (TOML files must be)") from None
    except OSError as exc:
        raise ConfigError(f"{pyproject}: cannot read it ({exc.strerror})", "check that it is a readable file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise toml_error(pyproject, text, exc) from None
    _misspelt_table(pyproject, text, data)
    section = data.get("tool", {}).get("pyimage", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{pyproject}: [tool.pyimage] must be a table", "write it as a [tool.pyimage] section")
    values: dict[str, Any] = {}
    for origin, source in (("file", section), ("flag", dict(overrides or {}))):
        for key, raw in source.items():
            where = f"{pyproject}:{_line_of(text, key) or '?'}: [tool.pyimage] {key}" if origin == "file" else f"command line: --{key}" if key in _FLAG_KEYS else f"command line: --set {key}"
            spec = KEYS.get(key)
            if spec is None:
                import difflib

                near = difflib.get_close_matches(key.replace("_", "-"), KEYS, n=1, cutoff=0.75)
                head, _, rest = key.partition(".")
                if rest and head in KEYS and KEYS[head].kind.startswith("table"):  # --set env.PORT=8000
                    name = rest if re.fullmatch(r"[A-Za-z0-9_-]+", rest) else json.dumps(rest)  # a bare TOML key, else quoted
                    hint = f"set the table whole: --set '{head}={{{name}={json.dumps(str(raw))}}}'" + (" (or --label)" if head == "labels" else "")
                else:
                    hint = f"did you mean {near[0]!r}?" if near else f"known keys: {', '.join(KEYS)}"
                raise ConfigError(f"{where}: unknown key", hint)
            try:
                values[key] = spec.check(raw)
            except (ValueError, TypeError, json.JSONDecodeError) as exc:
                reason = str(exc) if isinstance(exc, _Invalid) else ""
                hint = exc.hint if isinstance(exc, _Invalid) and exc.hint else f"{key}: {spec.doc}"
                raise ConfigError(f"{where}: {reason}" if reason else f"{where}: expected {spec.kind}, got {raw!r}", hint) from None
            anchor = Path(project_dir) if origin == "file" else Path.cwd()
            if key == "base":
                for one in values[key].values() if isinstance(values[key], dict) else (values[key],):
                    _refuse_bare_path(one, anchor, where)
            values[key] = _anchor_paths(key, values[key], anchor)
    for key, spec in KEYS.items():
        if key not in values:
            values[key] = spec.check(spec.default) if spec.default is not None else None
    from pyimage.outputs import parse_output

    values["output"] = tuple(parse_output(o, Path(project_dir)) if isinstance(o, str) else o for o in values["output"])  # anchored above
    platforms = values["platform"]
    values["platform"] = platforms[0]
    tables = {key: values[key] for key in PER_PLATFORM_KEYS if isinstance(values[key], dict)}
    for key, table in tables.items():
        missing = [str(p) for p in platforms if str(p) not in table]
        if missing:
            raise ConfigError(
                f"{pyproject}: [tool.pyimage] {key} has no entry for {', '.join(missing)} (it has: {', '.join(table)})",
                f"add \"{missing[0]}\" = … to the {key} table, or drop that platform",
            )
        values[key] = table[str(platforms[0])]
    for platform in platforms:
        interp = tables.get("interpreter", {}).get(str(platform), values["interpreter"])
        sha = tables.get("interpreter-sha256", {}).get(str(platform), values["interpreter-sha256"])
        if interp.startswith(("http://", "https://")) and not sha:
            raise ConfigError(f"{pyproject}: [tool.pyimage] interpreter is a URL but interpreter-sha256 is not set" + (f" for {platform}" if tables else ""), "add interpreter-sha256 = \"<hex>\" (the archive's sha256)")
    return Config(
        Path(project_dir).resolve(),
        pyproject,
        **{field_name(key): value for key, value in values.items()},
        epoch=_resolve_epoch(values["source-date-epoch"]),
        all_platforms=platforms if len(platforms) > 1 else (),
        per_platform=tables,
    )
