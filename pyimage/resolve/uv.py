"""Resolution with uv (the ``uv`` wheel from PyPI, a dependency of pyimage): ``uv pip compile`` for the target's
Python and platform, its answer read as a PEP 751 lock. It resolves the same inputs as the pip backend
(``resolve/pip.py``) several times faster (bench/resolve.py), and gives the same ``Pin`` values, so the lock,
wheel fetching, sdist builds and the portable-lock rules are shared.

pip's configuration stays the source of truth: pyimage reads it as pip would (config files, then ``PIP_*``
variables; ``[global]`` and ``[install]``) and passes it to uv as flags — index-url, extra-index-url,
find-links, no-index, trusted-host, constraint, pre, cert — with pip's index semantics (the best version
across every index, ``--index-strategy unsafe-best-match``). uv's own configuration files and the project's
``[tool.uv]`` settings are not read (``--no-config``), so both backends resolve from the same settings; the
project's index declarations (``[tool.uv.sources]`` index pins, ``[[tool.uv.index]]``) are the exception, applied
by compiling the project's pyproject.toml (resolve/uvsources.py).

The pip backend is used instead (``resolver = "auto"``) when uv cannot serve: a pip setting it has no flag
for (e.g. ``only-binary``, ``no-binary``, ``prefer-binary``), a platform uv cannot target (glibc older than
2.17, musl other than 1.2, an architecture other than x86_64/aarch64), or no uv binary.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path
from typing import Callable, Sequence

from packaging.utils import canonicalize_name

import pyimage.tools as tools
from pyimage.cache import Cache
from pyimage.errors import BuildError
from pyimage.resolve.pip import Pin
from pyimage.resolve.target import Target
from pyimage.resolve.uvsources import UvSources

__all__ = ["uv_binary", "uv_platform", "pip_settings_for_uv", "why_not_uv", "resolve"]

# pip settings that do not change what is resolved (or that uv handles its own way, like the cache)
_HARMLESS = {
    "timeout", "default-timeout", "retries", "disable-pip-version-check", "no-cache-dir", "cache-dir", "progress-bar",
    "quiet", "verbose", "no-input", "root-user-action", "break-system-packages", "require-virtualenv", "no-color",
    "user", "log", "no-warn-script-location", "no-python-version-warning", "use-feature", "keyring-provider",
    "config-file", "isolated", "python",
}
_TRANSLATED = {"index-url", "extra-index-url", "find-links", "no-index", "trusted-host", "constraint", "pre", "cert"}


def uv_binary() -> str | None:
    """The uv executable: from the ``uv`` package in pyimage's environment, else on PATH."""
    try:
        import uv  # the PyPI wheel ships the binary and this finder

        found = uv.find_uv_bin()
        if found and os.access(found, os.X_OK):
            return str(found)
    except (ImportError, FileNotFoundError):
        pass
    import shutil

    return shutil.which("uv")


_UV_GLIBC = (17, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40)


def uv_platform(target: Target) -> str | None:
    """uv's ``--python-platform`` for the target, or None when uv has no value for it."""
    arch = target.machine
    if arch not in ("x86_64", "aarch64"):
        return None
    if target.libc == "musl":
        return f"{arch}-unknown-linux-musl" if target.libc_version in ("", "1.2") else None
    try:
        minor = int((target.libc_version or "2.28").split(".")[1])
    except (IndexError, ValueError):
        return None
    if minor < 17:
        return None
    # uv names only these glibc versions (0.13: 2.17, 2.28, 2.31–2.40); the nearest one at or below the target's
    # admits no wheel the target cannot load (bullseye's 2.31 is one; a 2.30 base resolves as 2.28).
    return f"{arch}-manylinux_2_{max(v for v in _UV_GLIBC if v <= minor)}"


class PipConfigUnreadable(ValueError):
    """pip's configuration (a pip.conf, ``PIP_CONFIG_FILE``) is one pip itself cannot parse."""


def _pip_settings() -> dict[str, str]:
    """pip's effective settings for ``pip install``: files, then the ``[install]`` section, then ``PIP_*``;
    PipConfigUnreadable when pip cannot parse them."""
    from pip._internal.configuration import Configuration  # pip is a dependency; this is how pip reads them
    from pip._internal.exceptions import ConfigurationError

    config = Configuration(isolated=False)
    try:
        config.load()
    except ConfigurationError as exc:
        raise PipConfigUnreadable(str(exc)) from exc
    merged: dict[str, str] = {}
    files = list(config.items())  # (file, {"section.key": value}) in pip's override order; ":env:" is PIP_*
    for section in ("global", "install", ":env:"):  # as pip orders them for `pip install`: the later wins
        for _file, values in files:
            for key, value in values.items():
                sect, _, name = key.partition(".")
                if sect == section:
                    merged[name.replace("_", "-")] = str(value)
    return merged


def pip_settings_for_uv() -> tuple[list[str], dict[str, str], str]:
    """(uv flags, environment additions, reason) from pip's configuration; the reason is empty when every
    setting that matters has a uv equivalent, else it names the first one that does not."""
    try:
        settings = _pip_settings()
    except PipConfigUnreadable as exc:  # the pip backend reports it in pip's words
        return [], {}, f"pip's configuration cannot be read ({str(exc)[:80]})"
    args: list[str] = []
    env: dict[str, str] = {}
    for key, value in settings.items():
        if key in _HARMLESS:
            continue
        if key not in _TRANSLATED:
            return [], {}, f"pip setting {key!r} has no uv equivalent"
    words = lambda key: [w for w in settings.get(key, "").split() if w]  # noqa: E731
    if settings.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        args.append("--no-index")
    if settings.get("index-url"):
        args += ["--index-url", settings["index-url"]]
    for url in words("extra-index-url"):
        args += ["--extra-index-url", url]
    for location in words("find-links"):
        args += ["--find-links", location]
    for host in words("trusted-host"):
        args += ["--allow-insecure-host", host]
    for path in words("constraint"):
        args += ["--constraint", path]
    if settings.get("pre", "").lower() in ("1", "true", "yes", "on"):
        args += ["--prerelease", "allow"]
    if settings.get("cert"):
        env["SSL_CERT_FILE"] = settings["cert"]
    return args, env, ""


def why_not_uv(target: Target) -> str:
    """Empty when uv can resolve for ``target`` with the current pip configuration, else why not."""
    if uv_binary() is None:
        return "no uv binary (install the `uv` package)"
    if uv_platform(target) is None:
        return f"uv cannot target {target.describe()}"
    return pip_settings_for_uv()[2]


def _input_lines(requirements: Sequence[str]) -> list[str]:
    """pip-style arguments (a wheel path with optional extras, ``-r FILE``, a requirement) as requirement lines."""
    lines: list[str] = []
    items = list(requirements)
    i = 0
    while i < len(items):
        item = items[i]
        if item in ("-r", "--requirement") and i + 1 < len(items):
            lines.append(f"-r {items[i + 1]}")
            i += 2
            continue
        path, bracket, extras = item.partition("[")
        if path.endswith(".whl"):
            name = canonicalize_name(Path(path).name.split("-")[0])
            lines.append(f"{name}{bracket}{extras} @ {Path(path).resolve().as_uri()}")
        else:
            lines.append(item)
        i += 1
    return lines


def _run(uv: str, args: Sequence[str], env: dict[str, str]) -> tools.Ran:
    return tools.run([uv, *args], tool="uv", doing="resolving the dependencies", env=env)


def _compile(uv: str, args: list[str], env: dict[str, str]) -> tools.Ran:
    """Wheels only, as the pip backend resolves; sdists are allowed only when some requirement has no wheel for
    the target at all (they are built into wheels for it when their layer needs them)."""
    proc = _run(uv, [*args, "--only-binary", ":all:"], env)
    if not proc.ok and re.search(r"ha(?:s|ve) no usable wheels", proc.stderr):  # one version "has", several "have"
        proc = _run(uv, args, env)
    return proc


def resolve(
    requirements: Sequence[str],
    target: Target,
    cache: Cache,
    *,
    extra_args: Sequence[str] = (),
    prefer: Sequence[Pin] = (),
    project: UvSources | None = None,
    extras: Sequence[str] = (),
    local: frozenset[str] = frozenset(),
) -> list[Pin]:
    """Pins for ``requirements`` as the pip backend gives them, resolved by uv for ``target``. With ``project``
    (its uv index declarations, resolve/uvsources.py) the project's pyproject.toml is compiled instead, with
    ``extras``, so that its ``[tool.uv.sources]`` apply. Packages named in ``local`` (built from the workspace,
    given as wheels or directories) are resolved through but not pinned."""
    uv = uv_binary()
    platform_name = uv_platform(target)
    flags, env, reason = pip_settings_for_uv()
    if uv is None or platform_name is None or reason:
        raise BuildError(f"the uv resolver cannot serve this build: {why_not_uv(target)}", 'set resolver = "pip" (or "auto")')
    with cache.tmp_dir() as work:
        (work / "requirements.in").write_text("".join(line + "\n" for line in _input_lines(requirements)))
        source: list[str] = [str(work / "requirements.in")]
        if project is not None and project.declared and project.pyproject is not None:
            source = [str(project.pyproject), *[a for e in extras for a in ("--extra", e)], *project.uv_args()]
        from pyimage.config import tomllib

        base = [
            "pip", "compile", *source, "--format", "pylock.toml", "-o", str(work / "pylock.toml"),
            "--python-version", target.python, "--python-platform", platform_name, "--no-config", "--no-header",
            *(["--index-strategy", "unsafe-best-match"] if project is None or not project.index_strategy else []),
            "--quiet", *flags, *extra_args,
        ]
        proc = None
        if prefer:
            (work / "prefer.txt").write_text("".join(f"{p.name}=={p.version}\n" for p in prefer))
            proc = _compile(uv, [*base, "--constraint", str(work / "prefer.txt")], env)
        if proc is None or not proc.ok:  # the old versions no longer fit the new inputs: resolve freely
            proc = _compile(uv, base, env)
        if not proc.ok:
            def newest(name: str) -> str | None:  # only on failure: the newest release of ``name`` the target can install
                (work / "newest.in").write_text(name + "\n")
                found = _compile(uv, ["pip", "compile", str(work / "newest.in"), *base[2 + len(source):]], env)
                if not found.ok:
                    return None
                try:
                    packages = tomllib.loads((work / "pylock.toml").read_text()).get("packages", [])
                except (OSError, tomllib.TOMLDecodeError):
                    return None
                return next((str(p.get("version")) for p in packages if canonicalize_name(str(p.get("name", ""))) == canonicalize_name(name)), None)

            indexes = _indexes_of([*flags, *extra_args], project)
            raise _error(proc.stderr, target, newest, lambda name: _refusing_index(name, indexes))  # stderr as tools.run gives it: credentials redacted
        try:
            data = tomllib.loads((work / "pylock.toml").read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise BuildError(f"uv wrote no readable resolution ({exc})", 'report this with --debug output, or set resolver = "pip"') from None
    requested = {str(Path(r.split("[")[0]).resolve()) for r in requirements if r.split("[")[0].endswith(".whl")}
    items = [item for item in data.get("packages", []) if canonicalize_name(str(item.get("name", ""))) not in local]
    pins = [pin for item in items if (pin := _pin(item, requested, target)) is not None]
    return sorted(pins, key=lambda p: p.name)


def _file(entry: dict) -> tuple[str, str, str]:
    """(filename, url or "" for a local file, sha256) of a pylock file entry."""
    url = str(entry.get("url") or "")
    path = str(entry.get("path") or "")
    if url.startswith("file:"):
        url, path = "", urllib.parse.unquote(urllib.parse.urlparse(url).path)
    name = str(entry.get("name") or urllib.parse.unquote((url or path).rsplit("/", 1)[-1].split("#")[0]))
    sha = str((entry.get("hashes") or {}).get("sha256") or "")
    return name, url, sha


def _best_wheel(name: str, wheels: list[dict], target: Target) -> dict:
    """The wheel pip would install on the target among those uv lists (every one that fits): the one whose
    best tag comes first in the target's tag priority (a cp311 manylinux build before ``py3-none-any``)."""
    from packaging.tags import compatible_tags, cpython_tags
    from packaging.utils import parse_wheel_filename

    version = tuple(int(p) for p in target.python.split("."))
    platforms = target.platform_tags()
    order = {tag: i for i, tag in enumerate([*cpython_tags(version, platforms=platforms), *compatible_tags(version, f"cp{target.python.replace('.', '')}", platforms)])}
    ranked = []
    for entry in wheels:
        try:
            tags = parse_wheel_filename(_file(entry)[0])[3]
        except ValueError:
            continue
        rank = min((order[t] for t in tags if t in order), default=None)
        if rank is not None:
            ranked.append((rank, _file(entry)[0], entry))
    if not ranked:
        raise BuildError(f"{name}: none of the wheels uv chose fits {target.describe()}", 'report this with --debug output, or set resolver = "pip"')
    return min(ranked, key=lambda r: (r[0], r[1]))[2]


def _pin(item: dict, requested: set[str], target: Target) -> Pin | None:
    name, version = canonicalize_name(str(item.get("name", ""))), str(item.get("version") or "")
    if "directory" in item:
        where = item["directory"].get("path", "") if isinstance(item["directory"], dict) else ""
        raise BuildError(
            f"{name} is a local path dependency ({name} @ {where}): pyimage installs wheels from an index and cannot lock a directory of this machine",
            f"make {name} a path dependency of the project itself ([tool.uv.sources] {name} = {{ path = \"…\" }}, or {name} @ file:///…), which pyimage builds into the workspace layer; or publish it to an index",
        )
    if "vcs" in item:
        raise BuildError(
            f"{name} is a version-control dependency: pyimage needs a published wheel or sdist to lock it",
            f"publish {name} to an index (or a find-links directory) and depend on it by name and version",
        )
    archive = item.get("archive")
    if isinstance(archive, dict):
        filename, url, sha = _file(archive)
        local = str(archive.get("path") or "") or (urllib.parse.unquote(urllib.parse.urlparse(str(archive.get("url", ""))).path) if str(archive.get("url", "")).startswith("file:") else "")
        if local:
            if str(Path(local).resolve()) in requested:
                return None  # the project's own wheel, given as the input
            raise BuildError(
                f"{name} is a local file dependency ({name} @ {local}): a lock naming a file of this machine would not work anywhere else",
                f"publish {name} to an index, or put the file in a find-links directory and depend on {name}=={version}",
            )
        return Pin(name, version, filename, url, sha)
    wheels = item.get("wheels") or []
    if wheels:
        best = _best_wheel(name, wheels, target)
        filename, url, sha = _file(best)
        if best.get("path") and str(Path(str(best["path"])).resolve()) in requested:
            return None
        return Pin(name, version, filename, url, sha, best.get("size"))
    sdist = item.get("sdist")
    if isinstance(sdist, dict):  # no wheel for the target: built from this sdist when its layer needs it
        filename, url, sha = _file(sdist)
        return Pin(name, version, filename, url, sha)
    raise BuildError(f"{name}: uv's resolution names no file for it", 'report this with --debug output, or set resolver = "pip"')


_DOWNLOAD_FAILED = re.compile(r"Failed to (?:download|read) `([^`=\s]+)==([^`\s]+)`")
_BUILD_FAILED = re.compile(r"Failed to (?:download and )?build `([^`=\s]+)[^`]*`")
_NOT_FOUND = re.compile(r"Because (\S+?) was not found in the (?:package registry|provided package locations)")


def _explanation(stderr: str) -> str:
    """uv's explanation as one line: its "Because …" sentences, without the heading, the tree drawing and the
    closing sentence about the project itself ("… you require app, we can conclude …")."""
    lines = [l.strip() for l in stderr.splitlines() if l.strip()]
    lines = [l for l in lines if not l.startswith(("error: No solution found", "× No solution found", "hint:", "help:"))]
    parts = [l.lstrip("╰─▶ ").removeprefix("cause:").strip() for l in lines]
    text = " ".join(p if p.endswith((".", ":")) or i == len(parts) - 1 else p + ";" for i, p in enumerate(parts))
    text = re.sub(r"\s+", " ", text).strip().removeprefix("error: ")
    sentences = re.split(r"(?<=\.) (?=And because|Because)", text)
    if len(sentences) > 1 and "you require" in sentences[-1]:
        sentences = sentences[:-1]
    return " ".join(sentences)


_UNREACHABLE = re.compile(r"Failed to fetch: (\S+)")
_CANNOT_CONNECT = ("tcp connect error", "Connection refused", "dns error", "failed to lookup address", "timed out", "No route to host", "Network is unreachable")
# uv's hint when an index answered 401/403 (its "not found" follows from it)
_UNAUTHORIZED = re.compile(r"An index URL \((\S+?)\) could not be queried due to a lack of valid authentication credentials \(([^)]+)\)")


def _index_of(url: str) -> str:
    """The index a project page's URL belongs to (``…/simple/six/`` → ``…/simple``); uv shows it without user info."""
    return re.sub(r"/[^/]+/?$", "", url) if re.search(r"/simple/[^/]+/?$", url) else url


_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
# uv's first "Because …" sentence names the cause; the ones after it walk up to the user's requirement.
# "the requested Python version (>=3.11) does not satisfy Python>=3.12 and django>=6.0 depends on Python>=3.12"
_PYTHON_DEPENDS = re.compile(rf"does not satisfy Python\S+ and (({_NAME})\S*) depends on Python(\S+?),")
# "newpy==2.0 requires Python >=3.12 and only newpy<=2.0 is available, we can conclude that newpy>=2.0 cannot be used"
_PYTHON_REQUIRES = re.compile(rf"Because ({_NAME})\S* requires Python (\S+?) and .*?we can conclude that (\1\S*) cannot be used")
# "there is no version of django==9.9"; "only six<=1.17.0 is available and app==1.0 depends on six>=2099.1"
_NO_VERSION = re.compile(rf"Because (?:there is no version of ({_NAME})(\S*)|only (?:the following versions of )?({_NAME})\S* (?:is|are) available and (?:you require|\S+ depends on) \3(\S*?)(?:,|$))")


def _indexes_of(args: Sequence[str], project: UvSources | None) -> list[tuple[str, str]]:
    """(name, URL) of every index the resolution asked: pip's (``--index-url``/``--extra-index-url`` flags, no
    name) and the project's ``[[tool.uv.index]]`` declarations."""
    out = [("", args[i + 1]) for i, a in enumerate(args[:-1]) if a in ("--index-url", "--extra-index-url", "--default-index")]
    return out + [(index.name, index.url) for index in (project.indexes if project is not None else ())]


def _refusing_index(name: str, indexes: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """The first index (URL without its user info, status) that answers 401 or 403 for ``name``'s page, asked with
    the credentials uv would send (the URL's user info, ``UV_INDEX_<NAME>_USERNAME``/``_PASSWORD``); only after uv
    found no ``name``, since with ``--index-strategy unsafe-best-match`` it does not say an index refused it."""
    import httpx

    for index_name, url in indexes:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.hostname in ("pypi.org", "files.pythonhosted.org"):
            continue
        env_key = re.sub(r"[^A-Z0-9]", "_", index_name.upper())
        user = os.environ.get(f"UV_INDEX_{env_key}_USERNAME") if index_name else None
        password = os.environ.get(f"UV_INDEX_{env_key}_PASSWORD") if index_name else None
        if user or password:
            auth: tuple[str, str] | None = (user or "", password or "")
        else:
            auth = (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")) if parts.username else None
        bare = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))  # the user info goes in ``auth``
        try:
            answer = httpx.get(f"{bare.rstrip('/')}/{canonicalize_name(name)}/", auth=auth, timeout=5.0, follow_redirects=True)
        except httpx.HTTPError:
            continue
        if answer.status_code in (401, 403):
            return bare.rstrip("/"), f"{answer.status_code} {answer.reason_phrase}"
    return None


def _error(
    stderr: str, target: Target, newest: Callable[[str], str | None] = lambda _name: None, refusing: Callable[[str], tuple[str, str] | None] = lambda _name: None
) -> BuildError:
    """uv's failure in the user's terms, as the pip backend says it (resolve/diagnose.py): an sdist that cannot be
    built, an unknown name (with a suggestion), a dependency needing another Python, no version matching a
    requirement (with the newest the target can install, asked of ``newest``), else uv's own explanation. uv's
    hints name its own flags (``--python-version``), which the user never gave: they are left out."""
    build = _BUILD_FAILED.search(stderr)
    if build:  # the backend's own last words, as for pip (resolve/pip.py ``_build_failure``)
        said = [l.strip().removeprefix("cause:").strip() for l in stderr.split(build.group(0), 1)[1].splitlines()]
        said = [l for l in said if l and not l.startswith(("hint:", "help:", "[stderr]", "[stdout]"))]
        return BuildError(
            f"{build.group(1)}: no wheel for {target.describe()}, and its sdist failed to build: {said[-1] if said else 'no message'}",
            f"install the build requirements of {build.group(1)} (compiler, headers; on the configured indexes), or pin a version that publishes wheels",
        )
    damaged = _DOWNLOAD_FAILED.search(stderr)
    if damaged:  # a wheel uv cannot read (no RECORD, not a zip, a hash mismatch)
        said = [l.strip().removeprefix("cause:").strip() for l in stderr.split(damaged.group(0), 1)[1].splitlines()]
        said = [l for l in said if l and not l.startswith(("hint:", "help:"))]
        return BuildError(
            f"{damaged.group(1)} {damaged.group(2)}: malformed wheel: {said[-1] if said else 'uv cannot read it'}",
            f"the file on your index or find-links is damaged or not a valid wheel: publish a good {damaged.group(1)} wheel, or pin another version",
        )
    unreachable = _UNREACHABLE.search(stderr)
    if unreachable and any(sign in stderr for sign in _CANNOT_CONNECT):
        index = _index_of(unreachable.group(1))
        cause = [l.strip().removeprefix("cause:").strip() for l in stderr.splitlines() if l.strip().startswith("cause:")]
        return BuildError(
            f"cannot reach the package index {index} while resolving for {target.describe()}: {cause[-1] if cause else 'no answer'}",
            "check the index URL, VPN or proxy; pip passes over an index it cannot reach, uv stops at it: drop the index "
            "from pip's configuration (or [tool.uv]) if it is not needed here, or set resolver = \"pip\"",
        )
    found = _NOT_FOUND.search(stderr)
    hinted = _UNAUTHORIZED.search(stderr) if found else None
    refused = (hinted.group(1), hinted.group(2)) if hinted else refusing(found.group(1)) if found else None
    if found and refused:  # "not found" because the index refused to answer: the name is right
        return BuildError(
            f"the package index {refused[0]} answered {refused[1]}, so {found.group(1)} could not be looked up there",
            "give pyimage (and uv) the index's credentials: in its URL in pip's configuration, in ~/.netrc, or for a [tool.uv] "
            "index UV_INDEX_<NAME>_USERNAME and UV_INDEX_<NAME>_PASSWORD",
        )
    if found:
        name = found.group(1)
        who = re.search(rf"and (\S+?) depends on {re.escape(name)}\b", stderr)
        from pyimage.resolve import diagnose

        suggestion = diagnose.did_you_mean(name)
        by = f" (required by {who.group(1)})" if who else ""
        return BuildError(
            f"no package named {name!r} on the configured indexes{by}" + (f"; did you mean {suggestion!r}?" if suggestion else ""),
            "fix the name in [project] dependencies (or the requirements file); if it is on a private index, add it to pip's index-url/extra-index-url/find-links",
        )
    first = next((l.strip().removeprefix("cause:").strip() for l in stderr.splitlines() if "Because" in l), "")

    def required_by(name: str) -> str:
        who = re.search(rf"\b(?:and|because) (\S+?) depends on {re.escape(name)}\b", stderr)
        return f" (required by {who.group(1)})" if who else ""

    python = _PYTHON_DEPENDS.search(first)
    needs = (python.group(1), python.group(2), python.group(3)) if python else None
    if needs is None and (requires := _PYTHON_REQUIRES.search(first)):
        needs = (requires.group(3), requires.group(1), requires.group(2))
    if needs is not None:
        spec, name, wanted_python = needs
        return BuildError(
            f"{spec} requires Python {wanted_python}{required_by(name)}, but the target is {target.describe()}",
            f"require a {name} that supports Python {target.python} (an older one), or pick a base whose Python satisfies {wanted_python}",
        )
    missing = _NO_VERSION.search(first)
    if missing:
        name, spec = (missing.group(1), missing.group(2)) if missing.group(1) else (missing.group(3), missing.group(4))
        latest = newest(name)
        have = f"; the newest that installs there is {name} {latest}" if latest else ""
        return BuildError(
            f"no version of {name} satisfies {spec or 'the requirement'}{required_by(name)} for {target.describe()}{have}",
            f"relax the requirement on {name}" + (f" (e.g. {name}=={latest})" if latest else "") + ", or pick a base whose Python the wanted version supports",
        )
    why = _explanation(stderr)
    if len(why) > 600:
        why = why[:600] + " …"
    return BuildError(
        f"cannot resolve the dependencies for {target.describe()}: {why or 'uv failed without a message'}",
        "change one of the requirements named so they can agree (or relax a pin)",
    )
