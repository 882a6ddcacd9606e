"""The GitHub Action's logic (``action.yml`` at the repository root calls it); standard library only.

Every input arrives as an environment variable (``PYIMAGE_IN_<NAME>``), never through a shell: the action's
``run:`` lines only expand ``"$VAR"``s, and this script turns the inputs into an argv list for ``pyimage
build``, so a tag, label or path like ``$(touch /tmp/pwned)`` is data. Values that reach the runner's own
channels (``$GITHUB_OUTPUT``, ``$GITHUB_STEP_SUMMARY``, workflow commands on stdout) are escaped for them.

    run.py source-id ACTION_PATH   # a short hash of what `pip install ACTION_PATH` installs (the venv's name)
    run.py build                   # pyimage build --json with the inputs; outputs and the job summary
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import secrets
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["Inputs", "build_argv", "lowercase_repository", "main", "parse_pairs", "split_list", "summary_markdown"]

# What `pip install ACTION_PATH` reads: the venv built from it is reused while these are unchanged.
SOURCE_PARTS = ("pyproject.toml", "README.md", "pyimage", "templates")


class InputError(Exception):
    """A bad input: reported as one ::error:: line naming the input, before any work."""


def source_id(action_path: Path) -> str:
    digest = hashlib.sha256(f"{sys.version_info[0]}.{sys.version_info[1]}".encode())
    for part in SOURCE_PARTS:
        root = action_path / part
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for path in files:
            digest.update(str(path.relative_to(action_path)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


# -- inputs -------------------------------------------------------------------------------------------------


def split_list(text: str, commas: bool = True) -> list[str]:
    """A newline (and, unless ``commas`` is false, comma) separated input as its non-empty, stripped items."""
    items = re.split(r"[\n,]" if commas else r"\n", text)
    return [item.strip() for item in items if item.strip()]


def parse_pairs(name: str, text: str) -> list[tuple[str, str]]:
    """``KEY=VALUE`` lines (docker/metadata-action's ``labels`` and ``annotations`` outputs)."""
    pairs = []
    for line in split_list(text, commas=False):
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{name}: {line!r} is not KEY=VALUE (one per line)")
        pairs.append((key.strip(), value))
    return pairs


def manifest_annotations(pairs: Iterable[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """Annotations for the image manifest, and the keys skipped because they name another level.

    docker/metadata-action writes ``manifest:KEY=VALUE`` (buildkit's level prefix; ``index:``,
    ``manifest-descriptor:`` … with DOCKER_METADATA_ANNOTATIONS_LEVELS). pyimage writes one manifest and
    no index, so unprefixed and ``manifest:`` keys apply and the other levels are skipped, with a note.
    """
    kept, skipped = [], []
    for key, value in pairs:
        level, sep, rest = key.partition(":")
        if not sep:
            kept.append((key, value))
        elif re.fullmatch(r"manifest(\[[^\]]*\])?", level):
            kept.append((rest, value))
        else:
            skipped.append(key)
    return kept, skipped


def parse_bool(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "false"):
        return value == "true"
    raise InputError(f"{name}: expected true or false, got {text!r}")


def lowercase_repository(ref: str) -> str:
    """``ghcr.io/Owner/App:Tag`` → ``ghcr.io/owner/app:Tag``: repository names are lowercase, tags are not.

    GitHub's ``github.repository`` keeps the owner's capitals, which every registry refuses in a name.
    """
    name, at, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon].lower() + name[colon:] + at + digest
    return name.lower() + at + digest


class Inputs:
    """The action's inputs, read from ``PYIMAGE_IN_*`` variables and checked before any work."""

    def __init__(self, env: Mapping[str, str]) -> None:
        def get(name: str) -> str:
            return env.get("PYIMAGE_IN_" + name.upper().replace("-", "_"), "")

        self.working_directory = get("working-directory") or "."
        self.push = parse_bool("push", get("push") or "false")
        self.load = parse_bool("load", get("load") or "false")
        self.tags = [lowercase_repository(t) for t in split_list(get("tags"))]
        self.labels = parse_pairs("labels", get("labels"))
        self.annotations, self.skipped_annotations = manifest_annotations(parse_pairs("annotations", get("annotations")))
        self.platforms = split_list(get("platforms"))
        self.base = get("base").strip()
        self.heavy = split_list(get("heavy"))
        self.sets = split_list(get("set"), commas=False)
        self.username = get("username")
        self.password = get("password")
        if len(self.platforms) > 1 and self.load:
            raise InputError(f"platforms: load puts one platform's image into the engine, got {len(self.platforms)} ({', '.join(self.platforms)}); load one platform, or push the index")
        if "\n" in self.working_directory or "\0" in self.working_directory:
            raise InputError("working-directory: a path cannot contain a newline")
        if self.push and not self.tags and not self._project_repository():
            raise InputError("push is true but there is nothing to push to: give tags (full references, e.g. from docker/metadata-action) or set repository in [tool.pyimage]")

    def _project_repository(self) -> bool:
        if any(s.partition("=")[0].strip() == "repository" and s.partition("=")[2].strip() not in ("", '""', "''") for s in self.sets):
            return True
        try:
            import tomllib  # type: ignore[import-not-found]
        except ImportError:  # Python 3.10: pyimage's venv has tomli
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            data = tomllib.loads((Path(self.working_directory) / "pyproject.toml").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False  # pyimage reports a missing or broken pyproject.toml itself
        return bool(data.get("tool", {}).get("pyimage", {}).get("repository"))


def project_outputs(inputs: Inputs) -> list[str]:
    """The outputs pyimage would write by itself: ``-o`` replaces them, so ``load`` has to name them again."""
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))
        configured = data.get("tool", {}).get("pyimage", {}).get("output") or []
    except (OSError, ValueError):
        configured = []
    if configured:
        return [configured] if isinstance(configured, str) else list(configured)
    return [] if inputs.push else ["oci:dist/image"]


def build_argv(pyimage: Sequence[str], inputs: Inputs, load_archive: Path | None = None) -> list[str]:
    """``pyimage build`` for the inputs; it runs in the working directory, so relative paths are the project's."""
    argv = [*pyimage, "build", "--json", "-C", "."]
    if inputs.base:
        argv += ["--base", inputs.base]
    if inputs.platforms:
        argv += ["--platform", ",".join(inputs.platforms)]
    for name in inputs.heavy:
        argv += ["--heavy", name]
    for item in inputs.sets:
        argv += ["--set", item]
    for key, value in inputs.labels:
        argv += ["--label", f"{key}={value}"]
    for key, value in inputs.annotations:
        argv += ["--annotation", f"{key}={value}"]
    if inputs.push:
        for tag in inputs.tags:
            argv += ["--push", tag]
    else:
        argv += ["--set", 'repository=""']  # a project's own `repository` would push; push: false means no push
    if load_archive is not None:
        for out in project_outputs(inputs):
            argv += ["-o", out]
        name = f":{inputs.tags[0]}" if inputs.tags else ""
        argv += ["-o", f"docker-archive:{load_archive}{name}"]
    return argv


# -- the runner's channels ------------------------------------------------------------------------------------


def command_data(text: str) -> str:
    """Escapes a value for a workflow command line (``::error::VALUE``), so it cannot start another command."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def write_outputs(path: Path, values: Mapping[str, str]) -> None:
    """``name<<DELIM`` blocks, with a delimiter that is not in the value: a value cannot add outputs."""
    with path.open("a", encoding="utf-8") as out:
        for name, value in values.items():
            delim = "EOF_" + secrets.token_hex(8)
            while delim in value:
                delim = "EOF_" + secrets.token_hex(8)
            out.write(f"{name}<<{delim}\n{value}\n{delim}\n")


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _cell(text: str) -> str:
    """Table-cell-safe markdown: HTML-escaped, pipes and backticks neutralised, one line."""
    return html.escape(text).replace("|", "&#124;").replace("`", "&#96;").replace("\n", " ")


def summary_markdown(report: Mapping[str, Any], skipped_annotations: Sequence[str] = ()) -> str:
    """The job summary: the image, its layers (size, cached/built, packages), where it went, pyimage's notes."""
    image = report["image"]
    lines = [
        f"### pyimage: <code>{_cell(image['digest'])}</code>",
        "",
        f"{_cell(image.get('platform', ''))}, {_human(image.get('size', 0))}; base <code>{_cell(str(report.get('base', '')))}</code>",
        "",
        "| layer | size | | packages |",
        "| --- | ---: | --- | --- |",
    ]
    for layer in report["layers"]:
        packages = layer.get("packages") or []
        shown = ", ".join(packages[:8]) + (f" … (+{len(packages) - 8})" if len(packages) > 8 else "")
        state = "in registry" if layer.get("remote") else "cached" if layer.get("cached") else "built"
        lines.append(f"| {_cell(layer['name'])} | {_human(layer['size'])} | {state} | {_cell(shown)} |")
    pushed = report.get("pushed") or []
    if pushed:
        lines += ["", "**Pushed**", ""]
        for p in pushed:
            counts = f"{p.get('uploaded', 0)} blobs uploaded ({_human(p.get('bytes_uploaded', 0))}), {p.get('mounted', 0)} mounted, {p.get('skipped', 0)} already there"
            lines.append(f"- <code>{_cell(p['reference'])}@{_cell(p['digest'])}</code>: {counts}")
    else:
        lines += ["", "Not pushed."]
    outputs = report.get("outputs") or []
    if outputs:
        lines += ["", "**Written**", ""] + [f"- <code>{_cell(o)}</code>" for o in outputs]
    notes = list(report.get("notes") or []) + [f"annotation {k} skipped: the action sets manifest annotations only" for k in skipped_annotations]
    if notes:
        lines += ["", "**Notes**", ""] + [f"- {_cell(n)}" for n in notes]
    return "\n".join(lines) + "\n"


def pinned_reference(pushed: Mapping[str, Any]) -> str:
    """``registry/repo@digest`` of a push report entry (its tag dropped: the digest is the pin)."""
    ref = str(pushed["reference"]).partition("@")[0]
    slash, colon = ref.rfind("/"), ref.rfind(":")
    name = ref[:colon] if colon > slash else ref
    return f"{name}@{pushed['digest']}"


# -- build ----------------------------------------------------------------------------------------------------


def _relay(stream: Any, last: dict[str, str]) -> None:
    """Copies pyimage's progress to our stderr as it comes, keeping its ``error:``/``hint:`` lines."""
    for line in iter(stream.readline, ""):
        sys.stderr.write(line)
        sys.stderr.flush()
        for key in ("error", "hint"):
            if line.startswith(key + ": "):
                last[key] = line[len(key) + 2 :].rstrip("\n")


def _load(archive: Path) -> None:
    """``docker load`` where a Docker daemon answers (GitHub's runners), else ``podman load``."""
    import shutil

    for engine in ("docker", "podman"):
        if shutil.which(engine) and subprocess.run([engine, "info"], capture_output=True).returncode == 0:
            subprocess.run([engine, "load", "-i", str(archive)], check=True, stdout=sys.stderr)
            return
    raise InputError("load is true but no container engine answers (docker info and podman info failed)")


def build(env: Mapping[str, str]) -> int:
    inputs = Inputs(env)
    workdir = Path(inputs.working_directory)
    if not workdir.is_dir():
        raise InputError(f"working-directory: {inputs.working_directory!r} is not a directory (relative to the workspace)")
    runner_temp = Path(env.get("RUNNER_TEMP") or "/tmp")
    archive = runner_temp / f"pyimage-load-{secrets.token_hex(4)}.tar" if inputs.load else None
    os.chdir(workdir)
    argv = build_argv([sys.executable, "-m", "pyimage"], inputs, archive)
    child_env = dict(env)
    for key in list(child_env):
        if key.startswith("PYIMAGE_IN_"):
            del child_env[key]
    if inputs.username:
        child_env["PYIMAGE_REGISTRY_USERNAME"] = inputs.username
    if inputs.password:
        print(f"::add-mask::{command_data(inputs.password)}", flush=True)
        child_env["PYIMAGE_REGISTRY_PASSWORD"] = inputs.password
    # Workflow commands stay off while pyimage's output (which quotes inputs) goes by.
    token = secrets.token_hex(16)
    print(f"::stop-commands::{token}", flush=True)
    last: dict[str, str] = {}
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env)
        relay = threading.Thread(target=_relay, args=(proc.stderr, last), daemon=True)
        relay.start()
        stdout = proc.stdout.read() if proc.stdout else ""
        code = proc.wait()
        relay.join()
    finally:
        print(f"::{token}::", flush=True)
    if code != 0:
        message = last.get("error", f"pyimage build exited {code}")
        if "hint" in last:
            message += f" (hint: {last['hint']})"
        print(f"::error title=pyimage build::{command_data(message)}", flush=True)
        return code
    report = json.loads(stdout)
    if archive is not None:
        _load(archive)
        archive.unlink(missing_ok=True)
    pushed = report.get("pushed") or []
    outputs = {
        "digest": report["image"]["digest"],
        "imageid": report["image"].get("config_digest", ""),
        "image": pinned_reference(pushed[0]) if pushed else "",
        "metadata": json.dumps(report, separators=(",", ":")),
        "layers": json.dumps(report["layers"], separators=(",", ":")),
    }
    if env.get("GITHUB_OUTPUT"):
        write_outputs(Path(env["GITHUB_OUTPUT"]), outputs)
    if env.get("GITHUB_STEP_SUMMARY"):
        with open(env["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as out:
            out.write(summary_markdown(report, inputs.skipped_annotations))
    return 0


def main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "source-id":
        print(source_id(Path(argv[1])))
        return 0
    if argv == ["build"]:
        try:
            return build(os.environ)
        except InputError as exc:
            print(f"::error title=pyimage action input::{command_data(str(exc))}", flush=True)
            return 2
    print("usage: run.py source-id ACTION_PATH | run.py build", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
