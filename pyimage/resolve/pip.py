"""Resolution with pip's own resolver in report mode, and fetching the wheels it chose.

pip runs as ``python -m pip`` from pyimage's own environment, so the user's pip configuration (pip.conf,
``PIP_*`` variables: index-url, extra-index-url, find-links, constraints, certificates) applies as it does to
their ``pip install``. Dependencies published only as sdists are built into wheels on this machine with an
interpreter of the target's version and offered back to the resolver through a find-links directory; the pin
records the sdist itself (its index URL and sha256), never that directory, so a lock travels and a cache
that lacks the wheel rebuilds it from the sdist.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from packaging.utils import canonicalize_name

import pyimage.tools as tools
from pyimage.cache import Cache, Meta, string
from pyimage.errors import BuildError, ConfigError
from pyimage.resolve.interpreters import find_python, host_version
from pyimage.resolve.target import Target

__all__ = ["Pin", "resolve", "fetch_wheels", "host_python", "sdist_wheel", "no_binary"]

_MAX_SDIST_ROUNDS = 20


@dataclass(frozen=True)
class Pin:
    """One resolved distribution: a wheel (or, for a dependency without one, its sdist) and its sha256 (hex).

    ``url`` is where the file is published (an index URL); it is empty for a file found in a local find-links
    directory or ``file://`` index, which is fetched again through pip's configuration by name, version and hash.
    """

    name: str
    version: str
    filename: str
    url: str
    sha256: str
    size: int | None = None

    @property
    def is_sdist(self) -> bool:
        return not self.filename.endswith(".whl")

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "filename": self.filename, "url": self.url, "sha256": self.sha256}


def host_python(version: str) -> str | None:
    """An interpreter of Python ``version`` on this machine (this one, PATH, pyenv, uv), for sdist builds."""
    return find_python(version)


def no_binary() -> frozenset[str]:
    """The packages pip's configuration (pip.conf, ``PIP_NO_BINARY``) says to install from their sdists, read as
    pip reads it (files' ``[global]``, then ``[install]``, then ``PIP_*``, each through pip's own format control).
    pyimage's ``--only-binary=:all:`` would make pip forget them, so ``resolve`` builds these itself. ``:all:`` is a
    ConfigError: pyimage installs wheels for the target, and cannot build every package here."""
    from pip._internal.configuration import Configuration  # pip is a dependency; this is how pip reads them
    from pip._internal.exceptions import CommandError, ConfigurationError
    from pip._internal.models.format_control import FormatControl

    config = Configuration(isolated=False)
    try:
        config.load()
    except ConfigurationError:
        return frozenset()  # pip says what is wrong with its configuration when resolution runs it
    sections: dict[str, dict[str, tuple[str, str]]] = {"global": {}, "install": {}, ":env:": {}}
    for fname, values in config.items():  # later files override a key, as pip's option parser does
        for section_key, value in values.items():
            section, _, key = section_key.partition(".")
            if section in sections and key in ("no-binary", "only-binary") and value:
                sections[section][key] = (str(value), fname)
    control, origin = FormatControl(), ""
    for section, items in sections.items():
        for key, (value, fname) in items.items():
            target, other = (control.no_binary, control.only_binary) if key == "no-binary" else (control.only_binary, control.no_binary)
            try:
                FormatControl.handle_mutual_excludes(value, target, other)
            except CommandError:
                continue  # pip refuses the value itself when it runs
            if key == "no-binary" and ":all:" in value.split(","):
                origin = "the PIP_NO_BINARY environment variable" if section == ":env:" else f"{fname} [{section}]"
    if ":all:" in control.no_binary:
        raise ConfigError(
            f"pip's configuration sets no-binary = :all: ({origin}): pyimage installs wheels for the target and cannot build every package from its sdist",
            f"name only the packages to build from source (no-binary = pyyaml,other), or remove the setting from {origin}",
        )
    return frozenset(canonicalize_name(n) for n in control.no_binary if n != ":none:")


def _pip(args: Sequence[str], doing: str, *, python: str | None = None) -> tools.Ran:
    """pip of ``python`` (pyimage's own by default) run through ``tools.run``: the user's pip configuration,
    quiet and non-interactive, credentials redacted from what it says."""
    return tools.run([python or sys.executable, "-m", "pip", *args], tool="pip", doing=doing, missing_hint="pip is part of pyimage's install: reinstall pyimage-oci")


def _last_error(output: str) -> str:
    return tools.tail(output) or "pip failed"


_NO_MODULE = re.compile(r"No module named '([^']+)'")
_NO_DISTRIBUTION = re.compile(r"No matching distribution found for (\S+)")


def _build_env_failed(output: str) -> bool:
    """pip got the sdist but could not set up its build (its "no matching distribution" is then a build requirement's)."""
    return "install build dependencies did not run successfully" in output or "BackendUnavailable" in output


def _build_hint(name: str, output: str) -> str:
    """The fix for an sdist that did not build: its build environment's own requirements when those are what
    failed (``_build_failure`` names them), else the usual compiler and headers."""
    if "install build dependencies did not run successfully" in output:
        return f"make {name}'s build requirements installable by pip (index-url, find-links), or pin a version of {name} that publishes wheels"
    if "BackendUnavailable" in output:
        return f"the sdist of {name} is broken (its [build-system] does not install its backend): pin another version, or one that publishes wheels"
    return f"install the build requirements of {name} (compiler, headers), or pin a version that publishes wheels"


def _build_failure(output: str) -> str:
    """The real cause: the build backend that could not be imported, the build requirement that could not be
    installed, else the backend's own last words (pip boxes them as "[N lines of output]"), else pip's error line."""
    if "BackendUnavailable" in output:  # pip shows its own traceback; the cause is its last line
        missing = _NO_MODULE.findall(output.split("BackendUnavailable", 1)[1])
        return f"its build backend cannot be imported (no module named {missing[-1]!r}; its pyproject.toml's [build-system] requires does not provide it)" if missing else "its build backend cannot be imported"
    if "install build dependencies did not run successfully" in output:
        missing = _NO_DISTRIBUTION.findall(output)
        return f"its build requirements could not be installed (no distribution found for {missing[0]})" if missing else f"its build requirements could not be installed ({_last_error(output)})"
    return _last_error(output)  # the backend's own last words when pip quotes them (tools.tail)


def _is_local(url: str) -> bool:
    return urllib.parse.urlparse(url).scheme in ("file", "")


def _local_path(url: str) -> Path:
    return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))


def resolve(
    requirements: Sequence[str],
    target: Target,
    cache: Cache,
    *,
    extra_args: Sequence[str] = (),
    prefer: Sequence[Pin] = (),
    local: frozenset[str] = frozenset(),
) -> list[Pin]:
    """Pins for ``requirements`` (and everything they need) as wheels for ``target``.

    ``requirements`` are pip arguments (a wheel path, ``-r file``, ``name==1.0``). A package pip's configuration
    names in ``no-binary`` (``no_binary``) is built from the sdist of the version pip chose and pinned as that
    sdist, as a dependency without wheels is. ``prefer`` (the old lock)
    is tried as constraints first, so a refresh keeps versions that still fit. Raises BuildError in the
    user's terms: an unknown name, no version satisfying a specifier, conflicting requirements, a dependency
    with no wheel for the target whose sdist cannot be built here, a local path dependency. Packages named in
    ``local`` (built from the workspace, given as wheels or directories) are resolved through but not pinned.
    """
    if prefer:
        constraints = cache.tmp_path("-constraints.txt")
        constraints.write_text("".join(f"{p.name}=={p.version}\n" for p in prefer))
        try:
            return resolve(requirements, target, cache, extra_args=[*extra_args, "-c", str(constraints)], local=local)
        except BuildError:
            pass  # the old versions no longer fit the new inputs: resolve freely
        finally:
            constraints.unlink(missing_ok=True)
    from pyimage.resolve import diagnose  # only resolution needs it (a lock hit does not)

    forced = no_binary()
    built_dir = cache.sdist_wheel_dir(target.python)
    built_dir.mkdir(parents=True, exist_ok=True)
    tried: set[str] = set()
    from_source: list[str] = []  # wheels built from the sdists of no-binary packages, given to pip as requirements
    with cache.tmp_dir() as tmp:
        report = tmp / "report.json"
        for _ in range(_MAX_SDIST_ROUNDS):
            proc = _pip(
                [
                    "install", "--dry-run", "--ignore-installed", "--report", str(report),
                    "--target", str(Path(tmp) / "unused-target"), "--find-links", str(built_dir),
                    *target.pip_args(), *extra_args, *requirements, *from_source,
                ],
                f"resolving the dependencies for {target.describe()}",
            )
            if proc.ok:
                chosen = _no_binary_wheels(json.loads(report.read_text()), forced, local, built_dir)
                if not chosen:
                    break
                for name, version in chosen:  # pip's command line cleared no-binary: the sdist of the version it chose
                    if name in tried:
                        raise BuildError(f"{name}: pip chose a wheel although no-binary names it", "report this with `pyimage build --debug` output")
                    tried.add(name)
                    from_source.append(str(_build_sdist(name, f"=={version}", target, built_dir, cache, extra_args, "")))
                continue
            output = proc.output
            conflict = diagnose.conflict_error(output)
            if conflict is not None:
                raise conflict
            wrong_python = diagnose.python_error(output, target.describe())
            if wrong_python is not None:
                raise wrong_python
            missing = diagnose.no_match(output)
            if not missing or canonicalize_name(missing[0]) in tried:
                raise proc.error("run the same requirements through `pip install --dry-run` to see pip's full message")
            name, spec = missing
            tried.add(canonicalize_name(name))
            _build_sdist(name, spec, target, built_dir, cache, extra_args, output)
        else:
            raise BuildError("dependency resolution did not converge", "report this with `pyimage build --debug` output")
        data = json.loads(report.read_text())
    requested = {str(Path(r.split("[")[0]).resolve()) for r in requirements if r.split("[")[0].endswith(".whl")}
    items = [item for item in data.get("install", []) if canonicalize_name(item["metadata"]["name"]) not in local]
    pins = [_pin(item, built_dir, requested, target, cache) for item in items]
    return sorted(pins, key=lambda p: p.name)


def _no_binary_wheels(report: dict, forced: frozenset[str], local: frozenset[str], built_dir: Path) -> list[tuple[str, str]]:
    """(name, version) of each package of pip's report that no-binary names but that pip took as a published wheel."""
    out: list[tuple[str, str]] = []
    for item in report.get("install", []):
        name, url = canonicalize_name(item["metadata"]["name"]), item.get("download_info", {}).get("url", "")
        if name in forced and name not in local and url.split("#")[0].endswith(".whl"):
            if not (_is_local(url) and _local_path(url).parent.resolve() == built_dir.resolve()):
                out.append((name, item["metadata"]["version"]))
    return out


def _pin(item: dict, built_dir: Path, requested: set[str], target: Target, cache: Cache) -> Pin:
    meta, info = item["metadata"], item.get("download_info", {})
    name, version = canonicalize_name(meta["name"]), meta["version"]
    url = info.get("url", "")
    archive = info.get("archive_info", {})
    sha = archive.get("hashes", {}).get("sha256") or archive.get("hash", "").partition("=")[2]
    filename = urllib.parse.unquote(url.rsplit("/", 1)[-1].split("#")[0])
    local = _is_local(url)
    if "dir_info" in info:
        raise BuildError(
            f"{name} is a local path dependency ({name} @ {url}): pyimage installs wheels from an index and cannot lock a directory of this machine",
            f"make {name} a path dependency of the project itself ([tool.uv.sources] {name} = {{ path = \"…\" }}, or {name} @ file:///…), which pyimage builds into the workspace layer; or publish it to an index",
        )
    if "vcs_info" in info:
        raise BuildError(
            f"{name} is a version-control dependency ({name} @ {url}): pyimage needs a published wheel or sdist to lock it",
            f"publish {name} to an index (or a find-links directory) and depend on it by name and version",
        )
    if local and _local_path(url).parent.resolve() == built_dir.resolve():  # a wheel we built from an sdist: the pin is the sdist
        origin = json.loads((built_dir / f"{filename}.sdist.json").read_text())
        wheel_path, wheel_sha = cache.add_wheel(built_dir / filename)
        cache.put_meta(SDIST_WHEEL, (filename, wheel_sha), *_sdist_key(origin["sha256"], target))
        return Pin(name, version, origin["filename"], origin["url"], origin["sha256"])
    if item.get("is_direct") and local and str(_local_path(url).resolve()) not in requested:
        raise BuildError(
            f"{name} is a local file dependency ({name} @ {url}): a lock naming a file of this machine would not work anywhere else",
            f"publish {name} to an index, or put the file in a find-links directory and depend on {name}=={version}",
        )
    if not filename.endswith(".whl"):
        if item.get("is_direct") and not local:  # `name @ https://…/name-1.0.tar.gz`: built like any sdist
            return Pin(name, version, filename, url, sha)
        raise BuildError(f"{name}: pip chose {filename or url}, which is not a wheel", "report this with --debug output")
    return Pin(name, version, filename, "" if local else url, sha)


def _sdist_key(sdist_sha256: str, target: Target) -> tuple[str, ...]:
    return sdist_sha256, target.python, target.machine, target.libc


def _built(value: Any) -> tuple[str, str]:
    """A wheel built from an sdist: its file name and sha256."""
    filename, sha = string(value["filename"]), string(value["sha256"])
    if not re.fullmatch(r"[0-9a-f]{64}", sha) or "/" in filename:
        raise ValueError("not a wheel's name and sha256")
    return filename, sha


SDIST_WHEEL: Meta[tuple[str, str]] = Meta("sdist-wheel", _built, lambda v: {"filename": v[0], "sha256": v[1]})


def _sdist_requirement(name: str, version: str, url: str, sha256: str) -> str:
    """A hash-checked requirement for the sdist: by URL when it has one, else by name and version."""
    source = f"{name} @ {url}" if url else f"{name}=={version}"
    return f"{source} --hash=sha256:{sha256}\n"


def _target_python(name: str, target: Target, output: str) -> str:
    python = host_python(target.python)
    if python is None:
        raise BuildError(
            f"{name}: no wheel for {target.describe()}, and building its sdist needs a Python {target.python} on this machine (pyimage runs on {host_version()}; no {target.python} found on PATH, in pyenv or uv)",
            f"install Python {target.python} (pyenv install {target.python} or uv python install {target.python}), or pin a {name} version that publishes wheels",
        )
    return python


def _build_sdist(name: str, spec: str, target: Target, out: Path, cache: Cache, extra_args: Sequence[str], output: str) -> Path:
    """Builds ``name spec`` from its sdist into ``out`` with the target's Python, recording where the sdist came
    from (``<wheel>.sdist.json``: index URL or none, sha256) for the lock; the wheel's path."""
    from pyimage.resolve import diagnose

    python = _target_python(name, target, output)
    with cache.tmp_dir() as tmp:
        report = Path(tmp) / "sdist.json"
        found = _pip(
            ["install", "--dry-run", "--ignore-installed", "--no-deps", "--no-binary", name, "--use-pep517", "--report", str(report),
             "--target", str(Path(tmp) / "unused"), *extra_args, f"{name}{spec}"],
            f"building the sdist of {name}",
            python=python,
        )
        if not found.ok:
            said = found.output
            if diagnose.no_match(said) and not _build_env_failed(said):
                raise diagnose.missing_error(name, spec, output + "\n" + said, target.describe())
            raise found.error(_build_hint(name, said), f"{name}: no wheel for {target.describe()}, and its sdist failed to build", _build_failure(said))
        (item,) = json.loads(report.read_text())["install"]
        info = item.get("download_info", {})
        url = info.get("url", "")
        archive = info.get("archive_info", {})
        sha = archive.get("hashes", {}).get("sha256") or archive.get("hash", "").partition("=")[2]
        if not sha or "dir_info" in info or "vcs_info" in info:
            raise BuildError(f"{name}: pip offered {url} as its sdist, which is not an archive with a hash", "publish an sdist archive of it to your index")
        version = item["metadata"]["version"]
        filename = urllib.parse.unquote(url.rsplit("/", 1)[-1].split("#")[0])
        wheel = _wheel_from_sdist(canonicalize_name(name), version, "" if _is_local(url) else url, sha, python, Path(tmp) / "wheel", extra_args)
        _check_native(name, wheel, target)
        (out / f"{wheel.name}.sdist.json").write_text(json.dumps({"filename": filename, "url": "" if _is_local(url) else url, "sha256": sha}))
        os.replace(wheel, out / wheel.name)
        return out / wheel.name


def _check_native(name: str, wheel: Path, target: Target) -> None:
    """A wheel built here from an sdist runs on the target only if it is pure Python or the machines match."""
    import platform  # 15 ms of regexes at import: only sdist builds need it

    host = platform.machine()
    if target.machine != host and not wheel.name.endswith("-any.whl"):  # compiled for this machine, not the target
        raise BuildError(
            f"{name}: no wheel for {target.describe()}, and its sdist builds native code, which cannot be compiled here for {target.machine} (this machine is {host})",
            f"publish a {target.platform} wheel of {name} (or pin a version that has one), or build {target.platform} alone on {'an' if target.machine[:1] in 'aeiou' else 'a'} {target.machine} runner",
        )


def _wheel_from_sdist(name: str, version: str, url: str, sha256: str, python: str, dest: Path, extra_args: Sequence[str] = ()) -> Path:
    """The wheel pip builds from exactly this sdist (hash-checked), in ``dest``. Always PEP 517 with build
    isolation: an older target pip (3.9's 23.0.1) runs a setup.py-only sdist's ``setup.py bdist_wheel`` directly
    otherwise, which fails ("invalid command 'bdist_wheel'") when that Python lacks the ``wheel`` package."""
    dest.mkdir(parents=True, exist_ok=True)
    reqs = dest / "requirements.txt"
    reqs.write_text(_sdist_requirement(name, version, url, sha256))
    proc = _pip(["wheel", "--no-deps", "--no-binary", name, "--use-pep517", "--require-hashes", "--wheel-dir", str(dest), *extra_args, "-r", str(reqs)], f"building the sdist of {name}", python=python)
    reqs.unlink()
    if not proc.ok:
        raise proc.error(_build_hint(name, proc.output), f"{name}: no wheel for this target, and its sdist failed to build", _build_failure(proc.output))
    wheels = [w for w in dest.glob("*.whl") if canonicalize_name(w.name.split("-")[0]) == name]
    if len(wheels) != 1:
        raise BuildError(f"{name}: building its sdist gave {len(wheels)} wheels", "report this with --debug output")
    return wheels[0]


def sdist_wheel(pin: Pin, target: Target, cache: Cache, events: Callable[[str], None] = lambda _line: None) -> tuple[Path, str]:
    """(path, sha256) of the wheel built from ``pin``'s sdist for ``target``: from the cache, or rebuilt from the
    sdist (fetched by its URL, or by name, version and hash through pip's configuration), which ``events``
    hears of (a build backend may take a while, and it is work a user may want to avoid with a wheel)."""
    known = cache.get_meta(SDIST_WHEEL, *_sdist_key(pin.sha256, target))
    if known is not None:
        filename, sha = known
        hit = cache.cached_wheel(sha, filename)
        if hit is not None:
            return hit, sha
    python = _target_python(pin.name, target, "")
    events(f"building {pin.name} {pin.version} from its sdist (it has no wheel for {target.describe()})")
    with cache.tmp_dir() as tmp:
        wheel = _wheel_from_sdist(pin.name, pin.version, pin.url, pin.sha256, python, tmp)
        _check_native(pin.name, wheel, target)
        path, sha = cache.add_wheel(wheel)
    cache.put_meta(SDIST_WHEEL, (path.name, sha), *_sdist_key(pin.sha256, target))
    return path, sha


def fetch_wheels(pins: Sequence[Pin], target: Target, cache: Cache) -> dict[str, Path]:
    """The local path of every pinned wheel, by name; downloads only what the cache lacks, verified by sha256.

    An sdist pin gives the wheel built from it (``sdist_wheel``); a pin without a URL (a local find-links
    directory or ``file://`` index when locked) is fetched through the current pip configuration by name,
    version and hash, so the lock works wherever that configuration finds the same file.
    """
    paths: dict[str, Path] = {}
    missing: list[Pin] = []
    for pin in pins:
        hit = cache.cached_wheel(pin.sha256, pin.filename) if pin.sha256 and not pin.is_sdist else None
        if hit:
            paths[pin.name] = hit
        elif pin.is_sdist:
            paths[pin.name], _ = sdist_wheel(pin, target, cache)
        elif pin.url.startswith("file:"):  # a lock written before pins lost their local paths
            local = _local_path(pin.url)
            if local.is_file():
                paths[pin.name], _ = cache.add_wheel(local, pin.sha256 or None)
            else:
                missing.append(Pin(pin.name, pin.version, pin.filename, "", pin.sha256))
        else:
            missing.append(pin)
    if missing:
        with cache.tmp_dir() as tmp:
            reqs = tmp / "requirements.txt"
            reqs.write_text("".join(f"{p.name} @ {p.url} --hash=sha256:{p.sha256}\n" if p.url else f"{p.name}=={p.version} --hash=sha256:{p.sha256}\n" for p in missing))
            dest = Path(tmp) / "wheels"
            proc = _pip(["download", "--no-deps", "--require-hashes", "--dest", str(dest), *target.pip_args(), "-r", str(reqs)], "downloading the locked wheels")
            if not proc.ok:
                raise proc.error("check the network and index settings (find-links, index-url), or run `pyimage lock`")
            for pin in missing:
                got = dest / pin.filename
                if not got.exists():
                    raise BuildError(f"{pin.name}: pip did not download {pin.filename}", "run `pyimage lock` to resolve again")
                paths[pin.name], _ = cache.add_wheel(got, pin.sha256)
    return paths
