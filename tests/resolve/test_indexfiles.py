"""Index pages are untrusted: what they may name, and where the files they list may be; passwords stay out of
every message."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.simpleindex import serve

from pyimage.resolve import indexfiles


def test_a_served_page_cannot_point_at_this_machines_files_or_name_a_path(tmp_path: Path) -> None:
    page = tmp_path / "simple" / "six"
    page.mkdir(parents=True)
    digest = "a" * 64
    (page / "index.html").write_text(
        f'<a href="file:///etc/passwd#sha256={digest}">six-1.0-py3-none-any.whl</a>\n'
        f'<a href="../../files/..%2F..%2Fescape.whl#sha256={digest}">x</a>\n'
        f'<a href="../../files/six-1.0-py3-none-any.whl#sha256={digest.upper()}">six-1.0-py3-none-any.whl</a>\n'
    )
    with serve(tmp_path) as (url, _seen):
        served = indexfiles.project_files("six", indexfiles.Sources((f"{url}/simple",), ()))
    assert served == [indexfiles.IndexFile("six-1.0-py3-none-any.whl", f"{url}/files/six-1.0-py3-none-any.whl", digest)]
    local = indexfiles.project_files("Six", indexfiles.Sources(((tmp_path / "simple").as_uri(),), ()))
    assert [f.url for f in local] == ["file:///etc/passwd", (tmp_path / "files" / "six-1.0-py3-none-any.whl").as_uri()]  # the user's own directory


def test_credentials_are_sent_to_their_host_only_and_never_shown(tmp_path: Path) -> None:
    (tmp_path / "simple" / "six").mkdir(parents=True)
    (tmp_path / "simple" / "six" / "index.html").write_text('<a href="../../files/six-1.0-py3-none-any.whl">six-1.0-py3-none-any.whl</a>')
    with serve(tmp_path, "builder", "hunter2") as (url, seen):
        index = url.replace("http://", "http://builder:hunter2@") + "/simple"
        files = indexfiles.project_files("six", indexfiles.Sources((index,), ()))
    assert seen == ["/simple/six/"] and files[0].url == f"{url}/files/six-1.0-py3-none-any.whl"
    assert indexfiles.redact(index) == url.replace("http://", "http://builder:***@") + "/simple"
    assert "hunter2" not in indexfiles.Sources((index,), ()).describe()


def test_a_token_alone_in_an_index_url_is_hidden_too() -> None:
    from pyimage.resolve.indexfiles import redact

    assert redact("https://s3cr3tT0ken@pypi.fury.io/acme/simple") == "https://****@pypi.fury.io/acme/simple"
    assert redact("https://me:pw@example.org:8443/simple") == "https://me:***@example.org:8443/simple"
    assert redact("https://example.org/simple") == "https://example.org/simple"


def test_a_pip_conf_pip_cannot_parse_leaves_the_default_index_and_uv_gives_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyimage.resolve import uv

    for name in ("PIP_NO_INDEX", "PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    for text in (b"[global\nindex-url = https://example.invalid/simple\n", b"[global]\nindex-url = \xff\xfe\n"):
        conf = tmp_path / "pip.conf"
        conf.write_bytes(text)
        monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
        assert indexfiles.configured_sources() == indexfiles.Sources()
        flags, env, reason = uv.pip_settings_for_uv()
        assert (flags, env) == ([], {}) and reason.startswith("pip's configuration cannot be read (")


def test_credentials_go_into_a_url_quoted_and_a_sources_repr_never_shows_them() -> None:
    url = "https://pkgs.example/simple/"
    assert indexfiles.with_credentials(url, "me@corp", "p:w/d") == "https://me%40corp:p%3Aw%2Fd@pkgs.example/simple/"
    assert indexfiles.with_credentials(url, None, "tok") == "https://:tok@pkgs.example/simple/"
    assert indexfiles.with_credentials(url, None, None) == url
    assert indexfiles.with_credentials("https://own:x@pkgs.example/", "me", "pw") == "https://own:x@pkgs.example/"  # the URL's own wins
    sources = indexfiles.Sources((indexfiles.with_credentials(url, "me", "s3cret-pw"),), ("https://t0ken-only@files.example/",))
    assert "s3cret-pw" not in repr(sources) and "t0ken-only" not in repr(sources) and "pkgs.example" in repr(sources)
    assert "s3cret-pw" not in str([sources]) and "s3cret-pw" in sources.indexes[0]  # kept for the requests themselves
