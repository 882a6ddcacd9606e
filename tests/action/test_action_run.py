"""action/run.py without a runner: how inputs become pyimage's argv, and what reaches the runner's channels.

tests/test_action.py runs the whole action with act; these pin the rules one by one, fast.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("pyimage_action_run", ROOT / "action" / "run.py")
assert _spec and _spec.loader
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)

PYIMAGE = ["pyimage"]


def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **values: str):  # type: ignore[no-untyped-def]
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "demo"\nversion = "1"\n')
    monkeypatch.chdir(tmp_path)
    return run.Inputs({"PYIMAGE_IN_" + k.upper(): v for k, v in values.items()})


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("ghcr.io/Octo-Org/Hello-CLI:Feature-X", "ghcr.io/octo-org/hello-cli:Feature-X"),
        ("localhost:5000/Org/App", "localhost:5000/org/app"),
        ("Registry.Example:443/A/B:v1@sha256:ABC", "registry.example:443/a/b:v1@sha256:ABC"),
    ],
)
def test_repository_names_are_lowercased_and_tags_keep_their_case(ref: str, expected: str) -> None:
    assert run.lowercase_repository(ref) == expected


def test_tags_are_split_on_newlines_and_commas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    got = inputs(tmp_path, monkeypatch, tags="ghcr.io/O/a:1\n ghcr.io/O/a:2 ,ghcr.io/O/a:3\n\n", push="true")
    assert got.tags == ["ghcr.io/o/a:1", "ghcr.io/o/a:2", "ghcr.io/o/a:3"]
    argv = run.build_argv(PYIMAGE, got)
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--push"] == got.tags


def test_every_input_is_one_argv_item_whatever_it_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = '"; touch /tmp/pwned; " $(touch /tmp/pwned) `id`'
    got = inputs(tmp_path, monkeypatch, base=hostile, heavy="torch, nvidia-*", set=f"user={hostile}\nmax-layers=20",
                 labels=f"a={hostile}\nb=x=y", platforms="linux/amd64")
    argv = run.build_argv(PYIMAGE, got)
    assert argv[argv.index("--base") + 1] == hostile
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--heavy"] == ["torch", "nvidia-*"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--set"] == [f"user={hostile}", "max-layers=20", 'repository=""']
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--label"] == [f"a={hostile}", "b=x=y"]
    assert argv[argv.index("--platform") + 1] == "linux/amd64"


def test_without_push_a_projects_own_repository_cannot_push(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = run.build_argv(PYIMAGE, inputs(tmp_path, monkeypatch, tags="ghcr.io/o/a:1"))
    assert "--push" not in argv and argv[-2:] == ["--set", 'repository=""']


def test_push_with_nowhere_to_push_is_refused_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(run.InputError, match="push is true but there is nothing to push to"):
        inputs(tmp_path, monkeypatch, push="true")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "d"\n[tool.pyimage]\nrepository = "ghcr.io/o/d"\n')
    assert run.Inputs({"PYIMAGE_IN_PUSH": "true"}).push


@pytest.mark.parametrize("name", ["push", "load"])
def test_a_boolean_input_is_true_or_false(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(run.InputError, match=f"{name}: expected true or false, got 'yes'"):
        inputs(tmp_path, monkeypatch, **{name: "yes"})


def test_several_platforms_go_to_pyimage_as_one_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = run.build_argv(PYIMAGE, inputs(tmp_path, monkeypatch, platforms="linux/amd64\nlinux/arm64"))
    assert argv[argv.index("--platform") + 1] == "linux/amd64,linux/arm64"


def test_several_platforms_cannot_be_loaded_into_one_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(run.InputError, match=r"platforms: load puts one platform's image into the engine, got 2 \(linux/amd64, linux/arm64\)"):
        inputs(tmp_path, monkeypatch, platforms="linux/amd64,linux/arm64", load="true")


def test_labels_must_be_key_value_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(run.InputError, match="labels: 'no-equals' is not KEY=VALUE"):
        inputs(tmp_path, monkeypatch, labels="a=1\nno-equals")


def test_metadata_action_annotations_apply_to_the_manifest_and_other_levels_are_skipped() -> None:
    kept, skipped = run.manifest_annotations([("manifest:org.a", "1"), ("manifest[linux/amd64]:org.b", "2"), ("org.c", "3"),
                                             ("index:org.d", "4"), ("manifest-descriptor:org.e", "5")])
    assert kept == [("org.a", "1"), ("org.b", "2"), ("org.c", "3")]
    assert skipped == ["index:org.d", "manifest-descriptor:org.e"]


def test_load_keeps_the_projects_outputs_and_adds_a_docker_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    got = inputs(tmp_path, monkeypatch, load="true", tags="ghcr.io/O/a:1")
    argv = run.build_argv(PYIMAGE, got, tmp_path / "load.tar")
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-o"] == ["oci:dist/image", f"docker-archive:{tmp_path / 'load.tar'}:ghcr.io/o/a:1"]
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "d"\n[tool.pyimage]\noutput = ["oci:out:x"]\n')
    argv = run.build_argv(PYIMAGE, run.Inputs({"PYIMAGE_IN_LOAD": "true"}), tmp_path / "load.tar")
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-o"] == ["oci:out:x", f"docker-archive:{tmp_path / 'load.tar'}"]


def test_an_output_value_cannot_add_outputs(tmp_path: Path) -> None:
    out = tmp_path / "output"
    forged = "x\nEOF\nimage=evil\nEOF_0000"
    run.write_outputs(out, {"metadata": forged, "digest": "sha256:1"})
    text = out.read_text()
    blocks = re.findall(r"^(\w+)<<(\S+)\n(.*?)\n\2$", text, re.S | re.M)
    assert [(name, value) for name, _, value in blocks] == [("metadata", forged), ("digest", "sha256:1")]


def test_a_workflow_command_value_cannot_start_another_command() -> None:
    assert run.command_data("bad\n::add-mask::x 100%") == "bad%0A::add-mask::x 100%25"


REPORT = {
    "image": {"digest": "sha256:" + "a" * 64, "config_digest": "sha256:" + "b" * 64, "platform": "linux/amd64", "size": 1_500_000},
    "base": "rootfs:/b.tar",
    "layers": [
        {"name": "base", "size": 1_000_000, "packages": [], "cached": True},
        {"name": "site-packages", "size": 400_000, "packages": [f"p{i}==1" for i in range(10)], "cached": False},
        {"name": "app", "size": 1_400, "packages": ["demo==1|<b>"], "cached": False},
    ],
    "outputs": [],
    "pushed": [{"reference": "ghcr.io/o/demo:1", "digest": "sha256:" + "a" * 64, "uploaded": 2, "mounted": 1, "skipped": 1, "bytes_uploaded": 401_400}],
    "notes": ["a note"],
}


def test_the_job_summary_has_the_layer_table_and_the_pushed_references() -> None:
    summary = run.summary_markdown(REPORT, ["index:org.x"])
    rows = [line for line in summary.splitlines() if line.startswith("| ") and not line.startswith("| layer") and "---" not in line]
    assert rows[0] == "| base | 1.0 MB | cached |  |"
    assert rows[1] == "| site-packages | 400.0 kB | built | p0==1, p1==1, p2==1, p3==1, p4==1, p5==1, p6==1, p7==1 … (+2) |"
    assert rows[2] == "| app | 1.4 kB | built | demo==1&#124;&lt;b&gt; |"  # a cell cannot break the table or add HTML
    assert f"- <code>ghcr.io/o/demo:1@sha256:{'a' * 64}</code>: 2 blobs uploaded (401.4 kB), 1 mounted, 1 already there" in summary
    assert "- a note" in summary and "- annotation index:org.x skipped" in summary


def test_the_image_output_is_the_pushed_repository_pinned_by_digest() -> None:
    assert run.pinned_reference(REPORT["pushed"][0]) == "ghcr.io/o/demo@sha256:" + "a" * 64
    assert run.pinned_reference({"reference": "localhost:5000/a", "digest": "sha256:1"}) == "localhost:5000/a@sha256:1"


def test_a_bad_input_is_one_error_annotation_and_exit_2(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYIMAGE_IN_PUSH": "maybe", "GITHUB_OUTPUT": str(tmp_path / "out")}
    done = subprocess.run([sys.executable, str(ROOT / "action" / "run.py"), "build"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stdout == "::error title=pyimage action input::push: expected true or false, got 'maybe'\n"
    assert not (tmp_path / "out").exists()


def test_the_source_id_changes_with_what_pip_installs(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "README.md"):
        (tmp_path / name).write_text("x")
    (tmp_path / "pyimage").mkdir()
    (tmp_path / "pyimage" / "cli.py").write_text("a")
    first = run.source_id(tmp_path)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text("not installed")
    assert run.source_id(tmp_path) == first
    (tmp_path / "pyimage" / "cli.py").write_text("b")
    assert run.source_id(tmp_path) != first
    assert json.dumps(first).isascii() and len(first) == 16
