"""The ``[tool.pyimage]`` schema: defaults, overrides, and errors that name the key, the file and the line."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from pyimage.config import KEYS, load_config, parse_size
from pyimage.errors import ConfigError
from pyimage.layers.plan import MAX_LAYERS_DEFAULT, HeavyGroup
from pyimage.layers.tar import Owner
from pyimage.oci.model import Platform

PROJECT = """\
[project]
name = "demo"
version = "1.0"
dependencies = ["six"]

[tool.other]
max_layers = "not ours"
"""


def project(tmp_path: Path, section: str | None = "", *, before: str = PROJECT) -> Path:
    """A project whose pyproject.toml has ``section`` as its ``[tool.pyimage]`` body (none when None)."""
    text = before if section is None else before + "\n[tool.pyimage]\n" + textwrap.dedent(section)
    (tmp_path / "pyproject.toml").write_text(text)
    return tmp_path


def line_of(path: Path, needle: str) -> int:
    lines = (path / "pyproject.toml").read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if line.lstrip().startswith(needle))


def config_error(tmp_path: Path, section: str, overrides: dict[str, Any] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_config(project(tmp_path, section), overrides)
    return err.value


# -- defaults ----------------------------------------------------------------------------------------------
DEFAULTS: dict[str, Any] = {
    "base": "docker.io/library/python:3.12-slim",
    "python": None,
    "interpreter": "base",
    "interpreter-sha256": None,
    "platform": Platform("linux", "amd64"),
    "heavy": (),
    "heavy-threshold": 100_000_000,
    "max-layers": MAX_LAYERS_DEFAULT,
    "entrypoint": None,
    "command": None,
    "env": {},
    "labels": {},
    "ports": (),
    "annotations": {},
    "user": None,
    "workdir": None,
    "files": (),
    "writable": (),
    "venv": "/opt/venv",
    "source-date-epoch": None,
    "compile-bytecode": False,
    "compression": "gzip",
    "owner": Owner(0, 0),
    "requirements": None,
    "extras": (),
    "output": (),
    "repository": None,
    "tags": (),
    "lock-input": None,
    "groups": (),
    "resolver": "auto",
    "lock": "pylock.pyimage.toml",
    "allow-missing-libraries": (),
}


def test_every_key_has_a_default_listed_here() -> None:
    assert set(DEFAULTS) == set(KEYS), "a new key needs its default pinned in DEFAULTS"


@pytest.mark.parametrize("key", list(DEFAULTS))
def test_default_of(key: str, tmp_path: Path) -> None:
    cfg = load_config(project(tmp_path, None))

    assert cfg.as_dict()[key] == DEFAULTS[key]


def test_an_empty_tool_pyimage_section_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(project(tmp_path, "")).as_dict() == DEFAULTS


def test_max_layers_default_leaves_room_under_the_runtime_limit() -> None:
    assert 2 <= MAX_LAYERS_DEFAULT <= 127


def test_every_key_documents_its_kind_and_purpose() -> None:
    for name, key in KEYS.items():
        assert key.kind and key.doc, name


def test_config_knows_its_project_and_file(tmp_path: Path) -> None:
    cfg = load_config(project(tmp_path, ""))

    assert cfg.project_dir == tmp_path.resolve()
    assert cfg.pyproject == tmp_path / "pyproject.toml"


# -- values from the file ----------------------------------------------------------------------------------
def test_values_from_the_file_are_checked_and_typed(tmp_path: Path) -> None:
    cfg = load_config(
        project(
            tmp_path,
            """\
            base = "scratch"
            python = "3.11"
            platform = "linux/arm64/v8"
            max-layers = 20
            entrypoint = ["demo", "--serve"]
            command = "--port 8080"
            env = { PORT = 8080, MODE = "prod" }
            venv = "/srv/venv/"
            compile-bytecode = true
            compression = "zstd"
            owner = "1000:100"
            extras = ["web", "db"]
            tags = "1.0, latest"
            """,
        )
    )

    assert cfg.base == "scratch"
    assert cfg.python == "3.11"
    assert cfg.platform == Platform("linux", "arm64", "v8")
    assert cfg.max_layers == 20
    assert cfg.entrypoint == ("demo", "--serve")
    assert cfg.command == ("--port", "8080")
    assert cfg.env == {"PORT": "8080", "MODE": "prod"}
    assert cfg.venv == "/srv/venv"
    assert cfg.compile_bytecode is True
    assert cfg.compression == "zstd"
    assert cfg.owner == Owner(1000, 100)
    assert cfg.extras == ("web", "db")
    assert cfg.tags == ("1.0", "latest")


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    root = project(tmp_path, 'max-layers = 20\ncompression = "zstd"\nheavy = ["torch"]\n')

    cfg = load_config(root, {"max-layers": 30, "heavy": ["nvidia-*"]})

    assert cfg.max_layers == 30
    assert cfg.heavy == (HeavyGroup("nvidia-*", ("nvidia-*",)),)
    assert cfg.compression == "zstd"  # not overridden: the file's value stays


def test_overrides_are_checked_like_the_file(tmp_path: Path) -> None:
    err = config_error(tmp_path, "", {"max-layers": "lots"})

    assert err.message == "command line: --set max-layers: expected integer 2..127, got 'lots'"


def test_an_unknown_override_names_the_flag(tmp_path: Path) -> None:
    err = config_error(tmp_path, "", {"max_layers": 3})

    assert err.message == "command line: --set max_layers: unknown key"
    assert err.hint == "did you mean 'max-layers'?"


def test_a_missing_pyproject_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no pyproject.toml"):
        load_config(tmp_path)


def test_invalid_toml_is_a_config_error_naming_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.pyimage]\nbase = "unterminated\n')

    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)

    assert err.value.message.startswith(f"{tmp_path / 'pyproject.toml'}:2:")  # FILE:LINE:COLUMN, as compilers say it


def test_tool_pyimage_must_be_a_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool]\npyimage = "yes"\n')

    with pytest.raises(ConfigError, match=r"\[tool.pyimage\] must be a table"):
        load_config(tmp_path)


def test_an_interpreter_url_needs_its_sha256(tmp_path: Path) -> None:
    err = config_error(tmp_path, 'interpreter = "https://example.invalid/python.tar.gz"\n')

    assert "interpreter-sha256" in err.message
    load_config(project(tmp_path, 'interpreter = "https://example.invalid/python.tar.gz"\ninterpreter-sha256 = "abababababababababababababababababababababababababababababababab"\n'))


# -- unknown keys ------------------------------------------------------------------------------------------
def test_unknown_key_names_the_key_the_file_and_the_line(tmp_path: Path) -> None:
    err = config_error(tmp_path, 'base = "scratch"\nmax_layers = 20\n')

    pyproject = tmp_path / "pyproject.toml"
    assert err.message == f"{pyproject}:{line_of(tmp_path, 'max_layers = 20')}: [tool.pyimage] max_layers: unknown key"
    assert err.hint == "did you mean 'max-layers'?"


@pytest.mark.parametrize("typo, meant", [("heavy_threshold", "heavy-threshold"), ("sourcedateepoch", "source-date-epoch")])
def test_unknown_key_that_differs_only_in_separators_gets_a_did_you_mean_hint(typo: str, meant: str, tmp_path: Path) -> None:
    assert config_error(tmp_path, f"{typo} = 1\n").hint == f"did you mean {meant!r}?"


def test_unknown_key_far_from_every_key_lists_the_known_keys(tmp_path: Path) -> None:
    err = config_error(tmp_path, 'frobnicate = true\n')

    assert "frobnicate" in err.message
    assert err.hint.startswith("known keys: ")
    assert all(key in err.hint for key in KEYS)


def test_line_numbers_count_from_the_top_of_the_file_not_the_section(tmp_path: Path) -> None:
    err = config_error(tmp_path, '\n\n\n"max_layers" = 3\n')

    line = line_of(tmp_path, '"max_layers"')
    assert line > 10
    assert f"pyproject.toml:{line}: " in err.message


# -- wrong types -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "line, key, kind",
    [
        ('max-layers = "many"', "max-layers", "integer 2..127"),
        ("max-layers = true", "max-layers", "integer 2..127"),
        ("heavy = 3", "heavy", "list of names, globs or {name, packages} tables"),
        ('heavy-threshold = "big"', "heavy-threshold", 'size ("100MB") or bytes'),
        ('env = ["A=1"]', "env", "table of strings"),
        ('venv = "relative/venv"', "venv", "absolute path"),
        ('venv = "/opt/../etc"', "venv", "absolute path"),
        ('python = "3"', "python", 'string "X.Y"'),
        ('platform = "amd64"', "platform", 'string "os/arch" (or "os/arch/variant"), or a list of them'),
        ('owner = "app"', "owner", 'string "uid:gid"'),
        ("compile-bytecode = 1", "compile-bytecode", "boolean"),
        ("source-date-epoch = -1", "source-date-epoch", "integer 0..253402300799"),
        ("entrypoint = [1, 2]", "entrypoint", "list of strings or a string"),
        ("base = 3", "base", "string, or a table of them keyed by platform"),
    ],
)
def test_wrong_type_names_the_key_the_file_the_line_and_the_accepted_kind(line: str, key: str, kind: str, tmp_path: Path) -> None:
    err = config_error(tmp_path, f'base = "scratch"\n{line}\n' if key != "base" else f"{line}\n")

    pyproject = tmp_path / "pyproject.toml"
    assert err.message.startswith(f"{pyproject}:{line_of(tmp_path, line)}: [tool.pyimage] {key}: expected {kind}, got ")
    assert err.hint.startswith((f"{key}: ", f"write {key} = ")), err.hint  # the key's documentation, or how to write it


@pytest.mark.parametrize(
    "line, reason",
    [
        ("max-layers = 500", "max-layers: 500 is outside 2..127 (engines refuse images of more than 127 layers)"),
        ('compression = "lz4"', "compression: 'lz4' is not one of 'gzip', 'zstd', 'none'"),
        ('heavy = ["torch", "Torch"]', "heavy: the group name 'Torch' appears more than once; each heavy group needs its own name"),
        ('heavy = [{ name = "cuda", packages = [] }]', "heavy: heavy group 'cuda': packages must be a non-empty list of names or globs"),
        ('platform = ["linux/amd64", "linux/amd64"]', "platform: linux/amd64 is listed twice"),
        ('venv = "/usr/local"', "venv: /usr/local is a directory of the base's own system; the venv would shadow it (use e.g. /opt/venv)"),
        ('owner = "4294967295"', "owner: uid and gid must be 0..4294967294"),
        ("entrypoint = []", "entrypoint: it is empty, so the image would have nothing to run; name the program (or leave entrypoint out for the project's console script)"),
        ('entrypoint = ""', "entrypoint: it is empty, so the image would have nothing to run; name the program (or leave entrypoint out for the project's console script)"),
    ],
)
def test_a_value_of_the_right_type_that_is_still_wrong_says_why(line: str, reason: str, tmp_path: Path) -> None:
    err = config_error(tmp_path, f'base = "scratch"\n{line}\n')
    assert err.message == f"{tmp_path / 'pyproject.toml'}:{line_of(tmp_path, line)}: [tool.pyimage] {reason}"


@pytest.mark.parametrize(
    "value, reason, hint",
    [
        ("windows/amd64", "'windows/amd64': pyimage builds Linux images (its wheels, interpreter and base are Linux ones), not windows", "use linux/amd64"),
        ("darwin/arm64", "'darwin/arm64': pyimage builds Linux images (its wheels, interpreter and base are Linux ones), not darwin", "use linux/arm64"),
        ("linux/amd46", "'linux/amd46': 'amd46' is not an architecture pyimage can build for (known: amd64, arm64, arm, 386, ppc64le, s390x, riscv64, mips64le, loong64)", "did you mean linux/amd64?"),
        ("linux/x86_64", "'linux/x86_64': 'x86_64' is not an architecture pyimage can build for (known: amd64, arm64, arm, 386, ppc64le, s390x, riscv64, mips64le, loong64)", "did you mean linux/amd64?"),
        ("linux/aarch64", "'linux/aarch64': 'aarch64' is not an architecture pyimage can build for (known: amd64, arm64, arm, 386, ppc64le, s390x, riscv64, mips64le, loong64)", "did you mean linux/arm64?"),
        ("linux/amd64/v9", "'linux/amd64/v9': 'v9' is not a variant of amd64 (its variants are v1, v2, v3, v4)", "did you mean linux/amd64?"),
        ("linux/arm/v9", "'linux/arm/v9': 'v9' is not a variant of arm (its variants are v5, v6, v7)", "did you mean linux/arm/v7?"),
        ("linux/s390x/v2", "'linux/s390x/v2': 'v2' is not a variant of s390x (it has no variants)", "did you mean linux/s390x?"),
    ],
)
def test_a_platform_pyimage_cannot_build_for_is_refused_at_load_with_a_did_you_mean(value: str, reason: str, hint: str, tmp_path: Path) -> None:
    line = f'platform = ["linux/arm64", "{value}"]'
    with pytest.raises(ConfigError, match="is not|builds Linux images") as err:
        load_config(project(tmp_path, f'base = "scratch"\n{line}\n'))
    assert err.value.message == f"{tmp_path / 'pyproject.toml'}:{line_of(tmp_path, line)}: [tool.pyimage] platform: {reason}"
    assert err.value.hint == hint


def test_a_platform_flag_pyimage_cannot_build_for_is_refused_naming_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^command line: --platform: 'windows/amd64': pyimage builds Linux images"):
        load_config(project(tmp_path, 'base = "scratch"\n'), {"platform": "windows/amd64"})


def test_a_per_platform_table_key_pyimage_cannot_build_for_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[tool.pyimage\] base: 'linux/amd46': 'amd46' is not an architecture"):
        load_config(project(tmp_path, 'base = { "linux/amd46" = "scratch" }\n'))


@pytest.mark.parametrize("value", ["linux/amd64", "linux/amd64/v2", "linux/arm64", "linux/arm64/v8", "linux/arm/v7", "linux/arm/v6", "linux/386", "linux/ppc64le", "linux/s390x", "linux/riscv64", "linux/mips64le", "linux/loong64"])
def test_every_linux_platform_the_engines_name_is_accepted(value: str, tmp_path: Path) -> None:
    cfg = load_config(project(tmp_path, f'base = "scratch"\nplatform = "{value}"\n'))
    assert str(cfg.platform) == value


# -- heavy -------------------------------------------------------------------------------------------------
def test_heavy_accepts_names_globs_and_named_tables(tmp_path: Path) -> None:
    cfg = load_config(
        project(
            tmp_path,
            """\
            heavy = [
                "torch",
                "nvidia-*",
                { name = "cuda", packages = ["cuda-*", "triton"] },
                { name = "jaxlib" },
                { name = "tf", packages = "tensorflow*" },
            ]
            """,
        )
    )

    assert cfg.heavy == (
        HeavyGroup("torch", ("torch",)),
        HeavyGroup("nvidia-*", ("nvidia-*",)),
        HeavyGroup("cuda", ("cuda-*", "triton")),
        HeavyGroup("jaxlib", ("jaxlib",)),
        HeavyGroup("tf", ("tensorflow*",)),
    )


def test_heavy_accepts_a_single_string(tmp_path: Path) -> None:
    assert load_config(project(tmp_path, 'heavy = "torch"\n')).heavy == (HeavyGroup("torch", ("torch",)),)


@pytest.mark.parametrize(
    "value",
    [
        '["torch", "torch"]',
        '["cuda", { name = "cuda", packages = ["nvidia-*"] }]',
        '[{ packages = ["nvidia-*"] }]',
        '[{ name = "cuda", packages = [] }]',
        '[{ name = "cuda", packages = ["nvidia-*"], layer = 2 }]',
        '[""]',
        "[3]",
    ],
    ids=["duplicate-name", "duplicate-group", "table-without-name", "empty-packages", "unknown-field", "empty", "number"],
)
def test_heavy_rejects_duplicates_and_malformed_groups(value: str, tmp_path: Path) -> None:
    err = config_error(tmp_path, f"heavy = {value}\n")

    assert "[tool.pyimage] heavy: expected list of names, globs or {name, packages} tables" in err.message or any(
        why in err.message for why in ("appears more than once", "packages must be a non-empty list")
    )


# -- sizes -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, size",
    [
        ("1.5GiB", 1_610_612_736),
        ("200MB", 200_000_000),
        (0, 0),
        ("0", 0),
        (123, 123),
        ("100kB", 100_000),
        ("1KiB", 1024),
        ("2 GB", 2_000_000_000),
        ("200mb", 200_000_000),
        ("1T", 1_000_000_000_000),
        ("512B", 512),
    ],
)
def test_parse_size(text: Any, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text",
    ["lots", "1.5XB", "MB", "-1", "1e9", True, -1, ""],
    ids=["word", "unit", "no-number", "negative-text", "exponent", "bool", "negative-int", "empty"],
)
def test_parse_size_rejects_what_is_not_a_size(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("value, size", [('"1.5GiB"', 1_610_612_736), ('"200MB"', 200_000_000), ("0", 0)])
def test_heavy_threshold_in_the_file_is_a_size(value: str, size: int, tmp_path: Path) -> None:
    assert load_config(project(tmp_path, f"heavy-threshold = {value}\n")).heavy_threshold == size


def test_a_negative_heavy_threshold_is_a_config_error(tmp_path: Path) -> None:
    err = config_error(tmp_path, "heavy-threshold = -1\n")

    assert "heavy-threshold: expected size" in err.message


# -- source-date-epoch -------------------------------------------------------------------------------------
def test_source_date_epoch_from_the_file_wins_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")

    assert load_config(project(tmp_path, "source-date-epoch = 1600000000\n")).epoch == 1_600_000_000


def test_source_date_epoch_falls_back_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")

    assert load_config(project(tmp_path, "")).epoch == 1_700_000_000


def test_source_date_epoch_falls_back_to_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)

    assert load_config(project(tmp_path, "")).epoch == 0


def test_source_date_epoch_override_wins_over_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")

    cfg = load_config(project(tmp_path, "source-date-epoch = 1600000000\n"), {"source-date-epoch": 5})

    assert cfg.epoch == 5


def test_a_misspelt_key_gets_the_nearest_known_one_as_hint(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.pyimage]\nmax-layer = 10\n')
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert "did you mean 'max-layers'?" in err.value.hint


def test_heavy_names_differing_only_in_case_are_duplicates(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.pyimage]\nheavy = ["torch", "Torch"]\n')
    with pytest.raises(ConfigError):
        load_config(tmp_path)


def test_an_invalid_source_date_epoch_is_an_error_not_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
        load_config(tmp_path).epoch


@pytest.mark.parametrize(
    ("line", "says", "hint"),
    [  # new-user trial: "expected table of strings, got {…}" did not say which entry, and "strings" though numbers pass
        ('env = { PORT = 8000, "BAD NAME" = "x" }', "'BAD NAME' is not a variable name", 'write env = { LOG_LEVEL = "info" }'),
        ('env = { LIST = ["a"] }', "'LIST' = ['a']: a value is a string (or a number or boolean, written as text)", "write env = { LOG_LEVEL = \"info\" } (on the command line: --set 'env={LOG_LEVEL=\"info\"}')"),
        ('labels = "team=web"', "expected table of strings, got 'team=web'", "write labels = { team = \"web\" } (on the command line: --set 'labels={team=\"web\"}' or --label team=web)"),
    ],
)
def test_a_bad_table_entry_is_named(line: str, says: str, hint: str, tmp_path: Path) -> None:
    err = config_error(tmp_path, f"{line}\n")
    assert says in err.message and err.hint == hint, (err.message, err.hint)


def test_a_files_src_in_any_script_is_taken_and_an_odd_character_is_named(tmp_path: Path) -> None:
    """A new-user trial: `src = "données"` was refused (ASCII only), and the glob the hint suggested nested the copy."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.pyimage]\nfiles = [{ src = "données", dest = "/srv/données/" }, { src = "日本語/*.txt", dest = "/srv/" }]\n')
    assert [f["src"] for f in load_config(tmp_path).files] == ["données", "日本語/*.txt"]
    err = config_error(tmp_path, 'files = [{ src = "a\\\\b", dest = "/x" }]\n')
    assert "has '\\\\', a character pyimage does not take" in err.message, err.message


def test_a_numeric_user_is_the_uid(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.pyimage]\nuser = 1000\n')
    assert load_config(tmp_path).user == "1000"


def test_set_of_one_entry_of_a_table_says_how_to_set_the_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, {"env.PORT": "8000"})
    assert err.value.message == "command line: --set env.PORT: unknown key"
    assert err.value.hint == """set the table whole: --set 'env={PORT="8000"}'"""


def test_boolean_env_values_are_written_as_toml_spells_them(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.pyimage]\nenv = { DEBUG = true }\n')
    assert load_config(tmp_path).env == {"DEBUG": "true"}


# -- strict values: each refused before any work (issue 8) ----------------------------------------------------
REFUSED = {
    "owner-negative": "owner = -1",
    "owner-wraps-to-root": 'owner = "4294967296"',
    "owner-is-minus-one": 'owner = "0:4294967295"',
    "owner-int-too-big": "owner = 4294967295",
    "venv-usr": 'venv = "/usr"',
    "venv-root": 'venv = "/"',
    "venv-opt": 'venv = "/opt"',
    "venv-usr-local": 'venv = "/usr/local/"',
    "venv-in-usr-lib": 'venv = "/usr/lib/venv"',
    "venv-with-space": 'venv = "/opt/my venv"',
    "max-layers-float": "max-layers = 3.9",
    "max-layers-float-text": 'max-layers = "3.9"',
    "env-empty-name": 'env = { "" = "x" }',
    "env-name-with-equals": 'env = { "A=B" = "x" }',
    "env-name-with-space": 'env = { "A B" = "x" }',
    "env-value-with-nul": 'env = { A = "x\\u0000y" }',
    "label-empty-name": 'labels = { "" = "x" }',
    "epoch-float": "source-date-epoch = 1.5",
    "epoch-after-9999": "source-date-epoch = 253402300800",
    "threshold-float": "heavy-threshold = 1.5",
    "output-oci-empty": 'output = ["oci:"]',
    "output-oci-only-tag": 'output = ["oci::latest"]',
    "output-archive-empty": 'output = ["docker-archive:"]',
    "base-oci-empty": 'base = "oci:"',
    "base-rootfs-empty": 'base = "rootfs:"',
    "tag-with-space": 'tags = ["bad tag"]',
    "extra-with-space": 'extras = ["a b"]',
    "user-with-space": 'user = "a b"',
    "user-uid-too-big": 'user = "4294967296"',
    "workdir-relative": 'workdir = "app"',
    "sha256-not-hex": 'interpreter-sha256 = "xyz"',
    "repository-with-tag": 'repository = "ghcr.io/org/app:1.0"',
    "lock-empty": 'lock = ""',
    "platform-odd": 'platform = "linux/../x"',
    "entrypoint-nul": 'entrypoint = ["a\\u0000b"]',
}


@pytest.mark.parametrize("line", list(REFUSED.values()), ids=list(REFUSED))
def test_a_value_out_of_its_range_is_refused_naming_the_key_and_line(line: str, tmp_path: Path) -> None:
    err = config_error(tmp_path, f"{line}\n")

    key = line.split(" =")[0]
    assert err.message.startswith(f"{tmp_path / 'pyproject.toml'}:{line_of(tmp_path, line)}: [tool.pyimage] {key}: ")  # expected …, or why
    assert err.hint.startswith((f"{key}: ", f"write {key} = ")), err.hint


@pytest.mark.parametrize(
    ("line", "says", "hint"),
    [  # what is wrong, not "expected string" (new-user trial)
        ('user = "app:"', "'app:' is not USER or USER:GROUP (the group after ':' is empty)", 'write user = "app", "1000" or "1000:1000"'),
        ('user = "a:b:c"', "'a:b:c' is not USER or USER:GROUP", 'write user = "app"'),
        ('user = "-x"', "'-x' is not a user or group name", 'write user = "app"'),
        ('user = "4294967296"', "4294967296 is above the largest id, 4294967294", 'write user = "app"'),
        ('files = [{src = "conf", dst = "/etc/app/"}]', "entry 1 has an unknown key 'dst' (did you mean 'dest'?)", "each entry takes src, dest, mode and exclude"),
        ('files = [{src = "conf"}]', "entry 1 has no 'dest'", 'write files = [{src = "migrations/", dest = "/app/migrations/"}]'),
        ('files = ["conf"]', "entry 1 is 'conf', not a table", "write files = ["),
        ('files = [{src = "a", dest = "/a"}, {src = "../x", dest = "/x"}]', "entry 2: src '../x' leaves the project", "files come from inside the project"),
        ('files = [{src = "a", dest = "x/"}]', "entry 1: dest 'x/' is not an absolute path in the image", 'write dest = "/app/data/"'),
        ('files = [{src = "a", dest = "/a", mode = "rw"}]', "entry 1: mode 'rw' is not a file mode", 'write mode = "0644"'),
        ('files = [{src = "a", dest = "/a", exclude = 3}]', "entry 1: exclude 3 is not a list of globs", 'write exclude = ["*.pyc"'),
        ('files = {src = "a", dest = "/a"}', "expected a list of tables, got {'src': 'a', 'dest': '/a'}", "write files = [{"),
    ],
)
def test_a_bad_user_or_files_entry_says_what_is_wrong(line: str, says: str, hint: str, tmp_path: Path) -> None:
    err = config_error(tmp_path, f"{line}\n")
    key = line.split(" =")[0]
    assert err.message.startswith(f"{tmp_path / 'pyproject.toml'}:{line_of(tmp_path, line)}: [tool.pyimage] {key}: {says}"), err.message
    assert err.hint.startswith(hint), err.hint


@pytest.mark.parametrize(
    ("line", "value"),
    [("ports = [8000]", ("8000/tcp",)), ('ports = ["8000/TCP", "53/udp", 8000, "9/sctp"]', ("8000/tcp", "53/udp", "9/sctp")), ("ports = 443", ("443/tcp",)), ("ports = []", ())],
)
def test_ports_are_read_as_the_image_config_keys_them(line: str, value: tuple[str, ...], tmp_path: Path) -> None:
    assert load_config(project(tmp_path, line)).ports == value


@pytest.mark.parametrize("line", ["ports = [0]", "ports = [70000]", 'ports = ["80/http"]', 'ports = ["eighty"]', "ports = [true]", "ports = { web = 80 }"])
def test_a_port_that_is_none_is_refused_saying_what_a_port_is(line: str, tmp_path: Path) -> None:
    err = config_error(tmp_path, f"{line}\n")
    assert "[tool.pyimage] ports: " in err.message and ("is not a port (1..65535" in err.message or "expected a list of ports" in err.message), err.message
    assert err.hint == 'write ports = [8000] or ["8000/tcp", "53/udp"]'


@pytest.mark.parametrize(
    "line, key, value",
    [
        ('owner = "4294967294:0"', "owner", Owner(4294967294, 0)),
        ("owner = 1000", "owner", Owner(1000, 1000)),
        ('venv = "/srv/app/venv"', "venv", "/srv/app/venv"),
        ('venv = "/usr/local/venv"', "venv", "/usr/local/venv"),
        ("source-date-epoch = 253402300799", "source-date-epoch", 253402300799),
        ('env = { "JAVA.opts" = "x", _A_1 = 2 }', "env", {"JAVA.opts": "x", "_A_1": "2"}),
        ('user = "app:staff"', "user", "app:staff"),
        ('output = ["oci:/tmp/x:1.0", "docker-archive:a.tar:app:1"]', "output", ("oci:/tmp/x:1.0", "docker-archive:a.tar:app:1")),
    ],
)
def test_values_at_the_edge_of_their_range_are_accepted(line: str, key: str, value: Any, tmp_path: Path) -> None:
    cfg = load_config(project(tmp_path, f"{line}\n"))
    got = cfg.as_dict()[key]
    if key == "output":
        got = tuple(o.spec.replace(str(tmp_path) + "/", "") for o in got)
    assert got == value


def test_a_command_line_float_for_an_integer_is_refused(tmp_path: Path) -> None:
    err = config_error(tmp_path, "", {"max-layers": "3.9"})
    assert err.message == "command line: --set max-layers: expected integer 2..127, got '3.9'"


def test_a_pyproject_that_is_not_utf8_is_a_config_error_naming_the_line(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_bytes(b'[project]\nname = "demo"\ndescription = "caf\xe9"\n')
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert err.value.message == f"{tmp_path / 'pyproject.toml'}:3: not valid UTF-8 (byte 0xe9)"
