"""Install a wheel straight into a tar stream, with pypa/installer's semantics and no directory on disk.

``_install`` walks the wheel with installer's rules (RECORD, ``.data/{scripts,purelib,platlib,data,headers}``,
console and GUI entry points, scripts and RECORD written by installer's own helpers; a test compares the result
with installer's ``install()`` file by file); this module's destination turns each file into a tar entry as it
streams out of the zip, checking it against the wheel's RECORD hash on the way, so a wheel is read exactly once.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import os
import posixpath
import queue
import threading
import zipfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Iterator, cast

from installer.destinations import WheelDestination
from installer.exceptions import InstallerError, InvalidWheelSource
from installer.records import Hash, RecordEntry, parse_record_file
from installer.scripts import Script
from installer.sources import WheelFile
from installer.utils import SCHEME_NAMES, Scheme, construct_record_file, fix_shebang, parse_entrypoints, parse_metadata_file

from pyimage.errors import BuildError
from pyimage.layers.paths import InstallPaths
from pyimage.layers.tar import TarWriter, safe_member_path
from pyimage.layers.zipmember import open_member

if TYPE_CHECKING:
    from pyimage.layers.native import NativesTaps, WheelNatives

__all__ = ["InstallPaths", "install_wheel", "wheel_file_map", "namespace_inits", "is_namespace_boilerplate"]

INSTALLER_NAME = b"pyimage\n"


class _Member(io.RawIOBase):
    """A zip member stream that knows its size and the hash RECORD promises for it."""

    def __init__(self, raw: IO[bytes], size: int, expected: str, name: str, tap: Callable[[bytes], None] | None = None, on_close: Callable[[], None] | None = None) -> None:
        self.raw, self.size, self.expected, self.name = raw, size, expected, name
        self._tap, self._on_close = tap, on_close  # the ELF facts' tap (``NativesTaps``): every byte, in order

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if self._tap is not None and data:
            self._tap(data)
        return data

    def readline(self, limit: int | None = -1) -> bytes:
        data = self.raw.readline(-1 if limit is None else limit)
        if self._tap is not None and data:
            self._tap(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        self._tap = None  # bytes no longer in order: the member is read again for its facts (``NativesTaps.done``)
        return self.raw.seek(pos, whence)

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.raw.close()
            if self._on_close is not None and self._tap is not None:
                self._on_close()
        super().close()


# The wheel spec: RECORD's hashes are "sha256 or better"; md5 and sha1 are refused. These are the better ones
# hashlib always has.
RECORD_ALGORITHMS = frozenset({"sha256", "sha384", "sha512", "sha3_256", "sha3_384", "sha3_512", "blake2b", "blake2s"})


def _record_error(where: str, message: str) -> BuildError:
    return BuildError(f"{where}: {message}", "the wheel is malformed or tampered with; re-download or rebuild it")


class _Wheel(WheelFile):
    """installer's WheelFile, with its ``dist_info_filenames`` worked out once: installer's property runs
    ``posixpath.commonpath`` over every member at each use (a few per wheel; 0.26 s of a cold build of 207 wheels)."""

    @functools.cached_property
    def dist_info_filenames(self) -> list[str]:  # type: ignore[override]
        base = self.dist_info_dir
        prefix = base + "/"
        return [
            name[len(base) + 1 :]
            for name in self._zipfile.namelist()
            if name[-1:] != "/"
            # the same members installer's property lists: a plain name by its prefix, an odd one
            # ("./", "//", the bare directory name) as installer decides it
            and (name.startswith(prefix) or (("./" in name or "//" in name or name == base) and base == posixpath.commonpath([name, base])))
        ]


class _VerifyingWheel(_Wheel):
    """installer's WheelFile, with safe paths, members in name order and each member carrying its RECORD hash.

    Every member must be listed in RECORD with a hash of an accepted algorithm, except RECORD itself and its
    signatures (``RECORD.jws``, ``RECORD.p7s``), which the spec lets go unhashed.
    """

    current: _Member | None = None  # the member being read: closed by install_wheel when installing fails
    natives: "NativesTaps | None" = None  # set to gather the wheel's ELF facts from the bytes as they are installed

    def get_contents(self) -> Iterator[tuple[tuple[str, str, str], BinaryIO, bool]]:
        records = {r[0]: r for r in parse_record_file(self.read_dist_info("RECORD").splitlines())}
        where = Path(self._zipfile.filename or "wheel").name
        scripts_dir = self.data_dir + "/scripts/"
        unhashed = {f"{self.dist_info_dir}/{n}" for n in ("RECORD", "RECORD.jws", "RECORD.p7s")}
        for item in sorted(self._zipfile.infolist(), key=lambda i: i.filename):
            if item.filename.endswith("/"):
                continue
            path = safe_member_path(item.filename, where=where)  # normalized: installer loops forever on "./x.data/…"
            listed = records.get(item.filename)
            if item.filename not in unhashed:
                if listed is None:
                    raise _record_error(where, f"{item.filename} is not listed in the wheel's RECORD")
                algo = listed[1].partition("=")[0]
                if not listed[1]:
                    raise _record_error(where, f"{item.filename} has no hash in the wheel's RECORD")
                if algo not in RECORD_ALGORITHMS:
                    raise _record_error(where, f"{item.filename} is hashed with {algo!r} in RECORD; the wheel spec requires sha256 or better (not md5 or sha1)")
            record = (path, *(listed or (item.filename, "", ""))[1:])
            executable = bool((item.external_attr >> 16) & 0o111)
            seekable = path.startswith(scripts_dir)  # installer rewrites their shebang: needs seek()
            raw = self._zipfile.open(item) if seekable else open_member(self._zipfile, item)
            tap = self.natives.tap(item) if self.natives is not None and not seekable else None
            end = (lambda item=item: self.natives.end(self._zipfile, item)) if tap is not None else None  # type: ignore[union-attr]
            stream = self.current = _Member(raw, item.file_size, record[1], item.filename, tap, end)
            yield record, cast(BinaryIO, stream), executable
            stream.close()


class _RecordChecks:
    """The RECORD sha256 of big files, checked on a thread of its own while the tar writer moves on.

    The caller's thread inflates and writes tar entries; hashing the same bytes there too kept it the longest
    stage of a heavy layer (bench/layer_cost.py). Files of at least ``OFFLOAD_MIN`` bytes hand their chunks
    to this thread instead (in order, through a bounded queue); ``wait()`` raises the first mismatch, before
    the wheel's RECORD is written, so a tampered file still fails the layer before its blob is committed.
    """

    OFFLOAD_MIN = 256 << 10  # below this, a queue round trip costs more than the hash it moves
    _DEPTH = 32  # chunks (at most 1 MiB each) waiting to be hashed

    def __init__(self, where: str) -> None:
        self._where = where
        self._queue: queue.Queue[tuple[Any, bytes | None, str, str] | None] | None = None
        self._thread: threading.Thread | None = None
        self._failure: tuple[str, str] | None = None  # (path, algo) of the first mismatch

    def start(self) -> Any:
        """A fresh sha256 for one file; feed it with ``feed`` and close it with ``end``."""
        if self._queue is None:
            self._queue = queue.Queue(self._DEPTH)
            self._thread = threading.Thread(target=self._run, name="pyimage-record-hash", daemon=True)
            self._thread.start()
        return hashlib.sha256()

    def feed(self, digest: Any) -> Callable[[bytes], None]:
        put = self._queue.put  # type: ignore[union-attr]
        return lambda chunk: put((digest, chunk, "", ""))

    def end(self, digest: Any, want: str, path: str) -> None:
        self._queue.put((digest, None, want, path))  # type: ignore[union-attr]

    def _run(self) -> None:
        assert self._queue is not None
        while (item := self._queue.get()) is not None:
            digest, chunk, want, path = item
            if chunk is not None:
                digest.update(chunk)
            elif self._failure is None and _b64(digest.digest()) != want:
                self._failure = (path, "sha256")

    def close(self) -> None:
        """Stops the thread (idempotent); the checks it finished stand."""
        if self._thread is not None:
            self._queue.put(None)  # type: ignore[union-attr]
            self._thread.join()
            self._thread = None

    def wait(self) -> None:
        """Every file handed over is hashed; raises the first mismatch."""
        self.close()
        if self._failure is not None:
            raise _hash_error(self._where, *self._failure)


class _TarDestination(WheelDestination):
    def __init__(self, writer: TarWriter, paths: InstallPaths, dist: str, where: str) -> None:
        self.writer, self.paths, self.dist, self.where = writer, paths, dist, where
        self.checks = _RecordChecks(where)

    def _full(self, scheme: str, path: str) -> str:
        rel = safe_member_path(str(path), where=self.where)
        return posixpath.join(self.paths.scheme_dir(scheme, self.dist), rel)

    def write_script(self, name: str, module: str, attr: str, section: str) -> RecordEntry:
        safe_member_path(name, where=f"{self.where} entry point")
        if "/" in name:
            raise BuildError(f"{self.where}: entry point name {name!r} contains '/'", "the wheel is malformed")
        script_name, data = Script(name, module, attr, section).generate(self.paths.interpreter, "posix")  # type: ignore[arg-type]
        return self._write(Scheme("scripts"), script_name, io.BytesIO(data), len(data), True, "")

    def write_file(self, scheme: Scheme, path: str | os.PathLike[str], stream: BinaryIO, is_executable: bool) -> RecordEntry:
        path = str(path)
        expected = getattr(stream, "expected", "")
        size = getattr(stream, "size", None)
        if scheme == "scripts":
            if size is None:  # not one of our members: sized by reading it
                data = stream.read()
                stream, size = io.BytesIO(data), len(data)
            with fix_shebang(stream, self.paths.interpreter) as fixed:
                if fixed is not stream:  # rewritten shebang: the RECORD hash no longer applies; check the original
                    self._check_hash(stream, expected)
                    data = fixed.read()
                    return self._write(scheme, path, io.BytesIO(data), len(data), True, "")
                return self._write(scheme, path, stream, size, True, expected)
        if size is None:
            data = stream.read()
            stream, size = io.BytesIO(data), len(data)
        return self._write(scheme, path, stream, size, is_executable, expected)

    def _check_hash(self, stream: BinaryIO, expected: str) -> None:
        if not expected:
            return
        stream.seek(0)
        algo, _, want = expected.partition("=")
        got = _b64(hashlib.new(algo, stream.read()).digest())
        if got != want:
            raise _hash_error(self.where, getattr(stream, "name", "?"), algo)

    def _write(self, scheme: str, path: str, stream: BinaryIO, size: int, executable: bool, expected: str) -> RecordEntry:
        full = self._full(scheme, path)
        algo, _, want = expected.partition("=")
        if algo == "sha256" and size >= _RecordChecks.OFFLOAD_MIN:
            # Hashed on the checks' thread; the entry names RECORD's hash, which ``wait()`` proves right.
            digest_obj = self.checks.start()
            self.writer.add_file(full, stream, size, executable=executable, hash_into=self.checks.feed(digest_obj))
            self.checks.end(digest_obj, want, str(path))
            self.writer.files[full] = ""
            return RecordEntry(str(path), Hash("sha256", want), size)
        # One pass: the tar writer hashes sha256 as it copies; another RECORD algorithm is hashed on the same read.
        other = _HashingReader(stream, algo) if expected and algo != "sha256" else None
        hexdigest = self.writer.add_file(full, cast(BinaryIO, other) if other is not None else stream, size, executable=executable)
        digest = bytes.fromhex(hexdigest)
        if expected:
            got = other.digest() if other is not None else digest
            if _b64(got) != want:
                raise _hash_error(self.where, path, algo)
        self.writer.files[full] = hexdigest
        return RecordEntry(str(path), Hash("sha256", _b64(digest)), size)

    def finalize_installation(
        self, scheme: Scheme, record_file_path: str, records: Iterable[tuple[Scheme, RecordEntry]]
    ) -> None:
        root = self.paths.scheme_dir(scheme, self.dist)

        def prefix(s: Scheme) -> str | None:
            if s == scheme:
                return None
            return posixpath.relpath(self.paths.scheme_dir(s, self.dist), root) + "/"

        self.checks.wait()  # every file's RECORD hash is proven before the new RECORD is written
        data = construct_record_file(records, prefix).read()
        self.writer.add_bytes(posixpath.join(root, record_file_path), data)


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


class _HashingReader(io.RawIOBase):
    """Passes reads through while hashing them with ``algo``: a RECORD hash other than sha256, in the same pass."""

    def __init__(self, raw: BinaryIO, algo: str) -> None:
        self.raw, self._hash = raw, hashlib.new(algo)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        data = self.raw.read(n)
        self._hash.update(data)
        return data

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def digest(self) -> bytes:
        return self._hash.digest()


def _hash_error(where: str, path: str, algo: str = "sha256") -> BuildError:
    return BuildError(
        f"{where}: {path} does not match the {algo} in the wheel's RECORD (corrupt or tampered wheel)",
        "delete the wheel from the cache (pyimage cache prune) or rebuild it, then build again",
    )


_WHEEL_ERRORS = (InstallerError, zipfile.BadZipFile, KeyError, ValueError, EOFError, zipfile.LargeZipFile, UnicodeDecodeError)


@contextlib.contextmanager
def _malformed(wheel: Path) -> Iterator[None]:
    """Turns what a broken or hostile wheel raises (a missing RECORD or WHEEL, a bad zip, bad UTF-8) into a
    BuildError naming the wheel; OS errors (disk full, permissions) pass through to be reported as such."""
    try:
        yield
    except BuildError:
        raise
    except KeyError as exc:
        raise BuildError(f"{wheel.name}: malformed wheel: {str(exc.args[0] if exc.args else exc)[:200]}", "the wheel is malformed; re-download or rebuild it") from None
    except _WHEEL_ERRORS as exc:
        raise BuildError(f"{wheel.name}: cannot install: {str(exc)[:200] or type(exc).__name__}", "the wheel is corrupt or not a wheel; re-download or rebuild it") from None


def _install(source: _VerifyingWheel, destination: _TarDestination) -> None:
    """pypa/installer's ``install()`` steps, in its order and with its rules: the root scheme from WHEEL, entry-point
    scripts, every file into its scheme (``.data/<scheme>/``), ``INSTALLER``, then RECORD. Per file it does only
    what this destination needs: installer's own loop parses each RECORD line again and finds a file's scheme with
    ``posixpath.commonpath`` (0.58 s of thread time on a cold build of 207 wheels); members are already safe,
    normalized paths here (``safe_member_path``), so a prefix decides it, as ``_file_map`` does."""
    wheel_meta = parse_metadata_file(source.read_dist_info("WHEEL"))
    version = wheel_meta["Wheel-Version"]
    if not (version and version.startswith("1.")):
        raise InvalidWheelSource(source, f"Incompatible Wheel-Version {version}, only support version 1.x wheels.")
    root = Scheme("purelib" if wheel_meta["Root-Is-Purelib"] == "true" else "platlib")
    record_path = f"{source.dist_info_dir}/RECORD"
    written: list[tuple[Scheme, RecordEntry]] = []
    if "entry_points.txt" in source.dist_info_filenames:
        for name, module, attr, section in parse_entrypoints(source.read_dist_info("entry_points.txt")):
            written.append((Scheme("scripts"), destination.write_script(name, module, attr, section)))
    data_dir = source.data_dir + "/"
    for (path, _hash, _size), stream, executable in source.get_contents():
        if path == record_path or "__pycache__" in path.split("/")[:-1]:
            # RECORD is written last, from what was installed. Files under __pycache__/ are left out, as installer
            # does (rightly: the image's bytecode is compiled for its own interpreter, or not at all); installer
            # also warned once per file, in the middle of the progress (numpy 2.3's wheel has one): not here.
            continue
        scheme, rel = root, path
        if path.startswith(data_dir):
            name, _, rel = path[len(data_dir):].partition("/")
            if name not in SCHEME_NAMES or not rel:
                raise InvalidWheelSource(source, f"{path} is not contained in a valid .data subdirectory.")
            scheme = Scheme(name)
        written.append((scheme, destination.write_file(scheme, rel, stream, executable)))
    with io.BytesIO(INSTALLER_NAME) as installer_file:
        written.append((root, destination.write_file(root, f"{source.dist_info_dir}/INSTALLER", installer_file, False)))
    written.append((root, RecordEntry(record_path, None, None)))
    destination.finalize_installation(root, record_path, written)


def install_wheel(wheel: Path, writer: TarWriter, paths: InstallPaths, natives: Callable[["WheelNatives"], None] | None = None) -> None:
    """Writes every file ``wheel`` installs into ``writer``, under ``paths``; raises BuildError on a bad wheel.
    ``natives``, when given, hears the wheel's ELF facts (``layers/native.py``), gathered from the same pass over
    its bytes, once every file is installed and its RECORD hash proven."""
    where = wheel.name
    with _malformed(wheel), zipfile.ZipFile(wheel) as zf:
        source = _VerifyingWheel(zf)
        if natives is not None:
            from pyimage.layers.native import NativesTaps

            source.natives = NativesTaps()
        destination = _TarDestination(writer, paths, source.distribution, where)
        try:
            _install(source, destination)
        finally:
            destination.checks.close()
            if source.current is not None:  # a member left open by an error holds the wheel's file open
                source.current.close()
        if natives is not None and source.natives is not None:
            natives(source.natives.done(zf))


def wheel_file_map(wheel: Path, paths: InstallPaths) -> dict[str, str]:
    """In-image path -> RECORD hash for every file ``wheel`` installs (entry-point scripts hash to ``""``).

    Read from the zip's directory and RECORD only, so conflicts between wheels are found before any layer work.
    """
    return wheel_paths(wheel, paths)[0]


def wheel_paths(wheel: Path, paths: InstallPaths) -> tuple[dict[str, str], list[str]]:
    """``wheel_file_map`` and ``namespace_inits`` of ``wheel`` from one opening of the zip (torch's directory of
    12,000 members takes 50 ms to read)."""
    with _malformed(wheel), zipfile.ZipFile(wheel) as zf:
        return _file_map(wheel, zf, paths), _namespace_inits(wheel, zf, paths)


def _file_map(wheel: Path, zf: zipfile.ZipFile, paths: InstallPaths) -> dict[str, str]:
    out: dict[str, str] = {}
    source = _Wheel(zf)
    dist = source.distribution
    wheel_meta = parse_metadata_file(source.read_dist_info("WHEEL"))
    root = "purelib" if wheel_meta.get("Root-Is-Purelib") == "true" else "platlib"
    records = {r[0]: r[1] for r in parse_record_file(source.read_dist_info("RECORD").splitlines())}
    data_dir = source.data_dir + "/"
    for name in zf.namelist():
        if name.endswith("/"):
            continue
        rel = safe_member_path(name, where=wheel.name)
        if "__pycache__" in rel.split("/")[:-1]:
            continue  # installer skips these too
        scheme = root
        if rel.startswith(data_dir):
            scheme, _, rel = rel[len(data_dir):].partition("/")
        if scheme not in ("purelib", "platlib", "scripts", "data", "headers"):
            raise BuildError(f"{wheel.name}: {name} is not in a valid .data subdirectory", "the wheel is malformed")
        out[posixpath.join(paths.scheme_dir(scheme, dist), rel)] = records.get(name, "")
    if "entry_points.txt" in source.dist_info_filenames:
        for ep_name, *_ in parse_entrypoints(source.read_dist_info("entry_points.txt")):
            out[posixpath.join(paths.bin, ep_name)] = ""
    return out


_NAMESPACE_CALLS = {"extend_path", "declare_namespace"}
_NAMESPACE_MODULES = {"pkgutil", "pkg_resources"}
_MAX_INIT_READ = 64 << 10  # namespace boilerplate is a few lines; a bigger __init__.py is real code


def is_namespace_boilerplate(source: bytes) -> bool:
    """True if ``source`` is an empty ``__init__.py`` or only pre-PEP 420 namespace boilerplate: docstrings,
    ``pass``, imports of pkgutil/pkg_resources, ``__path__ = …extend_path(__path__, __name__)`` and
    ``…declare_namespace(__name__)``, also inside ``try``/``except ImportError``. Anything else is code a
    second wheel must not replace."""
    import ast

    if len(source) > _MAX_INIT_READ:
        return False
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False

    def call_name(node: ast.AST) -> str:
        if isinstance(node, ast.Call):
            func = node.func
            return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        return ""

    def allowed(stmt: ast.stmt) -> bool:
        if isinstance(stmt, ast.Pass):
            return True
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            return True
        if isinstance(stmt, ast.Import):
            return all(a.name in _NAMESPACE_MODULES for a in stmt.names)
        if isinstance(stmt, ast.ImportFrom):
            return stmt.module in _NAMESPACE_MODULES and all(a.name in _NAMESPACE_CALLS for a in stmt.names)
        if isinstance(stmt, ast.Assign):
            targets = [t.id for t in stmt.targets if isinstance(t, ast.Name)]
            return targets == ["__path__"] and len(stmt.targets) == 1 and call_name(stmt.value) == "extend_path"
        if isinstance(stmt, ast.Expr):
            return call_name(stmt.value) == "declare_namespace"
        if isinstance(stmt, ast.Try):
            handlers = [s for h in stmt.handlers for s in h.body]
            return all(allowed(s) for s in [*stmt.body, *handlers, *stmt.orelse, *stmt.finalbody])
        return False

    return all(allowed(stmt) for stmt in tree.body)


def namespace_inits(wheel: Path, paths: InstallPaths) -> list[str]:
    """In-image paths (as ``wheel_file_map`` names them) of the wheel's ``__init__.py`` files that are namespace
    boilerplate, which several wheels of one namespace may each ship (``is_namespace_boilerplate``)."""
    return wheel_paths(wheel, paths)[1]


def _namespace_inits(wheel: Path, zf: zipfile.ZipFile, paths: InstallPaths) -> list[str]:
    from installer.utils import parse_metadata_file

    out = []
    source = _Wheel(zf)
    root = "purelib" if parse_metadata_file(source.read_dist_info("WHEEL")).get("Root-Is-Purelib") == "true" else "platlib"
    data_dir = source.data_dir + "/"
    for info in zf.infolist():
        if not info.filename.endswith("__init__.py") or posixpath.basename(info.filename) != "__init__.py":
            continue
        rel = safe_member_path(info.filename, where=wheel.name)
        scheme = root
        if rel.startswith(data_dir):
            scheme, _, rel = rel[len(data_dir):].partition("/")
            if scheme not in ("purelib", "platlib"):
                continue
        if info.file_size == 0 or (info.file_size <= _MAX_INIT_READ and is_namespace_boilerplate(zf.read(info))):  # empty: nothing to read
            out.append(posixpath.join(paths.scheme_dir(scheme, source.distribution), rel))
    return sorted(out)
