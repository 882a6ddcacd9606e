"""pip's resolver failures in the user's terms: which package, required by whom, and what is available.

pip says "No matching distribution found" both for a typo and for a version that does not exist, and a
conflict ends in a bare ``ResolutionImpossible``; what a user needs is in the lines before (``Collecting X
(from P)``, ``from versions: …``, ``The conflict is caused by: …``). These functions read them out of pip's
output (pip is run without ``--quiet`` for that); each returns None when the output is not of its kind.
"""

from __future__ import annotations

import difflib
import os
import re
from configparser import ConfigParser
from pathlib import Path
from typing import Iterable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from pyimage.errors import BuildError

__all__ = ["conflict_error", "missing_error", "no_match", "python_error", "required_by", "available_versions", "did_you_mean"]

_NO_MATCH = re.compile(r"No matching distribution found for ([A-Za-z0-9][A-Za-z0-9._-]*)([^\s(]*)")
# "… the requirement six>=2099 (from app) (from versions: 1.16.0, 1.17.0)"; pip < 25 has no "(from app)" here.
_FROM_VERSIONS = re.compile(r"Could not find a version that satisfies the requirement (\S+?)(?: \(from ([^)]*)\))? \(from versions: ([^)]*)\)")
_WRONG_PYTHON = re.compile(r"Package '([^']+)' requires a different Python: (\S+) not in '([^']+)'")
_COLLECTING = re.compile(r"^\s*(?:Collecting|Processing|Downloading|Obtaining)\s+(\S+).*?\(from ([^)]+)\)\s*$", re.M)
_IGNORED_PYTHON = re.compile(r"Ignored the following versions that require a different python version: (.+)")

# Names people most often mistype, for "did you mean" without asking an index for its whole list.
_POPULAR = """requests numpy pandas scipy matplotlib django flask fastapi uvicorn gunicorn pydantic sqlalchemy
alembic psycopg2 psycopg2-binary psycopg pymysql redis celery boto3 botocore pyyaml jinja2 click typer rich attrs
certifi urllib3 idna charset-normalizer six python-dateutil pytz tzdata setuptools wheel pip packaging httpx
aiohttp beautifulsoup4 lxml pillow scikit-learn torch torchvision tensorflow keras transformers tokenizers tqdm
protobuf grpcio cryptography pyjwt bcrypt paramiko marshmallow werkzeug starlette orjson ujson simplejson
humanize arrow pendulum structlog loguru sentry-sdk prometheus-client opentelemetry-api openai anthropic
pytest mock coverage black ruff mypy isort flake8 toml tomli tomlkit jsonschema pyarrow polars duckdb
networkx sympy nltk spacy opencv-python xgboost lightgbm statsmodels seaborn plotly dash streamlit gradio
selenium playwright scrapy markdown pygments docutils sphinx mkdocs mercurial waitress whitenoise
djangorestframework channels daphne python-dotenv environs dynaconf pyzmq msgpack cffi pycparser cython
greenlet gevent eventlet websockets websocket-client requests-oauthlib oauthlib google-auth
google-cloud-storage azure-storage-blob kubernetes docker fabric invoke ansible psutil watchdog filelock
platformdirs appdirs colorama termcolor tabulate prettytable xlsxwriter openpyxl xlrd h5py netcdf4 numba
jax flax onnx onnxruntime sentencepiece safetensors huggingface-hub datasets accelerate""".split()


def no_match(output: str) -> tuple[str, str] | None:
    """(name, specifier text) of pip's "No matching distribution found for NAME SPEC"."""
    m = _NO_MATCH.search(output)
    return (m.group(1), m.group(2)) if m else None


def available_versions(output: str, name: str) -> list[str]:
    """The versions pip saw for ``name`` ("from versions: …"), oldest first."""
    found: set[str] = set()
    for req, _parent, versions in _FROM_VERSIONS.findall(output):
        if _name_of(req) == canonicalize_name(name) and versions.strip() != "none":
            found.update(v.strip() for v in versions.split(",") if v.strip())
    return sorted(found, key=_version_key)


def _version_key(text: str) -> tuple[int, object]:
    try:
        return (1, Version(text))
    except InvalidVersion:
        return (0, text)


def _name_of(requirement: str) -> str:
    base = requirement.rsplit("/", 1)[-1]
    if "/" in requirement or base.endswith((".whl", ".tar.gz", ".zip")):  # "./links/six-1.17.0-py3-none-any.whl"
        return canonicalize_name(re.split(r"-\d", base, maxsplit=1)[0])
    try:
        return canonicalize_name(Requirement(requirement).name)
    except InvalidRequirement:
        return canonicalize_name(re.split(r"[<>=!~ ;\[@]", requirement, maxsplit=1)[0])


def required_by(output: str, name: str) -> str:
    """"app==1.0" or "flask==3.0 ← app==1.0": who asked for ``name``, from pip's "Collecting X (from P)"."""
    parents: dict[str, str] = {}
    for req, parent in _COLLECTING.findall(output):
        parents.setdefault(_name_of(req), parent.strip())
    for req, parent, _versions in _FROM_VERSIONS.findall(output):
        if parent:
            parents.setdefault(_name_of(req), parent.strip())
    chain: list[str] = []
    current: str = canonicalize_name(name)
    while current in parents and len(chain) < 10:
        parent = parents[current]
        if "->" in parent:  # pip >= 25 writes the whole chain: "right->app==1.0"
            chain += [p.strip() for p in parent.split("->")]
            break
        if parent in chain:
            break
        chain.append(parent)
        current = _name_of(parent.split(",")[0])
    return " ← ".join(chain)


def _index_names(indexes: Iterable[str]) -> set[str]:
    """Project names listed by local ``file://`` indexes and find-links directories (cheap: a directory listing)."""
    names: set[str] = set()
    for location in indexes:
        path = Path(location[len("file://"):] if location.startswith("file://") else location)
        if not path.is_dir() or location.startswith(("http://", "https://")):
            continue
        for entry in path.iterdir():
            names.add(canonicalize_name(re.split(r"-\d", entry.name, maxsplit=1)[0]) if entry.is_file() else canonicalize_name(entry.name))
    return names


def _configured_locations() -> list[str]:
    values: list[str] = []
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
        values += os.environ.get(key, "").split()
    files = ["/etc/pip.conf", "/etc/xdg/pip/pip.conf", "~/.config/pip/pip.conf", "~/.pip/pip.conf", os.environ.get("PIP_CONFIG_FILE", "")]
    for name in files:
        path = Path(name).expanduser() if name else None
        if path is None or not path.is_file() or name == os.devnull:
            continue
        parser = ConfigParser()
        try:
            parser.read(path)
        except Exception:  # noqa: BLE001 - an unreadable pip.conf only costs the suggestion
            continue
        for section in parser.sections():
            for key in ("index-url", "extra-index-url", "find-links"):
                values += parser.get(section, key, fallback="").split()
    return values


def did_you_mean(name: str, known: Iterable[str] = ()) -> str | None:
    """A close, existing project name for a typo, from popular names, the caller's ``known`` names and the
    listings of local indexes; None when nothing is close."""
    wanted = canonicalize_name(name)
    pool = set(_POPULAR) | {canonicalize_name(k) for k in known} | _index_names(_configured_locations())
    pool.discard(wanted)
    close = difflib.get_close_matches(wanted, sorted(pool), n=1, cutoff=0.8)
    return close[0] if close else None


def missing_error(name: str, spec: str, output: str, target: str, known: Iterable[str] = ()) -> BuildError:
    """The error for a requirement no distribution satisfies: an unknown name, or no version matching ``spec``."""
    who = required_by(output, name)
    by = f" (required by {who})" if who else ""
    versions = available_versions(output, name)
    ignored = _IGNORED_PYTHON.search(output)
    if not versions and not ignored:
        suggestion = did_you_mean(name, known)
        return BuildError(
            f"no package named {name!r} on the configured indexes{by}" + (f"; did you mean {suggestion!r}?" if suggestion else ""),
            "fix the name in [project] dependencies (or the requirements file); if it is on a private index, add it to pip's index-url/extra-index-url/find-links",
        )
    shown = ", ".join(versions[-8:]) + (f" (and {len(versions) - 8} older)" if len(versions) > 8 else "") if versions else "none for this target"
    other_python = f"; versions for another Python: {_by_python(ignored.group(1))}" if ignored else ""
    return BuildError(
        f"no version of {name} satisfies {spec or 'the requirement'}{by} for {target}; available: {shown}{other_python}",
        f"relax the requirement on {name}, or pick a base whose Python the wanted version supports",
    )


def _by_python(listed: str) -> str:
    """pip's "6.0 Requires-Python >=3.12; 6.0.1 Requires-Python >=3.12; …" grouped by the Python each needs:
    "6.0 … 6.1.3 (8) need Python >=3.12" (a Django line listed 21 versions one by one)."""
    groups: dict[str, list[str]] = {}
    for item in listed.strip().rstrip(";").split("; "):
        version, _, spec = item.strip().partition(" Requires-Python ")
        if version and spec:
            groups.setdefault(spec.strip(), []).append(version.strip())
    if not groups:
        return listed.strip()
    parts = []
    for spec, versions in groups.items():
        ordered = sorted(versions, key=_version_key)
        shown = ordered[0] if len(ordered) == 1 else f"{ordered[0]} … {ordered[-1]} ({len(ordered)})"
        parts.append(f"{shown} {'needs' if len(ordered) == 1 else 'need'} Python {spec}")
    return "; ".join(parts)


def conflict_error(output: str) -> BuildError | None:
    """The error for pip's ResolutionImpossible: the requirements that conflict, as pip lists them."""
    if "ResolutionImpossible" not in output and "conflicting dependencies" not in output:
        return None
    lines: list[str] = []
    block = output.split("The conflict is caused by:", 1)
    if len(block) == 2:
        for line in block[1].splitlines()[1:] if block[1].startswith("\n") else block[1].splitlines():
            if not line.strip():
                if lines:
                    break
                continue
            if not line.startswith((" ", "\t")):
                break
            text = line.strip()
            depender = re.match(r"(\S+) \S+ depends on ", text)
            who = required_by(output, depender.group(1)) if depender else ""
            lines.append(f"{text} (required by {who})" if who else text)
    head = next((l.removeprefix("ERROR: ").strip() for l in output.splitlines() if l.startswith("ERROR: Cannot install")), "")
    detail = "; ".join(lines) if lines else head or "pip found no set of versions that satisfies every requirement"
    return BuildError(
        f"the dependencies conflict: {detail}",
        "change one of these requirements so they can agree (or pin the version that should win in a requirements file)",
    )


def python_error(output: str, target: str) -> BuildError | None:
    """The error for a dependency whose only fitting release needs another Python than the target's."""
    m = _WRONG_PYTHON.search(output)
    if m is None:
        return None
    name, _python, spec = m.groups()
    who = required_by(output, name)
    return BuildError(
        f"{name} requires Python {spec}" + (f" (required by {who})" if who else "") + f", but the target is {target}",
        f"require an older {name} that supports the target's Python, or pick a base whose Python satisfies {spec}",
    )
