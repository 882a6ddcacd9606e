"""The ``pyimage`` command: thin typer commands over the library, for people and for machines (--json).

Results (tables, what was written, --json) go to stdout, so ``pyimage plan | less`` and ``pyimage inspect … > f``
capture them; progress lines, notes and errors go to stderr.

A ``PyimageError`` becomes two lines, ``error: …`` and ``hint: …``, and its exit code (2 for configuration,
1 for build errors); anything else is a bug and shows its traceback with ``--debug``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

import typer

from pyimage import __version__
from pyimage import console
from pyimage.errors import OS_HINTS, ConfigError, PyimageError

if TYPE_CHECKING:
    from pyimage.templates import DockerfileRun

# Usage errors (unknown flag or command): click's with older typer; newer typer vendors click as typer._click,
# raises its own TyperException subclasses and does not install click at all.
_USAGE_ERRORS: tuple[type[Exception], ...] = (typer.TyperException,) if hasattr(typer, "TyperException") else ()
try:
    from click import ClickException  # type: ignore[import-not-found,unused-ignore]

    _USAGE_ERRORS += (ClickException,)
except ImportError:  # pragma: no cover - depends on the installed typer
    pass

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Build layered, reproducible OCI images of Python apps from their wheels, without Docker.")
cache_app = typer.Typer(no_args_is_help=True, help="Inspect and trim the layer cache.")
app.add_typer(cache_app, name="cache")

_DEBUG = False

ProjectOpt = typer.Option(Path("."), "--project", "-C", help="Project directory (holds pyproject.toml).")
DirArg = typer.Argument(None, metavar="DIR", help="Project directory (the same as -C; default: the current directory).", show_default=False)
PackageOpt = typer.Option(None, "--package", help="Build this member of the uv workspace the project directory is in (with the workspace root's uv.lock).")
SetOpt = typer.Option(None, "--set", "-s", help="Override any \\[tool.pyimage] key: --set key=value (repeatable; TOML values allowed).")
BaseOpt = typer.Option(None, "--base", help="Base image (overrides `base`).")
PythonOpt = typer.Option(None, "--python", help="Target Python X.Y (overrides `python`).")
HeavyOpt = typer.Option(None, "--heavy", help="A heavy package or glob (repeatable; overrides `heavy`).")
PlatformOpt = typer.Option(None, "--platform", help="Target platform, e.g. linux/amd64.")
CacheDirOpt = typer.Option(None, "--cache-dir", help="Cache directory (default $PYIMAGE_CACHE_DIR or ~/.cache/pyimage).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout (a stable contract).")






def _project(directory: Optional[Path], project: Path, package: Optional[str] = None) -> Path:
    """The project directory from ``pyimage build DIR`` or ``-C DIR`` (both: they must agree); neither, and no
    pyproject.toml here: the nearest project above (``config.find_project``); with ``--package NAME``, that
    member of the uv workspace the directory is in."""
    if directory is not None and project != Path(".") and project.resolve() != directory.resolve():
        raise ConfigError(f"two project directories: {directory} and -C {project}", "give the directory once, as an argument or with -C")
    chosen = directory if directory is not None else project
    if directory is None and project == Path(".") and not (Path.cwd() / "pyproject.toml").is_file():
        from pyimage.config import find_project

        found = find_project(Path.cwd())
        if found is not None:  # run from a subdirectory (src/, tests/): the project it is in, as `uv run` finds it
            console.err(f"note: using the project at {found} (the nearest pyproject.toml above {Path.cwd()})")
            chosen = found
    if package:
        from pyimage.pipeline import workspace_member

        return workspace_member(chosen, package)
    return chosen


def _parse_set(items: List[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value", "e.g. --set max-layers=20 or --set 'heavy=[\"torch\"]'")
        value = _toml_value(raw.strip(), key.strip())
        if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool) and key.strip() in _STRING_KEYS):
            value = raw.strip()  # --set python=3.10 / tags=1.0 are strings, not the number 3.1
        out[key.strip()] = value
    return out


_STRING_KEYS = ("python", "tags", "user", "workdir", "owner", "base", "repository")


def _toml_value(raw: str, key: str = "KEY") -> Any:
    from pyimage.config import tomllib

    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if raw[:1] not in ("[", "{") or key in _STRING_KEYS:
            return raw  # a bare string (`base=[::1]:5000/app` too)
        # a list or table whose strings are not quoted (``heavy=[numpy,pandas]``) was taken as one string
        if raw[:1] == "[" and raw.endswith("]"):
            items = [i.strip() for i in raw[1:-1].split(",") if i.strip()]
            example = "[" + ", ".join(i if i[:1] in "\"'" or i.replace(".", "").isdigit() else f'"{i}"' for i in items) + "]"
        else:
            example = '{MODE="prod"}'
        raise ConfigError(
            f"--set {key}={raw}: not a TOML {'list' if raw[:1] == '[' else 'table'} ({str(exc).split(' (at')[0]})",
            f"quote the strings in it, and the whole item for the shell: --set '{key}={example}'",
        ) from None


def _overrides(sets: Optional[List[str]], base: Optional[str], python: Optional[str], heavy: Optional[List[str]], platform: Optional[str], **more: Any) -> dict[str, Any]:
    out = _parse_set(sets or [])
    for key, value in (("base", base), ("python", python), ("platform", platform), *more.items()):
        if value is not None:
            out[key] = value
    if heavy:
        out["heavy"] = list(heavy)
    return out


_CACHE_ROOT: Optional[Path] = None  # named in an OS error that carries no path (a full disk under a thread's write)


def _cache_root(cache_dir: Optional[Path]) -> Path:
    """The cache's directory (not opened yet), remembered for error messages."""
    from pyimage.cache import default_cache_dir

    global _CACHE_ROOT
    _CACHE_ROOT = cache_dir or default_cache_dir()
    return _CACHE_ROOT


def _cache(cache_dir: Optional[Path]):  # type: ignore[no-untyped-def]
    from pyimage.cache import Cache

    return Cache(_cache_root(cache_dir))


def _existing_cache(cache_dir: Optional[Path]):  # type: ignore[no-untyped-def]
    """The cache for `cache info|verify|prune`, which never make one: a mistyped --cache-dir is an error, not an
    empty cache created there (a new-user trial read "removed 0 entries" as "nothing to prune")."""
    root = _cache_root(cache_dir)
    if cache_dir is not None and not (root / "blobs").is_dir():  # named on the command line (the default may be new)
        what = "no such directory" if not root.exists() else "no pyimage cache there"
        raise ConfigError(f"cache directory {root}: {what}", "pass the --cache-dir (or PYIMAGE_CACHE_DIR) your builds use; without one they use " + str(_default_root()))
    return _cache(cache_dir)


def _default_root() -> Path:
    from pyimage.cache import default_cache_dir

    return default_cache_dir()








@app.command()
def build(
    directory: Optional[Path] = DirArg,
    project: Path = ProjectOpt,
    package: Optional[str] = PackageOpt,
    output: Optional[List[str]] = typer.Option(None, "--output", "-o", help="oci:DIR[:TAG], docker-archive:FILE[:NAME:TAG], docker-daemon:[NAME:TAG] or podman:[NAME:TAG] (repeatable)."),
    tag: Optional[List[str]] = typer.Option(None, "--tag", "-t", metavar="NAME[:TAG]", help="Name the image, as docker build -t does (repeatable; no TAG means latest): the name --load, docker-daemon:, podman: and docker-archive:FILE use, and the oci: layout's tag."),
    load: bool = typer.Option(False, "--load", help="Load the image into the local engine: Docker (DOCKER_HOST or the docker context), else podman."),
    push: Optional[List[str]] = typer.Option(None, "--push", help="Push to a registry reference (repeatable)."),
    sets: Optional[List[str]] = SetOpt,
    base: Optional[str] = BaseOpt,
    python: Optional[str] = PythonOpt,
    heavy: Optional[List[str]] = HeavyOpt,
    platform: Optional[str] = PlatformOpt,
    compression: Optional[str] = typer.Option(None, "--compression", help="gzip (default), zstd, or none (plain tar: faster local builds and loads, bigger pushes)."),
    cache_dir: Optional[Path] = CacheDirOpt,
    jobs: int = typer.Option(2, "--jobs", "-j", help="Layers built in parallel (1: one at a time, none started while the plan is still checking)."),
    username: Optional[str] = typer.Option(None, "--username", help="Registry user for --push / a registry base."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the registry password from stdin."),
    insecure_registry: Optional[List[str]] = typer.Option(None, "--insecure-registry", help="Allow plain HTTP to this registry host."),
    ca_bundle: Optional[Path] = typer.Option(None, "--ca-bundle", help="CA certificates to trust for registries."),
    label: Optional[List[str]] = typer.Option(None, "--label", help="Image label KEY=VALUE (repeatable; added to `labels`)."),
    annotation: Optional[List[str]] = typer.Option(None, "--annotation", help="Manifest annotation KEY=VALUE (repeatable; added to `annotations`)."),
    as_json: bool = JsonOpt,
) -> None:
    """Build the project's image and write it to each --output (default: oci:dist/image:VERSION, the project's version as the tag)."""
    from pyimage.config import load_config
    from pyimage.outputs import parse_output, parse_tags
    from pyimage.pipeline import run
    from pyimage.report import build_document

    tags = parse_tags(tag or [])
    overrides = _overrides(sets, base, python, heavy, platform, compression=compression)
    if output:
        overrides["output"] = list(output)
    cfg = load_config(_project(directory, project, package), overrides)
    if load:
        from pyimage.oci.engine import default_engine_output

        cfg = cfg.with_values(output=(*cfg.output, parse_output(default_engine_output(), cfg.project_dir)))
    cfg = _add_pairs(cfg, labels=label, annotations=annotation)
    registry = _registry_settings(username, password_stdin, insecure_registry, ca_bundle, push or [])
    result = run(cfg, _cache_root(cache_dir), console.events(), tags=tags, push=tuple(push or []), registry=registry, jobs=jobs, written=_KEPT.append)
    if as_json:
        console.print_json(build_document(result))
        return
    console.show_build(result, tags)


def _add_pairs(cfg: Any, **pairs: Optional[List[str]]) -> Any:
    """``--label``/``--annotation`` KEY=VALUE items added over the file's (and --set's) table of that key."""
    values = {key: dict(getattr(cfg, key)) for key in pairs}
    for key, items in pairs.items():
        for item in items or []:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                flag = "--" + key.rstrip("s")
                raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE", f"e.g. {flag} org.opencontainers.image.source=https://example.org/app")
            values[key] = {**values[key], name.strip(): value}
    return cfg.with_values(**values)


def _registry_settings(username: Optional[str], password_stdin: bool, insecure: Optional[List[str]], ca_bundle: Optional[Path], push: List[str]) -> Any:
    from pyimage.oci.reference import parse_reference
    from pyimage.publish import RegistrySettings

    if password_stdin and not username:
        raise ConfigError("--password-stdin needs --username", "pass --username USER as well")
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    if password_stdin and not password:  # `< /dev/null`, an empty secret in CI: the registry would say only 401
        raise ConfigError("--password-stdin read no password from standard input", "pipe it in: --password-stdin < token-file (or echo \"$TOKEN\" | pyimage …)")
    targets = frozenset(parse_reference(ref).registry for ref in push) if push else None
    return RegistrySettings(username, password, frozenset(insecure or []), str(ca_bundle) if ca_bundle else None, targets)


@app.command()
def plan(
    directory: Optional[Path] = DirArg,
    project: Path = ProjectOpt,
    package: Optional[str] = PackageOpt,
    sets: Optional[List[str]] = SetOpt,
    base: Optional[str] = BaseOpt,
    python: Optional[str] = PythonOpt,
    heavy: Optional[List[str]] = HeavyOpt,
    platform: Optional[str] = PlatformOpt,
    cache_dir: Optional[Path] = CacheDirOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Print the layer plan (packages, installed sizes, why each is where it is); builds no layer."""
    from pyimage.config import load_config
    from pyimage.pipeline import plan_only
    from pyimage.report import plan_document

    cfg = load_config(_project(directory, project, package), _overrides(sets, base, python, heavy, platform))
    document = plan_document(plan_only(cfg, _cache(cache_dir), console.events()))
    if as_json:
        console.print_json(document)
        return
    console.show_plan(document)


@app.command()
def lock(
    directory: Optional[Path] = DirArg,
    project: Path = ProjectOpt,
    package: Optional[str] = PackageOpt,
    upgrade: bool = typer.Option(False, "--upgrade", help="Take the newest versions allowed instead of keeping locked ones."),
    sets: Optional[List[str]] = SetOpt,
    base: Optional[str] = BaseOpt,
    python: Optional[str] = PythonOpt,
    platform: Optional[str] = PlatformOpt,
    cache_dir: Optional[Path] = CacheDirOpt,
) -> None:
    """Resolve the dependencies again and rewrite pyimage's lock file (pylock.pyimage.toml)."""
    from pyimage.pipeline import lock_only
    from pyimage.config import load_config

    cfg = load_config(_project(directory, project, package), _overrides(sets, base, python, None, platform))
    before = _locked_versions(cfg.project_dir / cfg.lock)
    prep = lock_only(cfg, _cache(cache_dir), console.events(False), upgrade=upgrade)
    console.out(f"wrote {cfg.project_dir / cfg.lock} ({len(prep.wheels)} wheels)")
    after = _locked_versions(cfg.project_dir / cfg.lock)
    for (name, target), version in sorted(after.items()):  # as `uv lock` says what it updated
        old = before.get((name, target))
        on = f" ({target})" if len({t for _, t in after}) > 1 else ""
        if old is None:
            console.out(f"  added {name} {version}{on}")
        elif old != version:
            from packaging.version import InvalidVersion, Version

            try:
                moved = "downgraded" if Version(version) < Version(old) else "updated"
            except InvalidVersion:
                moved = "updated"
            console.out(f"  {moved} {name} {old} → {version}{on}")
    for name, target in sorted(set(before) - set(after)):
        console.out(f"  removed {name} {before[(name, target)]}" + (f" ({target})" if len({t for _, t in before}) > 1 else ""))
    if before and before == after and not upgrade:
        console.err("note: no version changed: locked versions are kept where they still fit; `pyimage lock --upgrade` takes the newest allowed")


def _locked_versions(path: Path) -> dict[tuple[str, str], str]:
    """``{(name, target platform): version}`` of a lock pyimage wrote; empty when there is none (or it is unreadable)."""
    from pyimage.config import tomllib

    try:
        packages = tomllib.loads(path.read_text()).get("packages", [])
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        return {}
    out = {}
    for entry in packages if isinstance(packages, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("version"), str):
            target = ((entry.get("tool") or {}).get("pyimage") or {}).get("target", "") if isinstance(entry.get("tool"), dict) else ""
            out[(entry["name"], str(target))] = entry["version"]
    return out


@app.command()
def inspect(
    image: str = typer.Argument(..., help="oci:DIR[:TAG], docker-archive:FILE or a registry reference."),
    platform: Optional[str] = typer.Option(None, "--platform", help="Platform to pick from an index (default: the layout's only image, else linux/amd64)."),
    cache_dir: Optional[Path] = CacheDirOpt,
    as_json: bool = JsonOpt,
    check: bool = typer.Option(False, "--check", help="Check the image as strict engines read it (schemas, digests, diff_ids, repeated paths)."),
) -> None:
    """Show an image's layers (with the names pyimage gave them), sizes and run configuration."""
    from pyimage.base import load_base
    from pyimage.oci.model import Platform, layer_names

    image = _local_image(image)
    if check:
        _check(image, as_json)
        return
    if image.startswith("rootfs:") or image in ("", "scratch"):
        raise ConfigError(f"inspect {image!r}: not an image", "give oci:DIR[:TAG], docker-archive:FILE or a registry reference")
    try:
        wanted = Platform.parse(platform) if platform is not None else None
    except ValueError as exc:
        raise ConfigError(f"--platform {platform!r}: {exc}", "give os/arch[/variant], e.g. linux/amd64 or linux/arm64") from None
    chosen = _inspect_platform(image, wanted)
    # without --platform, a registry reference that names one image is shown whatever its platform (an index:
    # linux/amd64, listed with the others)
    loaded, source = load_base(image, chosen, _cache(cache_dir), verify_layers=False, any_platform=wanted is None)
    platforms = _index_platforms(image)
    named = layer_names(loaded.config, len(loaded.layers))  # the base's layers are "base", as build --json names them
    names = [name for name, _ in named]
    run = loaded.config.get("config") or {}
    data: dict[str, Any] = {
        "image": source,
        "platform": str(loaded.platform),
        "created": loaded.config.get("created"),
        "layers": [
            {"name": n, **({"source": src} if src else {}), "digest": l.digest, "size": l.size, "media_type": l.descriptor.media_type}
            for (n, src), l in zip(named, loaded.layers)
        ],
        "config": {k: run.get(k) for k in ("Entrypoint", "Cmd", "Env", "User", "WorkingDir", "Labels") if run.get(k) is not None},
    }
    if platforms:
        data["index"] = [{"platform": str(d.platform), "digest": d.digest, "size": d.size} for d in platforms]
    if as_json:
        console.print_json(data)
        return
    if platforms:
        console.table(f"{source}: an image index of {len(platforms)} platforms" + (f", showing {data['platform']}" if wanted is not None else f" (--platform picks one; showing {data['platform']})"), ["platform", "manifest", "size"], [[str(d.platform), d.digest[7:19], console.human_size(d.size)] for d in platforms])
    console.table(f"{source} ({data['platform']}, created {data['created']})", ["layer", "digest", "size"], [[n, l.digest[7:19], console.human_size(l.size)] for n, l in zip(names, loaded.layers)])
    for key, value in data["config"].items():
        console.out(f"{key}: {json.dumps(value)}")


def _local_image(text: str) -> str:
    """``DIR[:TAG]`` naming an OCI layout here, or ``FILE`` naming a tar here, as ``oci:``/``docker-archive:``;
    anything else is left as it is (a registry reference). ``pyimage inspect dist/image`` reads the layout the
    build wrote instead of asking Docker Hub for an image called ``dist/image``."""
    if text.startswith(("oci:", "docker-archive:", "docker://")):
        return text
    for path, tag in ((text, ""), tuple(text.rsplit(":", 1)) if ":" in text else (text, "")):
        where = Path(path).expanduser()
        if where.is_dir() and (where / "index.json").is_file():
            return f"oci:{path}" + (f":{tag}" if tag else "")
        if not tag and where.is_file():
            return f"docker-archive:{path}"
    return text


def _inspect_platform(image: str, wanted: Any) -> Any:
    """The platform ``inspect`` shows: ``--platform``'s, else linux/amd64; for an ``oci:`` layout, without
    ``--platform`` the only image its tag names whatever its platform, and a platform the layout lacks is one error
    listing the ones it has (reading other people's images: any platform will do)."""
    from pyimage.errors import BuildError
    from pyimage.oci.model import Platform, match_platform

    default = wanted or Platform("linux", "amd64")
    if not image.startswith("oci:"):
        return default
    from pyimage.oci.layout import layout_platforms, split_layout_ref

    directory, tag = split_layout_ref(image[len("oci:"):], default_tag="")
    try:
        found = layout_platforms(directory, tag or None)
    except (BuildError, OSError):
        return default  # reading the layout says what is wrong with it, as it did
    if wanted is None and len(found) == 1 and found[0].platform is not None:
        return found[0].platform
    if found and match_platform(found, default) is None:
        has = [str(d.platform) for d in found]
        how = "pass --platform with one of them" if wanted is None else "pass --platform with one it has"
        raise ConfigError(f"{image}: no image for {default} (has: {', '.join(has)})", f"{how}: pyimage inspect --platform {has[0]} {image}")
    return default


def _index_platforms(image: str) -> list[Any]:
    """For an ``oci:`` layout whose tag names an image index, that index's platform manifests."""
    if not image.startswith("oci:"):
        return []
    from pyimage.oci.layout import index_platforms, split_layout_ref

    directory, tag = split_layout_ref(image[len("oci:"):], default_tag="")
    return index_platforms(directory, tag or None)


def _check(image: str, as_json: bool) -> None:
    from pyimage.errors import BuildError
    from pyimage.oci.check import check_image

    from pyimage.outputs import parse_output

    kind, sep, rest = image.partition(":")
    if sep and kind in ("oci", "docker-archive") and rest:
        path = parse_output(image, Path.cwd()).writes or Path(image)  # read where `-o` would have written it
    elif sep and kind == "oci-archive":
        path = Path(rest.partition(":")[0])
    else:
        path = Path(image)
    if not path.exists():
        raise ConfigError(f"inspect --check {image}: no such layout or archive", "give oci:DIR, docker-archive:FILE or a path (copy a registry image to a layout first: skopeo copy docker://REF oci:DIR:TAG)")
    report = check_image(path)
    if as_json:
        console.print_json({"image": str(path), "ok": report.ok, "manifests": report.manifests, "layers": report.layers, "blobs": report.blobs, "findings": report.findings})
    else:
        for finding in report.findings:
            print(finding)
        console.out(f"checked {path}: {report.manifests} manifest(s), {report.layers} layer(s), {report.blobs} blob(s)")  # the result: stdout
    if not report.ok:
        raise BuildError(f"{path}: {len(report.findings)} problem(s) found", "see the lines above; rebuild the image with this pyimage, or report how it was made")


@app.command("index")
def index_cmd(
    images: List[str] = typer.Argument(..., metavar="IMAGE...", help="Per-platform images pyimage built: REF (a registry) or oci:DIR[:TAG]."),
    output: Optional[List[str]] = typer.Option(None, "--output", "-o", help="Write the index to oci:DIR[:TAG] (repeatable)."),
    push: Optional[List[str]] = typer.Option(None, "--push", help="Push the index to a registry reference (repeatable)."),
    annotation: Optional[List[str]] = typer.Option(None, "--annotation", help="Index annotation KEY=VALUE (repeatable)."),
    cache_dir: Optional[Path] = CacheDirOpt,
    username: Optional[str] = typer.Option(None, "--username", help="Registry user for --push and registry images."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the registry password from stdin."),
    insecure_registry: Optional[List[str]] = typer.Option(None, "--insecure-registry", help="Allow plain HTTP to this registry host."),
    ca_bundle: Optional[Path] = typer.Option(None, "--ca-bundle", help="CA certificates to trust for registries."),
    as_json: bool = JsonOpt,
) -> None:
    """Merge single-platform images built apart (a CI matrix) into one image index, unchanged."""
    from pyimage.merge import check_sources, load_sources, merge_index

    check_sources(images)
    outputs = list(output or [])
    for out in outputs:
        if not out.startswith("oci:") or not out[4:]:
            raise ConfigError(f"--output {out!r}: an image index goes to an OCI layout", "use -o oci:DIR[:TAG], or --push REF")
    if not outputs and not push:
        raise ConfigError("pyimage index: nowhere to put the index", "add --push REF (e.g. ghcr.io/org/app:1.0) or -o oci:DIR[:TAG]")
    notes: dict[str, str] = {}
    for item in annotation or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--annotation {item!r}: expected KEY=VALUE", "e.g. --annotation org.opencontainers.image.version=1.0")
        notes[key.strip()] = value
    registry = _registry_settings(username, password_stdin, insecure_registry, ca_bundle, list(push or []))
    cache = _cache(cache_dir)
    events = console.events()
    with cache.lock("cache", shared=True):
        cache.sweep()
        from pyimage.oci.reference import parse_reference

        targets = [parse_reference(r).registry for r in push or []]  # parsed before any work: a bad one is one error
        sources = load_sources(images, cache, registry, outputs=bool(outputs), push_registries=targets)
        index, written, pushed = merge_index(sources, notes, outputs, list(push or []), registry, cache, events)
    platforms = [{"platform": str(s.image.platform), "digest": s.image.digest, "source": s.shown} for s in sources]
    if as_json:
        console.print_json({"index": {"digest": index.digest, "size": len(index.index_bytes())}, "platforms": platforms, "outputs": written, "pushed": pushed})
        return
    console.table(f"image index {index.digest}", ["platform", "manifest", "from"], [[p["platform"], p["digest"][7:19], p["source"]] for p in platforms])
    for w in written:
        console.out(f"wrote {w}")
    for p in pushed:
        console.out(f"pushed {p['reference']}@{p['digest']} ({p['uploaded']} blob(s) uploaded, {p['mounted']} mounted, {p['skipped']} already there)")


@app.command()
def init(
    project: Path = ProjectOpt,
    ci: Optional[str] = typer.Option(None, "--ci", help="Also write a CI workflow: github."),
    base: Optional[str] = typer.Option(None, "--base", help="The base to write (default python:3.12-slim, or a python image of the local Docker Engine when Docker Hub cannot be reached)."),
) -> None:
    """Add a \\[tool.pyimage] section to pyproject.toml (and a CI workflow with --ci github); in an app that is not a
    package (requirements.txt, manage.py, main.py), write a pyproject.toml for it first."""
    from pyimage.pipeline import unpackaged_app, workspace_root_note
    from pyimage.templates import DEFAULT_INIT_BASE, offline_base, read_dockerfile, render

    pyproject = project / "pyproject.toml"
    told: list[str] = []
    created = False
    kind, sep, rest = (base or "").partition(":")
    if sep and kind in ("rootfs", "oci", "docker-archive") and rest:  # a typo'd path is said here, not at the first build
        where = Path(rest.rsplit(":", 1)[0] if kind == "oci" and not Path(rest).expanduser().exists() else rest).expanduser()
        if not (where if where.is_absolute() else project / where).exists():
            told.append(f"note: --base {base}: nothing is at {where if where.is_absolute() else project / where} yet; the build reads it from there")
    if not pyproject.exists():
        legacy = [name for name in ("setup.py", "setup.cfg") if (project / name).is_file()]
        if not legacy:
            from pyimage.config import find_project

            above = find_project(project)
            if above is not None:  # run from a subdirectory: adding a project here would make a second one
                raise ConfigError(f"no pyproject.toml, setup.py or setup.cfg in {project}; the project is at {above}", f"run `pyimage init -C {above}` (or run init there)")
            if not ((project / "requirements.txt").is_file() or any(project.glob("*.py"))):
                raise ConfigError(
                    f"no pyproject.toml, setup.py, setup.cfg, requirements.txt or *.py in {project}",
                    "run it in the app's directory (or pass -C DIR), or create the project first (e.g. with `uv init --app`)",
                )
    app = unpackaged_app(project)
    if not pyproject.exists() and app is not None:
        # The usual Docker layout (requirements.txt, manage.py, …): a minimal [project] so pyimage and uv can read it;
        # requirements.txt stays the one list of dependencies (a hashed one is installed as a lock).
        pyproject.write_text(f'[project]\nname = "{app[0]}"\nversion = "0"\ndependencies = []  # in requirements.txt (see requirements below)\n')
        told.append(f"wrote {pyproject} with a minimal [project] (name {app[0]!r} from the directory, version \"0\"); no [build-system]: the app is not built as a package")
    elif not pyproject.exists():
        # A setuptools project without pyproject.toml: one holding only [tool.pyimage]. With no [build-system] table
        # its wheel is built by setuptools' legacy backend, as pip does, so the project is otherwise unchanged.
        pyproject.write_text(f"# pyimage's settings for this {legacy[0]} project; without [build-system], setuptools builds it as before.\n")
        created = True
    text = pyproject.read_text()
    workspace_note = workspace_root_note(project) if "[tool.pyimage]" not in text else None
    if "[tool.pyimage]" in text:
        console.err(f"{pyproject} already has [tool.pyimage]; left as it is" + (f" (--base not written: set base = {json.dumps(base)} in it yourself)" if base else ""))
    else:
        chosen, note = (base, None) if base else offline_base()
        section = render("pyproject-section.toml")
        docker = read_dockerfile(project / "Dockerfile")  # a project moving from a Dockerfile keeps how its image runs
        if docker is not None and not docker.any():
            docker = None
        if app is not None:
            if docker is not None and (docker.entrypoint or docker.command):
                lines = [f"entrypoint = {json.dumps(docker.entrypoint)}  # the Dockerfile's ENTRYPOINT"] if docker.entrypoint else []
                lines += [f"command = {json.dumps(docker.command)}  # the Dockerfile's CMD; the project's files are copied to workdir and this runs there"] if docker.command else []
                told += [f"{key} = {json.dumps(value)}: the Dockerfile's {word}" for key, word, value in (("entrypoint", "ENTRYPOINT", docker.entrypoint), ("command", "CMD", docker.command)) if value]
                if docker.ports:
                    lines.append(f"ports = {_ports_toml(docker.ports)}  # the Dockerfile's EXPOSE")
            elif app[1] is not None:
                # As `command` (the image's Cmd), like a Dockerfile's CMD: `docker run IMAGE python manage.py migrate`
                # replaces it rather than becoming arguments to a guessed server.
                entry = f"command = {json.dumps(app[1])}"
                lines = [entry + "  # the project is not a package: its files are copied to workdir (/app), and this runs there; `docker run IMAGE ARGS` replaces it"]
                told.append(f"{entry}: guessed from the project's files; change it to what " + ("your Dockerfile runs (CMD)" if (project / "Dockerfile").is_file() else "runs your app, if it is something else"))
                port = _listening_port(app[1])
                if docker is not None and docker.ports:
                    lines.append(f"ports = {_ports_toml(docker.ports)}  # the Dockerfile's EXPOSE")
                elif port is not None:  # a Dockerfile says EXPOSE beside such a CMD: `docker run -P` publishes it
                    lines.append(f"ports = [{port}]  # the port the command listens on (EXPOSE): docker run -P publishes it")
                    told.append(f"ports = [{port}]: the port the guessed command listens on")
            else:
                lines = ['# command = ["python", "-m", "yourapp"]  # required: the project is not a package; its files are copied to workdir (/app), and this runs there']
                told.append("no command guessed (no *.py file, no package with __main__.py): set command to what your Dockerfile runs (CMD) before building")
            if (project / "requirements.txt").is_file() and not _has_dependencies(pyproject):
                lines.append('requirements = "requirements.txt"  # the dependencies (a file with --hash on every line is installed as a lock)')
                told.append("requirements = \"requirements.txt\": the dependencies stay in requirements.txt")
            section = re.sub(r"^# entrypoint = .*$", lambda _m: "\n".join(lines), section, count=1, flags=re.M)
        if chosen and chosen != DEFAULT_INIT_BASE:
            section = section.replace(f'base = "{DEFAULT_INIT_BASE}"', f"base = {json.dumps(chosen)}")
        scripts = _console_scripts(text, project)
        if app is None and docker is not None and docker.entrypoint:  # a package whose Dockerfile names what runs
            section = section.replace('# entrypoint = ["myapp"]        # default: the project\'s only console script', f"entrypoint = {json.dumps(docker.entrypoint)}  # the Dockerfile's ENTRYPOINT")
            told.append("entrypoint = the Dockerfile's ENTRYPOINT" + (", command = its CMD" if docker.command else ""))
            scripts = []  # chosen: no first console script needed
        elif len(scripts) > 1:  # the build would stop at "which one runs is ambiguous": choose the first, name the rest
            section = section.replace('# entrypoint = ["myapp"]        # default: the project\'s only console script', f"entrypoint = {json.dumps([scripts[0]])}  # the project's console scripts: {', '.join(scripts)}")
        if docker is not None:
            section = section.rstrip("\n") + "\n" + "".join(f"{line}\n" for line in _dockerfile_lines(docker, app is None, told))
        pyproject.write_text(text.rstrip("\n") + "\n\n" + section)
        for line in told:
            console.err(line)
        details = ["holding only [tool.pyimage]"] if created else []
        details.append(f"base = {chosen or DEFAULT_INIT_BASE}")
        if len(scripts) > 1:
            details.append(f"entrypoint = {scripts[0]}, the first of {len(scripts)} console scripts: edit it to run another")
        console.err(f"{'created' if created else 'added [tool.pyimage] to'} {pyproject} ({'; '.join(details)})")
        if note:
            console.err(f"note: {note}")
        if workspace_note:
            console.err(f"note: {workspace_note}")
    if ci == "github":
        dest = project / ".github" / "workflows" / "pyimage.yml"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(render("github-workflow.yml"))
        console.err(f"wrote {dest}: replace OWNER/pyimage@v1 in it with the pyimage action you use, pinned to a commit sha")
        kind = _configured_base(pyproject).partition(":")[0]
        if kind in ("rootfs", "oci", "docker-archive", "docker-daemon"):
            console.err(f"note: the base is {kind}:, something of this machine that a CI runner does not have: give the workflow a registry base (base = \"python:3.12-slim\"), or put the file in the repository")
    elif ci:
        raise ConfigError(f"--ci {ci}: unknown CI", "supported: github")


def _dockerfile_lines(docker: "DockerfileRun", package: bool, told: list[str]) -> list[str]:
    """The [tool.pyimage] lines for the Dockerfile's run settings init has not written already (``ENV``, ``USER``,
    ``WORKDIR``; for a package, its ``CMD`` after an ``ENTRYPOINT`` and ``EXPOSE``), each said in ``told``, and
    what could not be carried over."""
    lines = []
    if package:
        if docker.entrypoint and docker.command:
            lines.append(f"command = {json.dumps(docker.command)}  # the Dockerfile's CMD (arguments to its ENTRYPOINT)")
        elif docker.command:
            told.append(f"note: the Dockerfile's CMD {json.dumps(docker.command)} is not carried over: the project's console script is the entrypoint; set entrypoint = {json.dumps(docker.command)} to run that instead")
        if docker.ports:
            lines.append(f"ports = {_ports_toml(docker.ports)}  # the Dockerfile's EXPOSE")
    if docker.env:
        lines.append("env = { " + ", ".join(f"{json.dumps(k) if not re.fullmatch(r'[A-Za-z0-9_-]+', k) else k} = {json.dumps(v)}" for k, v in docker.env.items()) + " }  # the Dockerfile's ENV")
    if docker.user:
        lines.append(f"user = {json.dumps(docker.user)}  # the Dockerfile's USER (a name the base lacks is created)")
    if docker.workdir and (package or docker.workdir != "/"):  # an app's files are never copied to /
        lines.append(f"workdir = {json.dumps(docker.workdir)}  # the Dockerfile's WORKDIR")
    carried = [k for k, v in (("EXPOSE", docker.ports), ("ENV", docker.env), ("USER", docker.user), ("WORKDIR", docker.workdir)) if v]
    if carried:
        told.append(f"from the Dockerfile: {', '.join(carried)}")
    if docker.skipped:
        told.append(f"note: not carried over from the Dockerfile (set while building, or for building): {'; '.join(docker.skipped[:5])}")
    return lines


def _ports_toml(ports: Sequence[str]) -> str:
    """``["8080", "53/udp"]`` as init writes ports: a TCP port as a number, another protocol as its string."""
    return "[" + ", ".join(p.removesuffix("/tcp") if p.removesuffix("/tcp").isdigit() else json.dumps(p) for p in ports) + "]"


def _listening_port(argv: Sequence[str]) -> int | None:
    """The TCP port a guessed server command binds (``--bind 0.0.0.0:8000``, ``--port 8000``, ``runserver
    0.0.0.0:8000``), for init's ``ports``; None when it names none."""
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg in ("--port", "-p") and i + 1 < len(argv) else arg.rpartition(":")[2] if re.fullmatch(r"[0-9.]+:\d+", arg) else ""
        if value.isdigit() and 0 < int(value) < 65536:
            return int(value)
    return None


def _configured_base(pyproject: Path) -> str:
    """``[tool.pyimage] base`` as written (a string), or ""."""
    from pyimage.config import tomllib

    try:
        base = tomllib.loads(pyproject.read_text()).get("tool", {}).get("pyimage", {}).get("base")
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        return ""
    return base if isinstance(base, str) else ""


def _has_dependencies(pyproject: Path) -> bool:
    """Whether pyproject.toml lists any [project] dependencies (then requirements.txt is left for the user to pick)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    try:
        project = tomllib.loads(pyproject.read_text()).get("project") or {}
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return bool(isinstance(project, dict) and project.get("dependencies"))


def _console_scripts(pyproject_text: str, project: Path | None = None) -> list[str]:
    """The console scripts ``[project.scripts]`` declares, in the file's order (for init's ``entrypoint``); when
    it declares none, Poetry's ``[tool.poetry.scripts]`` (a string, or a table with ``callable``: not its file
    scripts), else setup.cfg's ``[options.entry_points] console_scripts``. setup.py is never run."""
    from pyimage.config import tomllib

    try:
        data = tomllib.loads(pyproject_text)
    except tomllib.TOMLDecodeError:
        return []
    def table(parent: Any, key: str) -> dict[str, Any]:
        value = parent.get(key) if isinstance(parent, dict) else None
        return value if isinstance(value, dict) else {}

    scripts = table(table(data, "project"), "scripts")
    if scripts:
        return [str(name) for name in scripts]
    poetry = table(table(table(data, "tool"), "poetry"), "scripts")
    if poetry:
        return [str(name) for name, value in poetry.items() if isinstance(value, str) or (isinstance(value, dict) and "callable" in value)]
    return _setup_cfg_scripts(project / "setup.cfg") if project is not None else []


def _setup_cfg_scripts(setup_cfg: Path) -> list[str]:
    """``console_scripts`` of setup.cfg's ``[options.entry_points]`` in the file's order (``name = module:func``
    lines, as setuptools reads them); [] when the file is missing or not readable as setuptools' INI."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(setup_cfg.read_text(encoding="utf-8", errors="replace"), str(setup_cfg))
        value = parser.get("options.entry_points", "console_scripts", fallback="")
    except (OSError, configparser.Error):
        return []
    names = []
    for line in value.splitlines():
        name, sep, target = line.partition("=")
        if sep and name.strip() and target.strip() and not name.strip().startswith(("#", ";")):
            names.append(name.strip())
    return list(dict.fromkeys(names))


@cache_app.command("info")
def cache_info(cache_dir: Optional[Path] = CacheDirOpt, as_json: bool = JsonOpt) -> None:
    """Size, entries and hit counts of the cache."""
    stats = _existing_cache(cache_dir).stats()
    data: dict[str, Any] = {k: (str(v) if isinstance(v, Path) else v) for k, v in stats.__dict__.items()}
    if as_json:
        console.print_json(data)
        return
    console.table(f"cache {stats.root}", ["entry", "value"], [[k, console.human_size(int(v)) if k.endswith("bytes") else str(v)] for k, v in data.items() if k != "root"])


@cache_app.command("verify")
def cache_verify(cache_dir: Optional[Path] = CacheDirOpt) -> None:
    """Re-hash every blob (removing the ones that do not match) and report temp files and other leftovers."""
    report = _existing_cache(cache_dir).verify()
    for digest in report.corrupt:
        console.err(f"removed corrupt blob {digest}")
    for path in report.leftovers:
        console.err(f"removed leftover temp file {path} (from a run that was killed)")
    for path in report.dangling:
        console.err(f"removed unreadable layer record {path}")
    for path in report.in_use:
        console.err(f"kept {path}: a running pyimage process is writing it")
    if report.clean:
        console.err("cache verified: clean" + (f" ({len(report.in_use)} temp file(s) of running builds)" if report.in_use else ""))
        return
    parts = [f"{len(report.corrupt)} corrupt blob(s) removed; they will be rebuilt"] if report.corrupt else []
    if report.leftovers:
        parts.append(f"{len(report.leftovers)} leftover temp file(s) removed ({console.human_size(report.leftover_bytes)})")
    if report.dangling:
        parts.append(f"{len(report.dangling)} unreadable layer record(s) removed")
    console.err("cache verified: " + "; ".join(parts))
    raise typer.Exit(1)


@cache_app.command("prune")
def cache_prune(
    cache_dir: Optional[Path] = CacheDirOpt,
    max_size: Optional[str] = typer.Option(None, "--max-size", help="Keep the cache under this size (e.g. 20GB)."),
    older_than: Optional[str] = typer.Option(None, "--older-than", help="Remove entries unused for this long (e.g. 30d, 12h)."),
) -> None:
    """Remove least-recently-used entries (blobs, wheels, build environments, kept app wheels)."""
    from pyimage.config import parse_size

    if not max_size and not older_than:
        raise ConfigError("cache prune: nothing to do without a limit", "give --max-size (e.g. 20GB) and/or --older-than (e.g. 30d)")
    try:
        size = parse_size(max_size) if max_size else None
    except ValueError:
        raise ConfigError(f"--max-size {max_size!r}: not a size", "e.g. --max-size 20GB") from None
    age = None
    if older_than:
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
        if older_than[-1:] not in units or not older_than[:-1].isdigit():
            raise ConfigError(f"--older-than {older_than!r}: not an age", "e.g. --older-than 30d (s, m, h, d, w)")
        age = int(older_than[:-1]) * units[older_than[-1]]
    removed, freed = _existing_cache(cache_dir).prune(size, age)
    console.err(f"removed {removed} entries, freed {console.human_size(freed)}")


@app.callback(invoke_without_command=True)
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    global _DEBUG
    _DEBUG = debug or bool(os.environ.get("PYIMAGE_DEBUG"))
    if not _DEBUG:
        _hold_backend_warnings()
    if version:
        print(f"pyimage {__version__}")
        raise typer.Exit()


_BACKEND_WARNINGS: list[str] = []  # first lines of the build backend's warnings, held back (shown with --debug)


def _hold_backend_warnings() -> None:
    """The build backend's warnings (pypa/build re-raises them here as ``BuildBackendWarning``: setuptools'
    deprecation notices run to ~80 lines for a setup.py project) are held back when the build succeeds, as
    ``pip install .`` does; a one-line note counts them and ``--debug`` shows them. A failing backend's own
    output is shown with its error (``backend_failure``)."""
    import warnings

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        # matched by name: importing pyproject_hooks here would cost every command its import (~3 ms)
        if isinstance(category, type) and any(c.__name__ == "BuildBackendWarning" and c.__module__.startswith("pyproject_hooks") for c in category.__mro__):
            first = next((l.strip() for l in str(message).splitlines() if l.strip()), "")
            if first not in _BACKEND_WARNINGS:
                _BACKEND_WARNINGS.append(first)
            return
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


_SIGNALLED = 0  # the signal that interrupted this run: typer turns the KeyboardInterrupt into a plain exit code
_RUNNING = False  # a command is running: a signal interrupts it; once it returned, the run ends as it would have
_KEPT: list[str] = []  # the outputs written complete so far (a build's), named when an interrupt comes later


class _Interrupt(KeyboardInterrupt):
    """What a signal raises. A subclass, because CPython (3.11, 3.12) remembers a plain KeyboardInterrupt that ends
    code run from a string (a dataclass's generated ``__init__`` as rich is imported, say) and, under ``python -m
    pyimage``, kills the process with SIGINT at exit even though it was handled: a silent exit 130."""


def _on_signal(signum: int, _frame: object) -> None:
    global _SIGNALLED
    # A second Ctrl-C while temp files are being removed would leave them behind: ignore further signals.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if not _RUNNING:
        return  # the command is done (a build's outputs all written and reported): nothing left to interrupt
    _SIGNALLED = signum
    raise _Interrupt  # unwinds the build: every ``finally`` on the way removes its temp files


def _ignore_signals() -> None:
    """After the command, a signal changes nothing. The interpreter's teardown resets a Python-level handler to
    the default action (which kills the process silently, exit 130, after a build whose outputs were all
    written) but leaves an ignored signal ignored."""
    global _RUNNING
    _RUNNING = False
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _interrupted(code: int = 130) -> None:
    console.err("error: interrupted")
    if _KEPT:
        console.err(f"hint: written complete before the interrupt, and kept: {', '.join(_KEPT)}; nothing half-written was kept; run the command again to finish")
    else:
        console.err("hint: nothing half-written was kept; run the command again to finish")
    sys.exit(code)


def _debug_first(argv: List[str]) -> List[str]:
    """``--debug`` anywhere (``pyimage build --debug``, as the hint says) means the global option."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" not in argv[:end]:
        return argv
    return ["--debug", *(a for a in argv[:end] if a != "--debug"), *argv[end:]]


# docker build's flags that have no pyimage twin, and the pyimage way to get what they are for.
_DOCKER_FLAG_HINTS = {
    ("-f", "--file"): "pyimage reads no Dockerfile: the image comes from pyproject.toml's [tool.pyimage]; give another project as `pyimage build DIR` (or -C DIR)",
    ("--build-arg",): "pyimage has no Dockerfile ARGs: override a [tool.pyimage] key with --set KEY=VALUE (e.g. --set 'env={MODE=\"prod\"}'), or add --label KEY=VALUE",
    ("--no-cache",): "layers are reused only when their inputs are identical; to rebuild every layer, pass an empty --cache-dir DIR (or `pyimage cache prune`)",
    ("--progress", "-q", "--quiet"): "progress goes to stderr (silence it with 2>/dev/null); --json prints the result as one JSON document on stdout",
    ("--target",): "pyimage has no build stages: the image is the base plus the project's wheels",
}


def _usage_hint(message: str) -> str:
    """The hint under a usage error: the pyimage way for a docker build flag, else where the help is."""
    if "No such option" in message:
        flag = message.split("No such option:", 1)[1].strip().split()[0].rstrip(".") if "No such option:" in message else ""
        for flags, hint in _DOCKER_FLAG_HINTS.items():
            if flag in flags:
                return hint
    if "'--push' requires an argument" in message:
        return "--push takes the reference to push to: --push REGISTRY/NAME:TAG (-t names the image for --load and files)"
    return "run `pyimage --help` or `pyimage COMMAND --help`"


def main(argv: Optional[List[str]] = None) -> None:
    """The program: the command run, its errors and interrupts shown (see ``_main``); signals are ignored once it
    is done, so they cannot end the process during the interpreter's teardown."""
    global _RUNNING, _SIGNALLED
    _RUNNING, _SIGNALLED = True, 0
    _KEPT.clear()
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        _main(argv)
    finally:
        _ignore_signals()


def _main(argv: Optional[List[str]]) -> None:
    global _RUNNING
    try:
        code = app(args=_debug_first(list(sys.argv[1:] if argv is None else argv)), standalone_mode=False)  # a typer.Exit / Ctrl-C comes back as its exit code
        _RUNNING = False
    except PyimageError as exc:
        if _DEBUG:
            traceback.print_exc()
        for line in exc.details:
            console.err(f"  | {line}")
        console.err(f"error: {exc.message}")
        if exc.hint:
            console.err(f"hint: {exc.hint}")
        sys.exit(exc.exit_code)
    except OSError as exc:
        hint = OS_HINTS.get(exc.errno or 0)
        if hint is None or _DEBUG:
            if _DEBUG:
                traceback.print_exc()
            console.err(f"error: internal error: {exc!r}")
            console.err("hint: this is a bug in pyimage; run again with --debug and report the traceback")
            sys.exit(70)
        where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "") if exc.filename else f"writing into the cache ({_CACHE_ROOT or 'its directory'}) or an output"
        console.err(f"error: {where}: {exc.strerror or exc}")
        console.err(f"hint: {hint}")
        sys.exit(1)
    except typer.Abort:  # click turns a KeyboardInterrupt into Abort
        _interrupted(128 + (_SIGNALLED or signal.SIGINT))
    except typer.Exit as exc:
        if _SIGNALLED:
            _interrupted(128 + _SIGNALLED)
        sys.exit(exc.exit_code)
    except _USAGE_ERRORS as exc:
        formatter = getattr(exc, "format_message", None)
        message = str(formatter() if formatter is not None else exc)
        if message.strip():  # empty for a bare `pyimage`: typer has already printed the help
            console.err(f"error: {message}")
            console.err(f"hint: {_usage_hint(message)}")
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted(128 + (_SIGNALLED or signal.SIGINT))
    except Exception:
        if _DEBUG:
            raise
        console.err(f"error: internal error: {traceback.format_exc().strip().splitlines()[-1]}")
        console.err("hint: this is a bug in pyimage; run again with --debug and report the traceback")
        sys.exit(70)
    if _SIGNALLED:  # newer typer returns Ctrl-C as exit code 130 instead of raising
        _interrupted(128 + _SIGNALLED)
    if _BACKEND_WARNINGS:
        console.err(f"note: the build backend warned {len(_BACKEND_WARNINGS)} time(s), e.g. {_BACKEND_WARNINGS[0][:120]!r}; run with --debug to see its warnings")
    if isinstance(code, int) and code:
        sys.exit(code)
