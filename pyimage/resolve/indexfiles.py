"""The files an index publishes for a project, found by name and fetched by sha256: how a lock that names files
but no URLs (``poetry.lock``, a ``--hash`` requirements file) is installed without running a resolver.

Where to look is the user's: pip's configuration (``index-url``, default PyPI; ``extra-index-url``;
``find-links``; ``no-index``), or the one index a lock names for a package (poetry's ``[package.source]``).
An index page is read as PEP 691 JSON when the index offers it, else as PEP 503 HTML; a find-links location is
a directory of files or an HTML page of links. Nothing found is trusted: every file is identified by its
filename *and* the sha256 the lock gives, and the download is hashed again before it enters the cache.

Credentials are the usual ones: a ``user:password@`` in the configured index URL (pip's way, ``PIP_INDEX_URL``)
or a ``~/.netrc`` / ``$NETRC`` entry for the host. They are sent only to that host, never kept in a ``Pin``,
never printed: every URL in a message goes through ``redact``.
"""

from __future__ import annotations

import base64
import json
import netrc
import os
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from packaging.utils import canonicalize_name

from pyimage.cache import Cache
from pyimage.errors import BuildError
from pyimage.hashing import file_digest, hash_stream, matches
from pyimage.resolve.pip import Pin
from pyimage.resolve.target import Target

__all__ = ["IndexFile", "Sources", "configured_sources", "project_files", "rank_wheels", "fetch", "redact", "strip_credentials", "in_parallel"]

T = TypeVar("T")
R = TypeVar("R")

PYPI = "https://pypi.org/simple"
_JSON = "application/vnd.pypi.simple.v1+json"
_MAX_PAGE = 64 << 20  # an index page larger than this is not an index page


@dataclass(frozen=True)
class IndexFile:
    """One file an index lists for a project: its name, where it is (credentials removed), its sha256 if given."""

    filename: str
    url: str
    sha256: str = ""


@dataclass(frozen=True)
class Sources:
    """Where files are looked for, in order: indexes (simple API roots) and find-links locations."""

    indexes: tuple[str, ...] = (PYPI,)
    find_links: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # pip.conf and a requirements file's own --extra-index-url / --find-links often name the same place (pip-
        # compile copies them in): each is asked, and named in a message, once, in its first place.
        object.__setattr__(self, "indexes", _unique(self.indexes))
        object.__setattr__(self, "find_links", _unique(self.find_links))

    def describe(self) -> str:
        return ", ".join(redact(u) for u in (*self.indexes, *self.find_links)) or "no index (no-index is set)"

    def __repr__(self) -> str:  # URLs may carry credentials: a repr (a traceback, a log) shows them redacted
        return f"Sources(indexes={tuple(map(redact, self.indexes))!r}, find_links={tuple(map(redact, self.find_links))!r})"


def _unique(urls: tuple[str, ...]) -> tuple[str, ...]:
    """``urls`` in order without repeats (a trailing "/" does not make another place)."""
    seen: set[str] = set()
    out = []
    for url in urls:
        if url.rstrip("/") not in seen:
            seen.add(url.rstrip("/"))
            out.append(url)
    return tuple(out)


def configured_sources() -> Sources:
    """pip's configuration as pip reads it for ``pip install`` (files, ``[install]``, ``PIP_*``)."""
    from pyimage.resolve.uv import PipConfigUnreadable, _pip_settings  # one reader of pip's configuration

    try:
        settings = _pip_settings()
    except PipConfigUnreadable:  # the default index, as pip would fail on it later in its own words
        settings = {}
    words = lambda key: [w for w in settings.get(key, "").split() if w]  # noqa: E731
    no_index = settings.get("no-index", "").lower() in ("1", "true", "yes", "on")
    indexes = [] if no_index else [settings.get("index-url") or PYPI, *words("extra-index-url")]
    return Sources(tuple(indexes), tuple(words("find-links")))


def redact(url: str) -> str:
    """``url`` without its password (a user name stays, as pip shows it)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    # a lone user part is a token (Gemfury, GitHub): hidden like a password, as pip's redact_auth_from_url does
    who = f"{parts.username}:***" if parts.password is not None else "****"
    netloc = f"{who}@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def with_credentials(url: str, user: str | None, password: str | None) -> str:
    """``url`` with ``user``/``password`` as its user info (quoted), for memory only: show it through
    ``redact``. Unchanged when neither is given or the URL names its own user info (the URL's own wins)."""
    parts = urllib.parse.urlsplit(url)
    if not (user or password) or "@" in parts.netloc:
        return url
    creds = urllib.parse.quote(user or "", safe="") + (":" + urllib.parse.quote(password, safe="") if password else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{creds}@{parts.netloc}"))


def strip_credentials(url: str) -> str:
    """``url`` without any user or password (what may be written down: credentials come from their sources)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _authorization(url: str, sources: Sources) -> str | None:
    """The Basic credentials for ``url``'s host: from a configured URL of the same host, else netrc."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return None
    for configured in (*sources.indexes, *sources.find_links):
        c = urllib.parse.urlsplit(configured)
        if c.username and (c.hostname, c.port) == (parts.hostname, parts.port):
            user, password = urllib.parse.unquote(c.username), urllib.parse.unquote(c.password or "")
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        found = netrc.netrc(os.environ.get("NETRC") or None).authenticators(parts.hostname or "")
    except (OSError, netrc.NetrcParseError):
        found = None
    if found and found[0] is not None:
        return "Basic " + base64.b64encode(f"{found[0]}:{found[2] or ''}".encode()).decode()
    return None


def _links(body: str) -> tuple[list[str], str | None]:
    """The ``<a href>`` targets of a PEP 503 page, and the page's ``<base href>``. (html.parser and urllib.request
    are imported where they are used: a build that reads no index page does not pay for them.)"""
    import html.parser

    hrefs: list[str] = []
    base: list[str] = []

    class Links(html.parser.HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            values = dict(attrs)
            if tag == "a" and values.get("href"):
                hrefs.append(str(values["href"]))
            elif tag == "base" and values.get("href") and not base:
                base.append(str(values["href"]))

    parser = Links()
    parser.feed(body)
    return hrefs, (base[0] if base else None)


def _read(url: str, sources: Sources, accept: str) -> tuple[bytes, str, str] | None:
    """(body, content type, final URL) of ``url``; None when the index has no such page (404, missing file)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        path = Path(urllib.parse.unquote(parts.path))
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            return None
        return path.read_bytes()[:_MAX_PAGE], "text/html", url
    from urllib import error as url_error, request as url_request

    request = url_request.Request(strip_credentials(url), headers={"Accept": accept, "User-Agent": "pyimage"})
    auth = _authorization(url, sources)
    if auth:
        request.add_unredirected_header("Authorization", auth)  # never to the host a redirect names (S3, a CDN)
    try:
        with url_request.urlopen(request, timeout=60) as response:  # noqa: S310 (http, https, file only)
            return response.read(_MAX_PAGE), response.headers.get("Content-Type", ""), response.geturl()
    except url_error.HTTPError as exc:
        exc.close()  # an HTTP error is also the response: its connection stays open until closed
        if exc.code == 404:
            return None
        hint = "set its credentials in the index URL or ~/.netrc" if exc.code in (401, 403) else "check the index and the network"
        raise BuildError(f"index {redact(url)} answered HTTP {exc.code}", hint) from None
    except OSError as exc:
        raise BuildError(f"cannot read the index page {redact(url)}: {exc}", "check the network (and proxy settings) and the index URL") from None


def _acceptable(filename: str, url: str, page_url: str) -> bool:
    """An index page is untrusted: a file name must be a plain name (it becomes a path in the cache), and a
    page served over HTTP may only point at HTTP(S) files, never at this machine's files."""
    if not filename or "/" in filename or "\\" in filename or filename.startswith(".") or "\0" in filename:
        return False
    allowed = ("http", "https", "file") if urllib.parse.urlsplit(page_url).scheme == "file" else ("http", "https")
    return urllib.parse.urlsplit(url).scheme in allowed


def _from_page(body: bytes, content_type: str, page_url: str) -> list[IndexFile]:
    if content_type.split(";")[0].strip() == _JSON:
        try:
            data: Any = json.loads(body)
            entries = [(str(f["filename"]), urllib.parse.urljoin(page_url, str(f["url"])), str((f.get("hashes") or {}).get("sha256", "") or "")) for f in data["files"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BuildError(f"the index page {redact(page_url)} is not PEP 691 JSON ({exc})", "check the index URL") from None
    else:
        hrefs, page_base = _links(body.decode("utf-8", errors="replace"))
        base = urllib.parse.urljoin(page_url, page_base) if page_base else page_url
        entries = []
        for href in hrefs:
            url, _, fragment = urllib.parse.urljoin(base, href).partition("#")
            algorithm, _, digest = fragment.partition("=")
            entries.append((urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]), url, digest if algorithm == "sha256" else ""))
    return [IndexFile(n, strip_credentials(u), h.lower()) for n, u, h in entries if _acceptable(n, u, page_url)]


def _is_of(filename: str, name: str) -> bool:
    """Whether a file of a find-links location belongs to project ``name`` (wheel or sdist naming)."""
    from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename

    try:
        parsed = parse_wheel_filename(filename)[0] if filename.endswith(".whl") else parse_sdist_filename(filename)[0]
    except (InvalidWheelFilename, InvalidSdistFilename):
        return False
    return canonicalize_name(parsed) == name


def project_files(name: str, sources: Sources) -> list[IndexFile]:
    """Every file the sources list for project ``name``, indexes first, in configuration order."""
    name = canonicalize_name(name)
    files: list[IndexFile] = []
    for index in sources.indexes:
        got = _read(f"{index.rstrip('/')}/{name}/", sources, f"{_JSON}, text/html;q=0.5")
        if got is not None:
            files += _from_page(*got)
    for location in sources.find_links:
        if "://" not in location or location.startswith("file:"):
            folder = Path(urllib.parse.unquote(urllib.parse.urlsplit(location).path) if location.startswith("file:") else location)
            if folder.is_dir():
                files += [IndexFile(p.name, p.resolve().as_uri()) for p in sorted(folder.iterdir()) if p.is_file() and _is_of(p.name, name)]
            continue
        got = _read(location, sources, "text/html")
        if got is not None:
            files += [f for f in _from_page(*got) if _is_of(f.filename, name)]
    return files


def rank_wheels(filenames: Sequence[str], target: Target) -> list[str]:
    """The wheel filenames that install on ``target``, best first (the target's tag priority, as pip ranks)."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    from pyimage.resolve.lockinput import target_tags

    order = {tag: i for i, tag in enumerate(target_tags(target))}
    ranked = []
    for filename in filenames:
        if not filename.endswith(".whl"):
            continue
        try:
            tags = parse_wheel_filename(filename)[3]
        except InvalidWheelFilename:
            continue
        best = min((order[t] for t in tags if t in order), default=None)
        if best is not None:
            ranked.append((best, filename))
    return [f for _, f in sorted(ranked)]


def fetch(pin: Pin, sources: Sources, cache: Cache, lock_name: str) -> None:
    """Puts ``pin``'s file (wheel or sdist) in the cache, downloaded from ``pin.url`` and checked against its sha256."""
    if not pin.is_sdist and cache.cached_wheel(pin.sha256, pin.filename) is not None:
        return
    parts = urllib.parse.urlsplit(pin.url)
    if parts.scheme == "file":
        local = Path(urllib.parse.unquote(parts.path))
        if not local.is_file():
            raise BuildError(f"{pin.name}: {local} is not there", "check pip's find-links / index configuration")
        if not pin.is_sdist:
            _check_digest(pin, file_digest(local), lock_name)
            cache.add_wheel(local, pin.sha256)
        return
    if pin.is_sdist:
        return  # built from its URL (pip, hash-checked) when its layer needs it: resolve/pip.py sdist_wheel
    folder = cache.tmp_path("-download")
    folder.mkdir(parents=True)
    got = folder / pin.filename
    from urllib import error as url_error, request as url_request

    request = url_request.Request(pin.url, headers={"User-Agent": "pyimage"})
    auth = _authorization(pin.url, sources)
    if auth:
        request.add_unredirected_header("Authorization", auth)  # never to the host a redirect names (S3, a CDN)
    try:
        try:
            with url_request.urlopen(request, timeout=180) as response, open(got, "wb") as out:  # noqa: S310
                digest = hash_stream(response, into=out)  # hashed as it arrives: the file is not read again
        except OSError as exc:
            if isinstance(exc, url_error.HTTPError):
                exc.close()  # an HTTP error is also the response: its connection stays open until closed
            raise BuildError(f"{pin.name}: cannot download {pin.filename} from {redact(pin.url)}: {exc}", "check the network (and proxy settings), then build again") from None
        _check_digest(pin, digest, lock_name)
        cache.add_wheel(got, pin.sha256, hashed=True)  # linked in unread
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_digest(pin: Pin, actual: str, lock_name: str) -> None:
    if not matches(pin.sha256, actual):
        raise BuildError(
            f"{pin.name} {pin.version}: {pin.filename} from {redact(pin.url)} does not match the sha256 in {lock_name}",
            "the index served a different file: check the index, or re-create the lock",
        )


def in_parallel(work: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``work`` on each item, a few at a time (one index page and download per package: latency, not CPU),
    results in the items' order; the first failure (in that order) is raised."""
    from concurrent.futures import ThreadPoolExecutor

    if len(items) < 2:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
        futures = [pool.submit(work, item) for item in items]
        return [future.result() for future in futures]
