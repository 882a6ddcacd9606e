"""What `files = [{src = ".", dest = "/app/"}]` leaves out: built-in excludes (a real venv, .git, caches, a
previous image layout), the project's .dockerignore, the entry's exclude applied before symlink checks; and which
kept files look like secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pyimage.errors import ConfigError
from pyimage.layers.ignore import database_like, read_dockerignore, secret_like
from pyimage.layers.runtime import collect_files


def _entry(src: str = ".", dest: str = "/app/", exclude: list[str] | None = None) -> dict[str, object]:
    return {"src": src, "dest": dest, "mode": None, "exclude": exclude or []}


def _write(root: Path, rel: str, text: str = "x") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    for rel in ("manage.py", "app/views.py", "app/__pycache__/views.cpython-311.pyc", "app/old.pyc", ".git/HEAD", ".git/objects/ab/cd",
                ".env", ".env.example", "certs/server.pem", "db.sqlite3", "dist/image/oci-layout", "dist/image/blobs/sha256/00",
                "build/lib/app/views.py", "build/bdist.linux-x86_64/x", "build/static/main.js", "app.egg-info/PKG-INFO",
                ".pytest_cache/v", ".mypy_cache/v", ".tox/py/x", "docs/guide.md", "docs/keep.md", "out/image.tar"):
        _write(root, rel)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / ".venv")], check=True)  # bin/python points outside
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "env")], check=True)  # a venv by its pyvenv.cfg
    return root


def _dests(root: Path, *entries: dict[str, object], skip: tuple[Path, ...] = ()) -> list[str]:
    return [f.dest for f in collect_files(root, list(entries), skip=skip)]


def test_src_dot_leaves_out_what_is_never_app_content(project: Path) -> None:
    got = _dests(project, _entry(), skip=(project / "out" / "image.tar",))
    assert got == [
        "app/.env", "app/.env.example", "app/app/views.py", "app/build/static/main.js", "app/certs/server.pem",
        "app/db.sqlite3", "app/docs/guide.md", "app/docs/keep.md", "app/manage.py",
    ]
    assert secret_like(got) == ["app/.env", "app/certs/server.pem"]
    assert database_like([*got, "app/data.sqlite", "app/db.sqlite3-journal"]) == ["app/data.sqlite", "app/db.sqlite3"]


def test_dockerignore_patterns_reincludes_and_double_star(project: Path) -> None:
    (project / ".dockerignore").write_text("# local state\n/db.sqlite3\n.env\ndocs\n!docs/keep.md\n**/*.js\ncerts/*.pem\n")
    assert _dests(project, _entry()) == ["app/.dockerignore", "app/.env.example", "app/app/views.py", "app/docs/keep.md", "app/manage.py", "app/out/image.tar"]


def test_a_literal_src_is_taken_as_named_even_if_dockerignored(project: Path) -> None:
    (project / ".dockerignore").write_text("db.sqlite3\n")
    assert _dests(project, _entry("db.sqlite3", "/data/db.sqlite3")) == ["data/db.sqlite3"]


@pytest.mark.parametrize("exclude", [[".venv"], [".venv/*"], [".venv/*", ".venv/**"]])
def test_exclude_prunes_a_directory_before_its_symlinks_are_checked(tmp_path: Path, exclude: list[str]) -> None:
    """A venv under another name (no pyvenv.cfg: a copied tree) whose bin/python points out of the project."""
    root = tmp_path / "proj"
    _write(root, "main.py")
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (root / "venvcopy" / "bin").mkdir(parents=True)
    (root / "venvcopy" / "bin" / "python").symlink_to(sys.executable)
    with pytest.raises(ConfigError, match="points outside the project"):
        _dests(root, _entry())
    assert _dests(root, _entry(exclude=[e.replace(".venv", "venvcopy") for e in exclude])) == ["app/main.py"]


def test_a_glob_skips_matches_inside_excluded_directories(project: Path) -> None:
    assert _dests(project, _entry("**/*.py")) == ["app/app/views.py", "app/manage.py"]


def test_a_glob_whose_every_match_is_excluded_is_an_error(project: Path) -> None:
    with pytest.raises(ConfigError, match="every path it matches is excluded"):
        _dests(project, _entry("**/*.pyc"))


def test_dockerignore_syntax() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / ".dockerignore").write_text("*.md\n!README.md\ntmp?\n**/cache\n/./abs/x\n[ab].txt\n")
        ig = read_dockerignore(Path(d))
    assert ig.excluded("notes.md") and not ig.excluded("README.md") and not ig.excluded("docs/notes.md")  # * stays in one part
    assert ig.excluded("tmp1/file") and not ig.excluded("tmp12")
    assert ig.excluded("cache/x") and ig.excluded("a/b/cache") and ig.excluded("abs/x") and ig.excluded("a.txt") and not ig.excluded("c.txt")
    assert ig.prunes("cache") and ig.prunes("tmp1")


def test_two_entries_writing_one_path_say_whether_content_or_mode_differs(tmp_path: Path) -> None:
    """A new-user trial: the same file under two modes was said to be "other content"."""
    _write(tmp_path, "config/app.yaml", "a: 1\n")
    _write(tmp_path, "other/app.yaml", "a: 2\n")
    secret = {**_entry("config/app.yaml", "/opt/conf/app.yaml"), "mode": 0o600}
    with pytest.raises(ConfigError) as err:
        collect_files(tmp_path, [secret, _entry("config", "/opt/conf/")])
    assert err.value.message.endswith("/opt/conf/app.yaml is also written by another files entry, with another mode (0644, there 0600)")
    assert err.value.hint == "give both entries the same mode (or exclude the file from one)"
    with pytest.raises(ConfigError) as err:
        collect_files(tmp_path, [_entry("config/app.yaml", "/opt/conf/app.yaml"), _entry("other", "/opt/conf/")])
    assert err.value.message.endswith("with other content") and err.value.hint == "give each in-image path one source"
    assert [f.dest for f in collect_files(tmp_path, [_entry("config/app.yaml", "/opt/conf/app.yaml"), _entry("config", "/opt/conf/")])] == ["opt/conf/app.yaml"]
