"""A PEP 503 simple index made by a test from real wheel files, served over HTTP on loopback (the standard
library's http.server), optionally behind HTTP Basic authentication; it records the paths it was asked for."""

from __future__ import annotations

import base64
import hashlib
import shutil
import threading
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Sequence

from packaging.utils import canonicalize_name, parse_wheel_filename

__all__ = ["make_simple_index", "serve"]


def make_simple_index(root: Path, wheels: Sequence[Path]) -> Path:
    """``root/simple/<project>/index.html`` linking ``root/files/<wheel>#sha256=…``; returns ``root``."""
    (root / "files").mkdir(parents=True, exist_ok=True)
    by_project: dict[str, list[str]] = {}
    for wheel in wheels:
        shutil.copyfile(wheel, root / "files" / wheel.name)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        by_project.setdefault(canonicalize_name(parse_wheel_filename(wheel.name)[0]), []).append(f'<a href="../../files/{wheel.name}#sha256={digest}">{wheel.name}</a>')
    for project, links in by_project.items():
        (root / "simple" / project).mkdir(parents=True, exist_ok=True)
        (root / "simple" / project / "index.html").write_text("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")
    return root


class _Handler(SimpleHTTPRequestHandler):
    auth: str | None = None
    seen: list[str]

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.auth and self.headers.get("Authorization") != self.auth:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="index"')
            self.end_headers()
            return
        self.seen.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serve(root: Path, user: str | None = None, password: str | None = None) -> Iterator[tuple[str, list[str]]]:
    """Serves ``root`` on 127.0.0.1; yields (base URL, the request paths served so far)."""
    seen: list[str] = []
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user else None
    handler = type("Handler", (_Handler,), {"auth": auth, "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
