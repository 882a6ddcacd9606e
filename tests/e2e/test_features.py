"""Build features against real tools: bytecode, standalone interpreters, sdist-only dependencies, requirements
files, zstd, other base sources, ownership, and the errors a user meets."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from support.runc import run_image
from wheels_fixture import make_wheel

from .conftest import Pyimage, copy_example

pytestmark = pytest.mark.e2e


def _layer_members(layout: Path, report: dict, name: str) -> list[tarfile.TarInfo]:
    digest = next(l["digest"] for l in report["layers"] if l["name"] == name).split(":")[1]
    with tarfile.open(layout / "blobs" / "sha256" / digest) as tar:
        return tar.getmembers()


def test_compile_bytecode_writes_unchecked_hash_pycs_that_the_image_uses(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    report = pyimage.build(project, tmp_path / "layout", "pyc", "--set", "compile-bytecode=true")
    names = {m.name for m in _layer_members(tmp_path / "layout", report, "site-packages")}
    pyc = "opt/venv/lib/python3.11/site-packages/humanize/__pycache__/__init__.cpython-311.pyc"
    assert pyc in names
    digest = next(l["digest"] for l in report["layers"] if l["name"] == "site-packages").split(":")[1]
    with tarfile.open(tmp_path / "layout" / "blobs" / "sha256" / digest) as tar:
        header = tar.extractfile(pyc).read(16)  # type: ignore[union-attr]
    assert int.from_bytes(header[4:8], "little") == 0b01  # PEP 552: hash-based, unchecked
    again = pyimage.build(project, tmp_path / "layout2", "pyc", "--set", "compile-bytecode=true")
    assert again["image"]["digest"] == report["image"]["digest"]
    out = run_image(tmp_path / "layout", "pyc", args=["/opt/venv/bin/python", "-c", "import humanize, sys; print(humanize.__cached__); print(sys.flags.dont_write_bytecode)"]).stdout
    assert out.splitlines()[0].endswith("__init__.cpython-311.pyc")


@pytest.fixture(scope="session")
def relocatable_python(test_cache_dir: Path) -> Path:
    """pyenv's CPython 3.12 made relocatable the way python-build-standalone is ($ORIGIN rpath), cached."""
    src = next(iter(sorted(Path.home().glob(".pyenv/versions/3.12.*"))), None)
    if src is None or shutil.which("patchelf") is None:
        pytest.fail("needs pyenv's Python 3.12 and patchelf (apt-get install patchelf)")
    dest = test_cache_dir / f"relocatable-{src.name}"
    if not dest.exists():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        skip = shutil.ignore_patterns("test", "site-packages", "__pycache__", "idlelib", "tkinter", "turtledemo", "ensurepip", "*.a")
        shutil.copytree(src, tmp, symlinks=True, ignore=skip)
        (tmp / "lib" / "python3.12" / "site-packages").mkdir()
        subprocess.run(["patchelf", "--set-rpath", "$ORIGIN/../lib", str(tmp / "bin" / "python3.12")], check=True)
        tmp.rename(dest)
    return dest


def test_standalone_interpreter_becomes_its_own_layer_and_runs_the_app(pyimage: Pyimage, relocatable_python: Path, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    report = pyimage.build(project, tmp_path / "layout", "py312", "--set", f"interpreter={relocatable_python}")
    interp = _layer_members(tmp_path / "layout", report, "interpreter")
    names = {m.name for m in interp}
    assert "opt/python/bin/python3.12" in names and "opt/venv/pyvenv.cfg" in names
    out = run_image(tmp_path / "layout", "py312").stdout
    assert "python 3.12 at /opt/venv/bin/python" in out
    assert "hello, world" in out
    # back on the base's 3.11: the lock's one entry for linux/amd64 was 3.12's, and the build says so (a trial)
    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'layout'}:py311", project=project)
    assert "pylock.pyimage.toml is stale (resolved for CPython 3.12 on linux/amd64" in done.stderr and "this build is for CPython 3.11" in done.stderr, done.stderr


def test_a_non_relocatable_interpreter_is_refused_before_layer_work(pyimage: Pyimage, tmp_path: Path) -> None:
    pyenv = Path.home() / ".pyenv" / "versions" / "3.12.1"
    if not (pyenv / "lib" / "libpython3.12.so.1.0").is_file():
        pytest.skip("needs pyenv's shared CPython 3.12.1")
    project = copy_example("hello-cli", tmp_path)
    done = pyimage.run("build", "--set", f"interpreter={pyenv}", "-o", f"oci:{tmp_path / 'layout'}", project=project, check=False)
    assert done.returncode == 2, done.stderr
    lines = [l for l in done.stderr.splitlines() if l.startswith(("error:", "hint:"))]
    assert lines[0] == (
        f"error: interpreter {pyenv}: bin/python3.12 needs libpython3.12.so.1.0, which it looks for in RUNPATH {pyenv}/lib, "
        "a directory of the machine it was built on that the image will not have (the container would exit 127)"
    )
    assert not (tmp_path / "layout").exists()


def test_sdist_only_dependency_is_built_into_a_wheel(pyimage: Pyimage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a real sdist, offered by a real find-links directory, that pip must build for the target
    dep = tmp_path / "greeting-src"
    (dep / "src" / "sdist_greeting").mkdir(parents=True)
    (dep / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        '[project]\nname = "sdist-greeting"\nversion = "0.3"\n'
    )
    (dep / "src" / "sdist_greeting" / "__init__.py").write_text('WORD = "built from an sdist"\n')
    links = tmp_path / "links"
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(links), str(dep)], check=True, capture_output=True)
    project = copy_example("hello-cli", tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"attrs>=23"', '"attrs>=23", "sdist-greeting==0.3"'))
    init = project / "src" / "hello_cli" / "__init__.py"
    init.write_text(init.read_text().replace("import humanize\n", "import humanize\nimport sdist_greeting\n").replace(
        'print(f"{humanize', 'print(sdist_greeting.WORD)\n    print(f"{humanize'))
    monkeypatch.setenv("PIP_FIND_LINKS", f"/opt/wheels {links}")
    report = pyimage.build(project, tmp_path / "layout", "sdist")
    site = next(l for l in report["layers"] if l["name"] == "site-packages")
    assert "sdist-greeting==0.3" in site["packages"]
    assert "built from an sdist" in run_image(tmp_path / "layout", "sdist").stdout


def test_requirements_file_pins_are_the_resolution_input(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    (project / "requirements.txt").write_text("humanize==4.9.0\nattrs==23.2.0\n")
    report = pyimage.build(project, tmp_path / "layout", "req", "--set", "requirements=requirements.txt")
    site = next(l for l in report["layers"] if l["name"] == "site-packages")
    assert sorted(site["packages"]) == ["attrs==23.2.0", "humanize==4.9.0"]
    (project / "requirements.txt").write_text("humanize==4.9.0\n")
    done = pyimage.run("build", "--set", "requirements=requirements.txt", "-o", f"oci:{tmp_path / 'x'}", project=project, check=False)
    assert done.returncode == 2 and "does not satisfy the project's dependency 'attrs>=23'" in done.stderr


def test_zstd_layers_run_and_differ_only_in_compression(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    gz = pyimage.build(project, tmp_path / "gz", "t")
    zst = pyimage.build(project, tmp_path / "zst", "t", "--compression", "zstd")
    assert [l["diff_id"] for l in zst["layers"][1:]] == [l["diff_id"] for l in gz["layers"][1:]]
    manifest = json.loads(subprocess.run(["skopeo", "inspect", "--raw", f"oci:{tmp_path / 'zst'}:t"], capture_output=True, text=True, check=True).stdout)
    assert manifest["layers"][-1]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert "hello, world" in run_image(tmp_path / "zst", "t").stdout


def test_plain_tar_layers_pass_the_checker_and_run(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    plain = pyimage.build(project, tmp_path / "plain", "t", "--compression", "none")
    manifest = json.loads(subprocess.run(["skopeo", "inspect", "--raw", f"oci:{tmp_path / 'plain'}:t"], capture_output=True, text=True, check=True).stdout)
    assert {l["mediaType"] for l in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar"}  # the rootfs base too
    assert [l["digest"] for l in manifest["layers"]] == [l["diff_id"] for l in plain["layers"]]
    assert pyimage.run("inspect", "--check", f"oci:{tmp_path / 'plain'}:t", base=False).returncode == 0
    assert "hello, world" in run_image(tmp_path / "plain", "t").stdout


def test_oci_and_docker_archive_bases(pyimage: Pyimage, tmp_path: Path) -> None:
    first = copy_example("hello-cli", tmp_path / "a")
    report = pyimage.build(first, tmp_path / "base-layout", "base", "-o", f"docker-archive:{tmp_path / 'base.tar'}")
    second = copy_example("web-service", tmp_path / "b")
    for source in (f"oci:{tmp_path / 'base-layout'}:base", f"docker-archive:{tmp_path / 'base.tar'}"):
        # the base is a pyimage image: its venv is /opt/venv too, and laying a second one over it would mix them
        mixed = pyimage.run("build", "-o", f"oci:{tmp_path / 'out'}:x", project=second, base=False, check=False, *["--base", source])
        assert mixed.returncode == 2 and "already has a Python environment at /opt/venv (/opt/venv/bin/python" in mixed.stderr, mixed.stderr
        assert 'venv = "/opt/venv-app"' in mixed.stderr
        done = pyimage.run("build", "--json", "-o", f"oci:{tmp_path / 'out'}:x", "--set", "venv=/opt/venv-app", project=second, base=False, check=False, *["--base", source])
        assert done.returncode == 0, done.stderr
        built = json.loads(done.stdout)
        assert [l["digest"] for l in built["layers"] if l["name"] == "base"] == [l["digest"] for l in report["layers"]]
        # inspect names the layers as build did: the base's own app and site-packages layers are "base"
        shown = json.loads(pyimage.run("inspect", "--json", f"oci:{tmp_path / 'out'}:x", base=False).stdout)
        assert [l["name"] for l in shown["layers"]] == [l["name"] for l in built["layers"]]
    # both environments work side by side: the base's own command, and this app's packages from its venv
    assert "hello, world" in run_image(tmp_path / "out", "x", args=["/opt/venv/bin/hello"]).stdout
    probe = "import fastapi, sys; print(sys.prefix, fastapi.__name__)"
    assert run_image(tmp_path / "out", "x", args=["/opt/venv-app/bin/python", "-c", probe]).stdout.split() == ["/opt/venv-app", "fastapi"]


def test_owner_and_user_are_set_at_write_time(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    report = pyimage.build(project, tmp_path / "layout", "own", "--set", "owner=1000:1000", "--set", "user=1000:1000")
    members = _layer_members(tmp_path / "layout", report, "site-packages")
    owners = {m.name.split("/")[0] + "/" + (m.name.split("/")[1] if "/" in m.name.strip("/") else ""): (m.uid, m.gid) for m in members}
    assert owners.get("opt/") == (0, 0)  # above the venv stays root's
    assert {(m.uid, m.gid) for m in members if m.name.startswith("opt/venv/lib")} == {(1000, 1000)}
    out = run_image(tmp_path / "layout", "own", args=["/opt/venv/bin/python", "-c", "import os; print(os.getuid())"]).stdout
    assert out.strip() == "1000"


def test_several_console_scripts_and_no_entrypoint_is_an_error_listing_them(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('hello = "hello_cli:main"', 'hello = "hello_cli:main"\nhello-too = "hello_cli:main"'))
    for command in (["build", "-o", f"oci:{tmp_path / 'out'}"], ["plan"]):
        done = pyimage.run(*command, project=project, check=False)
        assert done.returncode == 2, done.stderr
        assert "several console scripts (hello, hello-too)" in done.stderr
        assert "project's wheel" not in done.stderr and "base:" not in done.stderr  # said before any work
    assert not (tmp_path / "out").exists()
    report = pyimage.build(project, tmp_path / "ok", "t", "--set", 'entrypoint=["hello-too"]', "--set", 'command=["from-cmd"]')
    assert "hello, from-cmd" in run_image(tmp_path / "ok", "t").stdout
    assert report["layers"][-1]["name"] == "app"


def test_two_wheels_writing_the_same_file_differently_is_refused(pyimage: Pyimage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    links = tmp_path / "links"
    links.mkdir()
    for name in ("clash_one", "clash_two"):
        make_wheel(links, name, "1.0", {"shared/data.txt": name.encode(), f"{name}/__init__.py": b""})
    project = copy_example("hello-cli", tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"attrs>=23"', '"attrs>=23", "clash-one", "clash-two"'))
    monkeypatch.setenv("PIP_FIND_LINKS", f"/opt/wheels {links}")
    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'out'}", project=project, check=False)
    assert done.returncode == 1
    assert "both install /opt/venv/lib/python3.11/site-packages/shared/data.txt with different content" in done.stderr
    assert not (tmp_path / "out").exists()


def test_interpreter_from_a_url_is_checked_against_its_sha256(pyimage: Pyimage, tmp_path: Path) -> None:
    import hashlib
    import http.server
    import io
    import threading

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:  # the shape of a python-build-standalone install_only archive
        script = b"#!/bin/sh\necho standalone\n"
        info = tarfile.TarInfo("python/bin/python3.12")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
        link = tarfile.TarInfo("python/bin/python3")
        link.type, link.linkname = tarfile.SYMTYPE, "python3.12"
        tar.addfile(link)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "py.tar.gz").write_bytes(buf.getvalue())
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "www"), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/py.tar.gz"
    try:
        project = copy_example("hello-cli", tmp_path)
        bad = pyimage.run("build", "--set", f"interpreter={url}", "--set", f"interpreter-sha256={'0' * 64}", "-o", f"oci:{tmp_path / 'bad'}", project=project, check=False)
        assert bad.returncode == 1 and "is not interpreter-sha256" in bad.stderr
        missing = pyimage.run("build", "--set", f"interpreter={url}", "-o", f"oci:{tmp_path / 'bad'}", project=project, check=False)
        assert missing.returncode == 2 and "interpreter-sha256" in missing.stderr
        report = pyimage.build(project, tmp_path / "layout", "u", "--set", f"interpreter={url}", "--set", f"interpreter-sha256={sha}")
        names = {m.name for m in _layer_members(tmp_path / "layout", report, "interpreter")}
        assert {"opt/python/bin/python3.12", "opt/python/bin/python3", "opt/venv/lib/python3.12/site-packages"} <= names
    finally:
        server.shutdown()
        server.server_close()


def test_a_base_without_python_is_an_error_listing_what_was_found(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    done = pyimage.run("build", "--base", "scratch", "-o", f"oci:{tmp_path / 'out'}", project=project, check=False, base=False)
    assert done.returncode == 2
    assert "no Python interpreter found (found: none)" in done.stderr and done.stderr.strip().splitlines()[-1].startswith("hint:")


def test_old_style_namespace_package_split_across_wheels_builds_and_imports(pyimage: Pyimage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pkgutil-style namespace packages: two wheels each ship ns/__init__.py (differing), as pip tolerates."""
    links = tmp_path / "links"
    links.mkdir()
    extend = b"__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
    make_wheel(links, "ns_alpha", "1.0", {"ns/__init__.py": extend, "ns/alpha.py": b"NAME = 'alpha'\n"})
    make_wheel(links, "ns_beta", "1.0", {"ns/__init__.py": b"# beta's copy\n" + extend, "ns/beta.py": b"NAME = 'beta'\n"})
    project = copy_example("hello-cli", tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"attrs>=23"', '"attrs>=23", "ns-alpha", "ns-beta"'))
    monkeypatch.setenv("PIP_FIND_LINKS", f"/opt/wheels {links}")
    done = pyimage.run("build", "--json", "-o", f"oci:{tmp_path / 'out'}:ns", project=project)
    assert any("namespace package" in n for n in json.loads(done.stdout)["notes"])
    out = run_image(tmp_path / "out", "ns", args=["/opt/venv/bin/python", "-c", "import ns.alpha, ns.beta; print(ns.alpha.NAME, ns.beta.NAME)"]).stdout
    assert out.strip() == "alpha beta"


def test_an_sdist_that_cannot_be_built_is_named_in_one_error(pyimage: Pyimage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wheels_fixture import make_sdist

    links = tmp_path / "links"
    make_sdist(links, "needs-fortran", "1.0", {"setup.py": b'raise SystemExit("error: this package needs a Fortran compiler")\n'})
    project = copy_example("hello-cli", tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"attrs>=23"', '"attrs>=23", "needs-fortran==1.0"'))
    monkeypatch.setenv("PIP_FIND_LINKS", f"/opt/wheels {links}")
    done = pyimage.run("build", "-o", f"oci:{tmp_path / 'out'}", project=project, check=False)
    assert done.returncode == 1, done.stderr
    error, hint = done.stderr.strip().splitlines()[-2:]
    assert error.startswith("error: needs-fortran: no wheel for CPython 3.11") and "sdist failed to build" in error
    assert error.endswith("this package needs a Fortran compiler")  # the backend's own words, not pip's boilerplate
    assert hint.startswith("hint:") and "needs-fortran" in hint
    assert not (tmp_path / "out").exists()


def test_a_base_for_another_architecture_is_refused(pyimage: Pyimage, tmp_path: Path) -> None:
    project = copy_example("hello-cli", tmp_path)
    rootfs = pyimage.run("plan", "--platform", "linux/arm64", project=project, check=False)
    assert rootfs.returncode == 2 and "holds x86_64 binaries" in rootfs.stderr
    pyimage.build(project, tmp_path / "base-layout", "amd64")
    layout = pyimage.run("plan", "--platform", "linux/arm64", "--base", f"oci:{tmp_path / 'base-layout'}:amd64", project=project, check=False, base=False)
    assert layout.returncode == 2
    assert "no image for platform linux/arm64" in layout.stderr or "is for linux/amd64" in layout.stderr


def test_uv_resolves_by_default_and_pip_takes_over_where_uv_cannot_serve(pyimage: Pyimage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = copy_example("hello-cli", tmp_path)
    by_uv = pyimage.run("plan", "--cache-dir", str(tmp_path / "c1"), project=project)
    assert "with uv" in by_uv.stderr
    uv_lock = (project / "pylock.pyimage.toml").read_text()
    (project / "pylock.pyimage.toml").unlink()
    monkeypatch.setenv("PIP_PREFER_BINARY", "1")  # a pip setting uv has no flag for
    by_pip = pyimage.run("plan", "--cache-dir", str(tmp_path / "c2"), project=project)
    assert "with pip (pip setting 'prefer-binary' has no uv equivalent)" in by_pip.stderr
    pins = lambda text: [l for l in text.splitlines() if not l.startswith("inputs = ")]  # noqa: E731  (pip's settings changed)
    assert pins((project / "pylock.pyimage.toml").read_text()) == pins(uv_lock)  # the same pins, the same lock
    (project / "pylock.pyimage.toml").unlink()
    forced = pyimage.run("plan", "--set", "resolver=uv", "--cache-dir", str(tmp_path / "c3"), project=project, check=False)
    assert forced.returncode == 2
    error, hint = forced.stderr.strip().splitlines()[-2:]
    assert error == "error: resolver = \"uv\" cannot serve this build: pip setting 'prefer-binary' has no uv equivalent"
    assert hint.startswith("hint:") and "pip" in hint


def test_a_relative_cache_dir_works_from_anywhere(pyimage: Pyimage, tmp_path: Path) -> None:
    """`--cache-dir cache` names a directory of the current one, although the build backend runs in the project."""
    import os
    import subprocess
    import sys

    project = copy_example("hello-cli", tmp_path)
    done = subprocess.run([sys.executable, "-m", "pyimage", "build", "-C", str(project), "--base", f"rootfs:{pyimage.base}", "--cache-dir", "rel-cache",
                           "-o", f"oci:{tmp_path / 'out'}:t"], cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rel-cache" / "envs").is_dir() and not (project / "rel-cache").exists()


def test_files_writable_dirs_and_a_created_user_run_as_that_user(pyimage: Pyimage, tmp_path: Path) -> None:
    """`files` (a config file and a migrations tree), `writable = ["/data"]` and `user = "app"` on a base without
    that user: the image runs as a non-root uid that exists in /etc/passwd, reads the files, writes /data and
    cannot write /app; a changed file rebuilds the files layer only."""
    project = copy_example("hello-cli", tmp_path)
    (project / "conf").mkdir()
    (project / "conf" / "gunicorn.conf.py").write_text("bind = '0.0.0.0:8000'\n")
    (project / "migrations" / "sub").mkdir(parents=True)
    (project / "migrations" / "0001.sql").write_text("-- one\n")
    (project / "migrations" / "sub" / "0002.sql").write_text("-- two\n")
    (project / "migrations" / "stale.pyc").write_bytes(b"\0")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + """
files = [
  { src = "conf/gunicorn.conf.py", dest = "/app/gunicorn.conf.py" },
  { src = "migrations", dest = "/app/migrations/", exclude = ["*.pyc"] },
]
writable = ["/data"]
user = "app"
""")
    first = pyimage.build(project, tmp_path / "out")
    names = [l["name"] for l in first["layers"]]
    assert names[-3:] == ["app", "runtime", "files"]
    code = (
        "import os, pwd, pathlib\n"
        "print(os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name, pwd.getpwuid(os.getuid()).pw_dir)\n"
        "print(sorted(str(p) for p in pathlib.Path('/app').rglob('*') if p.is_file()))\n"
        "pathlib.Path('/data/ok').write_text('x'); print('data writable')\n"
        "try:\n    pathlib.Path('/app/nope').write_text('x')\nexcept PermissionError:\n    print('app read-only')\n"
    )
    out = run_image(tmp_path / "out", "test", args=["/opt/venv/bin/python", "-c", code]).stdout.splitlines()
    assert out[0] == "1000 1000 app /home/app"
    assert out[1] == "['/app/gunicorn.conf.py', '/app/migrations/0001.sql', '/app/migrations/sub/0002.sql']"
    assert out[2:] == ["data writable", "app read-only"]
    assert "hello, world" in run_image(tmp_path / "out", "test").stdout  # the entrypoint runs as that user too

    (project / "migrations" / "0003.sql").write_text("-- three\n")
    second = pyimage.build(project, tmp_path / "out")
    changed = [l["name"] for l, m in zip(second["layers"], first["layers"]) if l["digest"] != m["digest"]]
    assert changed == ["files"]


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ('{ src = "../secrets.txt", dest = "/app/" }', "files: entry 1: src '../secrets.txt' leaves the project"),
        ('{ src = "nothing-here/*.sql", dest = "/app/" }', "nothing in"),
        ('{ src = "link", dest = "/app/" }', "points outside the project"),
        ('{ src = "pyproject.toml", dest = "app/x" }', "files: entry 1: dest 'app/x' is not an absolute path in the image"),
    ],
)
def test_a_bad_files_entry_is_one_error_before_any_work(pyimage: Pyimage, tmp_path: Path, entry: str, needle: str) -> None:
    project = copy_example("hello-cli", tmp_path)
    (tmp_path / "secrets.txt").write_text("s3cret")
    (project / "link").symlink_to(tmp_path / "secrets.txt")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + f"files = [{entry}]\n")
    cache = tmp_path / "fresh-cache"
    done = Pyimage(cache, pyimage.base).run("build", "-o", f"oci:{tmp_path / 'out'}", project=project, check=False)
    assert done.returncode == 2, done.stderr
    error, hint = done.stderr.strip().splitlines()[-2:]
    assert error.startswith("error:") and needle in error and hint.startswith("hint:")
    assert "s3cret" not in done.stderr and not (tmp_path / "out").exists()
    assert not cache.exists() or not any((cache / "blobs" / "sha256").iterdir()) and not any((cache / "envs").iterdir())  # nothing built


def test_a_setup_py_project_gets_a_pyproject_holding_only_tool_pyimage_and_builds(pyimage: Pyimage, tmp_path: Path) -> None:
    """Like mercurial: setup.py only, and its command is a legacy ``scripts=[...]`` file, not a console script."""
    project = tmp_path / "legacy"
    (project / "legacyapp").mkdir(parents=True)
    (project / "scripts").mkdir()
    (project / "setup.py").write_text(
        'from setuptools import setup\nsetup(name="legacyapp", version="0.3", packages=["legacyapp"], install_requires=["attrs"],\n'
        '      scripts=["scripts/legacy-tool"])\n'
    )
    (project / "scripts" / "legacy-tool").write_text("#!/usr/bin/env python\nimport legacyapp\nlegacyapp.main()\n")
    (project / "legacyapp" / "__init__.py").write_text("def main():\n    import attrs\n    print('legacy ok')\n")
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "pyimage", "init", "-C", str(project)], check=True, capture_output=True)
    text = (project / "pyproject.toml").read_text()
    tables = [line for line in text.splitlines() if line.startswith("[")]
    assert tables == ["[tool.pyimage]"]
    pyimage.build(project, tmp_path / "out")
    assert run_image(tmp_path / "out", "test").stdout.strip() == "legacy ok"
    assert sorted(p.name for p in project.iterdir()) == ["legacyapp", "pylock.pyimage.toml", "pyproject.toml", "scripts", "setup.py"]  # no build/, no egg-info


def test_a_setup_cfg_project_with_several_console_scripts_builds_after_init(pyimage: Pyimage, tmp_path: Path) -> None:
    """httpie 3.2.4's layout: setup.py and setup.cfg ``[options.entry_points] console_scripts`` (http, https,
    httpie); init writes the first as the entrypoint, so the build is not stopped by the ambiguity."""
    project = tmp_path / "webtool"
    (project / "webtool").mkdir(parents=True)
    (project / "webtool" / "__init__.py").write_text("")
    (project / "webtool" / "__main__.py").write_text("def main():\n    print('http ran')\n")
    (project / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    (project / "setup.cfg").write_text(
        "[metadata]\nname = webtool\nversion = 3.2.4\n\n[options]\npackages = find:\n\n[options.entry_points]\n"
        "console_scripts =\n    http = webtool.__main__:main\n    https = webtool.__main__:main\n    webtool = webtool.__main__:main\n"
    )
    subprocess.run([sys.executable, "-m", "pyimage", "init", "-C", str(project)], check=True, capture_output=True)
    pyimage.build(project, tmp_path / "out")
    assert run_image(tmp_path / "out", "test").stdout.strip() == "http ran"
