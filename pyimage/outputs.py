"""Where a built image goes: one family of outputs behind one small interface, as ko's publishers are.

Each ``-o``/``output`` string is parsed once, when the config is read (``config.py`` calls ``parse_output``), into an ``Output`` value that knows its
place; ``check`` refuses, before any work, what cannot be written (no path, a path holding something that is
not ours to overwrite, one platform's format for an index); ``write`` serializes the image there. Adding an
output kind means adding a class here and a line in ``parse_output``.

- ``oci:DIR[:TAG]``: an OCI layout (``oci/layout.py``; tags merge into an existing layout);
- ``docker-archive:FILE[:NAME:TAG]``: ``docker save``'s format (``oci/dockerarchive.py``);
- ``docker-daemon:[NAME:TAG]`` / ``podman:[NAME:TAG]``: loaded into a local engine (``oci/engine.py``);
- registry references (``--push REF``, or ``repository`` + ``tags``): pushed (``publish.py``).
A name or tag left out defaults to the first ``-t/--tag NAME[:TAG]`` (as ``docker build -t`` names its image),
else to the project's ``name:version`` (``Naming``), known once the wheel is built. An engine also gets the other
``-t`` names (a layout and an archive hold one name: the first).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

import pyimage.atomic as atomic
from pyimage.errors import OS_HINTS, BuildError, ConfigError

if TYPE_CHECKING:
    from pyimage.cache import Cache
    from pyimage.oci.engine import Loaded
    from pyimage.oci.model import Image, ImageIndex
    from pyimage.publish import RegistrySettings

__all__ = [
    "ArchiveOutput",
    "EngineOutput",
    "LayoutOutput",
    "Naming",
    "Output",
    "OUTPUT_KINDS",
    "RegistryOutput",
    "Written",
    "default_output",
    "parse_output",
    "check_outputs",
    "parse_tags",
    "write_outputs",
    "written_paths",
]

OUTPUT_KINDS = ("oci", "docker-archive", "docker-daemon", "podman")
_HINT = "use oci:DIR[:TAG], docker-archive:FILE[:NAME:TAG], docker-daemon:[NAME:TAG] or podman:[NAME:TAG] (push with --push REF)"


@dataclass(frozen=True)
class Naming:
    """What an output needs that is known only after the build: the name for outputs that leave theirs out
    (the first ``-t`` name, else the project's ``name:version``), and the cache (layout blobs are stamped as
    the cache's copies)."""

    name: str
    version: str
    cache: Cache
    tags: tuple[str, ...] = ()  # -t/--tag names, each NAME:TAG (checked by ``parse_tags``)

    @property
    def reference(self) -> str:
        return self.tags[0] if self.tags else f"{self.name}:{self.version}".replace("+", "_")

    @property
    def tag(self) -> str:
        """The TAG of ``reference`` (after the last ``:``; a registry's ``host:port`` comes before it)."""
        return self.reference.rpartition(":")[2]


def parse_tags(tags: Sequence[str]) -> tuple[str, ...]:
    """``-t NAME[:TAG]`` values, checked before any work; a name without a tag means ``NAME:latest``, as with
    ``docker build -t`` (so ``docker run NAME`` finds it). Each name once, in the order given."""
    from pyimage.oci.reference import parse_reference

    out: list[str] = []
    for raw in tags:
        text = raw.strip()
        try:
            ref = parse_reference(text)
        except ConfigError as exc:
            raise ConfigError(f"-t {raw!r}: {exc.message}", "give NAME[:TAG], e.g. -t myapp:dev (a name without a tag is NAME:latest)") from None
        if ref.digest or text.startswith("docker://"):
            raise ConfigError(f"-t {raw!r}: a tag names the image by NAME[:TAG], not by digest or URL", "e.g. -t myapp:dev or -t ghcr.io/org/app:1.0")
        name = text if ":" in text.rsplit("/", 1)[-1] else f"{text}:latest"
        if name not in out:
            out.append(name)
    return tuple(out)


@dataclass(frozen=True)
class Written:
    outputs: tuple[str, ...]  # each output as written (kind:where[:tag])
    loaded: tuple[Loaded, ...]  # images loaded into local engines, with the engine's image ID
    pushed: tuple[dict[str, Any], ...] = ()  # one report per pushed reference


class Output(Protocol):
    @property
    def spec(self) -> str:
        """The output as the user wrote it."""

    def check(self, platforms: int) -> None:
        """Raises ConfigError, before any work, when the image cannot go there."""

    def write(self, image: Image | ImageIndex, naming: Naming, written: _Collect) -> None:
        """Serializes ``image`` there, reporting into ``written``."""

    @property
    def writes(self) -> Path | None:
        """The file or directory on this machine the image is written to (None: an engine or a registry)."""


@dataclass
class _Collect:
    outputs: list[str]
    loaded: list[Loaded]
    pushed: list[dict[str, Any]]


def _one_platform(spec: str, kind: str, platforms: int) -> None:
    if platforms > 1:
        raise ConfigError(
            f"output {spec!r}: a {kind} holds one platform, and this build makes {platforms}",
            "write the image index to a layout (-o oci:DIR) or push it (--push REF); for one platform's image, build with --platform OS/ARCH",
        )


def _check_writable(path: Path, *, into: bool = False) -> None:
    """Refuses, before any work, an output path whose place cannot be made: a component of its parent that exists
    and is not a directory, or a directory where nothing can be created (no permission, a read-only or virtual
    file system such as ``/proc``). The nearest existing directory (``path`` itself when the writer writes
    ``into`` it) is probed by making and removing a directory there, so the check meets what the writer would."""
    place = path if into else path.parent
    while not place.exists() and not place.is_symlink() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise BuildError(f"output {path}: {place} is not a directory", "choose another output path, or move that file away")
    probe = place / atomic.beside(path).name  # named as the writer's temp files are, so a sweep knows it
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise BuildError(f"output {path}: cannot create anything in {place} ({exc.strerror})", _CANNOT_WRITE_HINT) from None


@contextlib.contextmanager
def _naming_errors(path: Path) -> Iterator[None]:
    """An OSError on the output's path while it is written (the place changed after ``check``, a full disk) is the
    user's to fix: one error naming the output (and the file, when another), not an internal error."""
    try:
        yield
    except OSError as exc:
        where = str(exc.filename or "")
        if where and not where.startswith(str(path.parent)):  # not ours to name (a cache blob read): as it was
            raise
        staging = Path(where).name.startswith(f".{path.name}.")  # the temp path beside it, which the user never chose
        also = f" ({where})" if where and where != str(path) and not staging else ""
        raise BuildError(f"output {path}: cannot write it{also}: {exc.strerror or exc}", OS_HINTS.get(exc.errno or 0, _CANNOT_WRITE_HINT)) from exc


_CANNOT_WRITE_HINT = "choose an output path in a directory you can write (on a file system that holds files), or fix that directory's permissions"


@dataclass(frozen=True)
class LayoutOutput:
    spec: str
    directory: Path
    tag: str | None

    @property
    def writes(self) -> Path | None:
        return self.directory

    def check(self, platforms: int) -> None:
        from pyimage.oci.layout import check_output_dir

        _check_writable(self.directory, into=check_output_dir(self.directory))  # an existing layout is written into

    def write(self, image: Image | ImageIndex, naming: Naming, written: _Collect) -> None:
        from pyimage.oci.layout import write_layout

        tag = self.tag or naming.tag
        with _naming_errors(self.directory):
            write_layout(image, self.directory, tag, stamps=naming.cache)
        written.outputs.append(f"oci:{self.directory}:{tag}")


@dataclass(frozen=True)
class ArchiveOutput:
    spec: str
    path: Path
    reference: str | None

    @property
    def writes(self) -> Path | None:
        return self.path

    def check(self, platforms: int) -> None:
        from pyimage.oci.dockerarchive import check_output_file

        _one_platform(self.spec, "docker-archive", platforms)
        check_output_file(self.path)
        _check_writable(self.path)

    def write(self, image: Image | ImageIndex, naming: Naming, written: _Collect) -> None:
        from pyimage.oci.dockerarchive import write_docker_archive
        from pyimage.oci.model import Image

        assert isinstance(image, Image)  # check() refused an index
        ref = self.reference or naming.reference
        with _naming_errors(self.path):
            write_docker_archive(image, self.path, ref)
        written.outputs.append(f"docker-archive:{self.path}:{ref}")


@dataclass(frozen=True)
class EngineOutput:
    spec: str
    engine: str  # "docker-daemon" | "podman"
    reference: str | None

    writes = None

    def check(self, platforms: int) -> None:
        _one_platform(self.spec, self.engine, platforms)

    def write(self, image: Image | ImageIndex, naming: Naming, written: _Collect) -> None:
        from pyimage.oci.engine import load_docker, load_podman
        from pyimage.oci.model import Image

        assert isinstance(image, Image)  # check() refused an index
        ref = self.reference or naming.reference
        if ":" not in ref.rsplit("/", 1)[-1]:
            ref += f":{naming.tag}"
        also = tuple(t for t in naming.tags if t != ref) if not self.reference else ()
        loaded = load_docker(image, ref, also=also) if self.engine == "docker-daemon" else load_podman(image, ref, also=also)
        written.loaded.append(loaded)
        written.outputs.extend(f"{self.engine}:{r}" for r in (ref, *also))


@dataclass(frozen=True)
class RegistryOutput:
    """Registry references, pushed together (blobs once, then each tag's manifest). Empty ``references``: the
    config's ``repository`` with its ``tags`` (default: the project's version)."""

    spec: str
    references: tuple[str, ...]
    repository: str | None
    tags: tuple[str, ...]
    settings: RegistrySettings
    events: Callable[[str], None]

    writes = None

    def check(self, platforms: int) -> None:
        pass  # references were parsed when this was made; credentials are asked for where they are used

    def write(self, image: Image | ImageIndex, naming: Naming, written: _Collect) -> None:
        from pyimage.publish import push_refs

        refs = list(self.references) or [f"{self.repository}:{tag}" for tag in (self.tags or [naming.tag])]
        written.pushed.extend(push_refs(image, refs, self.settings, self.events, naming.cache))


def default_output(project_dir: Path) -> str:
    return f"oci:{project_dir / 'dist' / 'image'}"


def parse_output(spec: str, project_dir: Path) -> Output:
    """One ``kind:rest`` output; a relative path is the project's."""
    from pyimage.oci.layout import split_layout_ref

    kind, sep, rest = spec.partition(":")
    if not sep or kind not in OUTPUT_KINDS:
        raise ConfigError(f"output {spec!r}: unknown kind", _HINT)
    if kind in ("docker-daemon", "podman"):
        return EngineOutput(spec, kind, rest or None)
    path = split_layout_ref(rest)[0] if kind == "oci" else Path(rest.partition(":")[0])
    if not rest or str(path) in ("", "."):
        raise ConfigError(f"output {spec!r}: no path given", f"use {kind}:PATH, e.g. {kind}:dist/{'image' if kind == 'oci' else 'image.tar'}")
    path = path if path.is_absolute() else project_dir / path
    if kind == "oci":
        from pyimage.oci.reference import is_tag

        tag = split_layout_ref(rest, default_tag="")[1]
        if tag and not is_tag(tag):  # skopeo, podman and engines refuse a layout's ref.name outside the tag grammar
            raise ConfigError(f"output {spec!r}: {tag!r} is not a tag (ASCII letters, digits, '_', '.', '-', up to 128, not starting with '.' or '-')", f"e.g. oci:{rest.rpartition(':')[0]}:1.0")
        return LayoutOutput(spec, path, tag or None)
    return ArchiveOutput(spec, path, rest.partition(":")[2] or None)


def check_outputs(outputs: Sequence[Output], platforms: int = 1) -> tuple[Output, ...]:
    """Every output checked for this many platforms: all before any work."""
    for out in outputs:
        out.check(platforms)
    return tuple(outputs)


def written_paths(outputs: Sequence[Output], project_dir: Path) -> list[Path]:
    """The files and directories a build writes (a layout, an archive): never part of the image's own files, even
    before the first build made them recognisable. No output configured: the default layout's directory."""
    chosen = outputs or (parse_output(default_output(project_dir), project_dir),)
    return [out.writes for out in chosen if out.writes is not None]


def write_outputs(image: Image | ImageIndex, outputs: Sequence[Output], naming: Naming, done: Callable[[str], None] = lambda _w: None) -> Written:
    """Writes ``image`` to each output, in order; ``done`` hears each one as soon as it is complete (as ``Written``
    names it; a push as its reference), so an interrupt can say which were kept."""
    collect = _Collect([], [], [])
    for out in outputs:
        before = len(collect.outputs), len(collect.pushed)
        out.write(image, naming, collect)
        for what in (*collect.outputs[before[0] :], *(p["reference"] for p in collect.pushed[before[1] :])):
            done(what)
    return Written(tuple(collect.outputs), tuple(collect.loaded), tuple(collect.pushed))
