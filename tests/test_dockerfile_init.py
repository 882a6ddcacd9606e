"""`pyimage init` in a project that has a Dockerfile: how its image runs (the last stage's ENTRYPOINT, CMD, EXPOSE,
ENV, USER, WORKDIR) is carried into [tool.pyimage]; what Docker sets while building is named and left out. The
Dockerfile is read as text, never run (a new-user trial's migrated app listened on 8000 instead of 8080, as root,
without its ENV)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from test_cli_errors import run

from pyimage.templates import read_dockerfile

DOCKERFILE = """\
# syntax=docker/dockerfile:1
FROM python:3.12-slim AS build
RUN pip wheel -w /wheels .
CMD ["not", "this", "stage"]

FROM python:3.12-slim
ARG VERSION=1
ENV APP_MODE=prod \\
    PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
ENV LEGACY value with spaces
ENV RELEASE=$VERSION
WORKDIR /srv/app
COPY --from=build /wheels /wheels
USER 1000
EXPOSE 8080 53/udp
cmd ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8080"]
"""


def test_the_last_stage_is_read_and_build_time_values_are_named(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    run_settings = read_dockerfile(tmp_path / "Dockerfile")
    assert run_settings is not None
    assert run_settings.command == ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8080"] and run_settings.entrypoint is None
    assert run_settings.ports == ["8080", "53/udp"] and run_settings.user == "1000" and run_settings.workdir == "/srv/app"
    assert run_settings.env == {"APP_MODE": "prod", "PYTHONUNBUFFERED": "1", "LEGACY": "value with spaces"}
    assert run_settings.skipped == ["ENV PATH", "ENV RELEASE"]
    (tmp_path / "Dockerfile").write_text('FROM x\nCMD python app.py --port $PORT\nENTRYPOINT ["tini", "--"]\n')
    shell = read_dockerfile(tmp_path / "Dockerfile")
    assert shell is not None and shell.entrypoint == ["tini", "--"] and shell.command is None  # ENTRYPOINT after CMD resets it, as Docker does
    assert read_dockerfile(tmp_path / "missing") is None


def test_init_of_an_app_with_a_dockerfile_writes_how_its_image_runs(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("from fastapi import FastAPI\napp = FastAPI()\n")
    (tmp_path / "requirements.txt").write_text("fastapi\nuvicorn\n")
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    done = run(["init", "--base", "python:3.12-slim"], tmp_path)
    assert done.returncode == 0, done.stderr
    settings = tomllib.loads((tmp_path / "pyproject.toml").read_text())["tool"]["pyimage"]
    assert settings["command"] == ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8080"]  # not the guessed 8000
    assert settings["ports"] == [8080, "53/udp"] and settings["user"] == "1000" and settings["workdir"] == "/srv/app"
    assert settings["env"] == {"APP_MODE": "prod", "PYTHONUNBUFFERED": "1", "LEGACY": "value with spaces"}
    assert "from the Dockerfile: EXPOSE, ENV, USER, WORKDIR" in done.stderr
    assert "note: not carried over from the Dockerfile (set while building, or for building): ENV PATH; ENV RELEASE" in done.stderr


def test_init_of_a_package_takes_the_dockerfiles_entrypoint_and_names_a_bare_cmd(tmp_path: Path) -> None:
    pyproject = '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n[project]\nname = "svc"\nversion = "1"\n\n[project.scripts]\nsvc = "svc:main"\n'
    (tmp_path / "pyproject.toml").write_text(pyproject)
    (tmp_path / "Dockerfile").write_text('FROM python:3.12-slim\nENTRYPOINT ["svc", "--log-json"]\nCMD ["serve"]\n')
    assert run(["init", "--base", "python:3.12-slim"], tmp_path).returncode == 0
    settings = tomllib.loads((tmp_path / "pyproject.toml").read_text())["tool"]["pyimage"]
    assert settings["entrypoint"] == ["svc", "--log-json"] and settings["command"] == ["serve"]
    (tmp_path / "pyproject.toml").write_text(pyproject)
    (tmp_path / "Dockerfile").write_text('FROM python:3.12-slim\nCMD ["gunicorn", "svc:app"]\n')
    done = run(["init", "--base", "python:3.12-slim"], tmp_path)
    settings = tomllib.loads((tmp_path / "pyproject.toml").read_text())["tool"]["pyimage"]
    assert "entrypoint" not in settings and "command" not in settings  # the console script runs, as before init
    assert 'note: the Dockerfile\'s CMD ["gunicorn", "svc:app"] is not carried over' in done.stderr
