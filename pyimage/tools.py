"""Running the tools pyimage drives (pip, uv, the PEP 517 build backend, an interpreter's ``venv``, ``uv python
find``, a docker credential helper, ``podman image inspect``/``tag``): one owner for the environment they get, their captured output, and how their failures reach the user.

- The environment (``environment``): the user's whole environment passes, because it *is* their configuration of
  those tools (pip.conf and ``PIP_*``, ``UV_*``, proxies, certificate bundles, ``HOME``/``XDG_*`` for config
  files, keyrings and netrc, ``PATH``, and the compiler variables an sdist build reads: ``CC``, ``CFLAGS``,
  ``PKG_CONFIG_PATH``); pyimage only adds what keeps a captured run quiet and non-interactive (``_QUIET``).
- A non-zero exit is one line (``Ran.error``): what pyimage was doing, which tool, and the meaningful tail of
  what it said (its last ``ERROR:``/``error:`` line, else its last line), with a hint.
- A tool that is not there is a ``BuildError`` naming it, never a ``FileNotFoundError`` traceback.
- Ctrl-C (or any exception while waiting) ends the child's whole process group (a PEP 517 build's compiler,
  pip's build subprocesses), so nothing keeps running after pyimage has stopped.
- Credentials never reach a message: ``user:password@`` in URLs and the values of credential variables (and
  passwords in the URLs of the argv or the environment) are masked in everything ``Ran`` shows.

A leaf: it imports only ``errors`` (so ``oci/`` may use it). ``podman load`` stays in ``oci/engine.py``: it streams
an archive into the tool's stdin, which ``run`` does not do.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyimage.errors import BuildError

__all__ = ["Ran", "environment", "redact", "run", "tail"]

# What a captured run needs that the user's environment may not say: no progress bars, no prompts (no terminal
# is there to answer one; a prompt would hang the build), no version nag. Applied over the user's values.
# COLUMNS: both wrap their messages at the terminal's width, and the one-line error is the tool's last line: in
# a 60-column terminal uv's "…we can conclude that your requirements are unsatisfiable." came out as its last
# fragment. Captured output has no terminal, so no wrapping.
_QUIET: dict[str, dict[str, str]] = {
    "pip": {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PIP_PROGRESS_BAR": "off", "COLUMNS": "10000"},
    "uv": {"UV_NO_PROGRESS": "1", "NO_COLOR": "1", "COLUMNS": "10000"},
}
_ALWAYS = {"GIT_TERMINAL_PROMPT": "0"}  # a backend reading VCS metadata (setuptools-scm) must not ask for a password

_KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL for a process group that is being stopped
_TAIL_MAX = 300  # characters of a tool's last words in a one-line message

# Variables whose value is a secret wherever it shows up (PIP_PASSWORD-style, UV_INDEX_X_PASSWORD, tokens).
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|API_?KEY|_AUTH\b", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^\s/@:]*)(?::(?P<password>[^\s/@]*))?@")
_MIN_SECRET = 4  # shorter values ("1", "yes") would mask ordinary words


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the password of every ``scheme://user:password@`` masked (a lone user part is a token, as
    pip treats it: masked whole) and each of ``secrets`` (plain and URL-quoted) replaced by ``****``."""
    for secret in sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True):
        for form in {secret, urllib.parse.quote(secret, safe="")}:
            text = text.replace(form, "****")

    def mask(m: re.Match[str]) -> str:
        if m.group("password") is not None:
            return f"{m.group('scheme')}{m.group('user')}:****@"
        return f"{m.group('scheme')}****@"

    return _URL_USERINFO.sub(mask, text)


def _secrets(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, ...]:
    """The secrets a run can echo: credential variables' values and the passwords of URLs in argv and env."""
    found = [v for k, v in env.items() if _SECRET_NAME.search(k) and v]
    for value in (*argv, *env.values()):
        for m in _URL_USERINFO.finditer(value):
            found.append(urllib.parse.unquote(m.group("password") or m.group("user") or ""))
    return tuple(sorted({s for s in found if len(s) >= _MIN_SECRET}))


def environment(tool: str, extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment ``tool`` runs with: ``base`` (the user's, by default) as it is, then ``_QUIET`` for that
    tool, then ``extra`` (the caller's: ``SOURCE_DATE_EPOCH``, a build environment's ``PATH``, uv's index flags)."""
    env = dict(os.environ if base is None else base)
    env.update(_ALWAYS)
    env.update(_QUIET.get(tool, {}))
    env.update(extra or {})
    return env


_BOXED = re.compile(r"\[\d+ lines? of output\]\n(.*?)\n\s*\[end of output\]", re.S)  # pip's frame around a subprocess's words


def tail(output: str) -> str:
    """The meaningful last words of a tool: the last line of the last subprocess output it quotes (pip boxes a
    build backend's as "[N lines of output]": its exception is the cause, pip's own "error:" after it is not),
    else its last ``ERROR:``/``error:``/``fatal:`` line (prefix dropped), else its last line that is not a
    warning or a hint; one line, at most ``_TAIL_MAX`` characters."""
    for block in reversed(_BOXED.findall(output)):
        quoted = [l.strip() for l in block.splitlines() if l.strip()]
        if quoted:
            return _one_line(quoted[-1])
    lines = [l.strip() for l in output.splitlines() if l.strip()]
    lines = [l for l in lines if not l.lower().startswith(("warning", "hint:", "help:", "note:"))] or lines
    errors = [l for l in lines if re.match(r"(?i)(error|fatal):", l)]
    last = errors[-1] if errors else (lines[-1] if lines else "")
    return _one_line(re.sub(r"(?i)^(error|fatal):\s*", "", last))


def _one_line(line: str) -> str:
    return line if len(line) <= _TAIL_MAX else line[: _TAIL_MAX - 1] + "…"


@dataclass(frozen=True)
class Ran:
    """A finished run. ``stdout`` is the tool's data as it wrote it (a report, a path, an export); ``stderr`` and
    everything meant for a message (``output``, ``said``, ``error``) are redacted."""

    tool: str
    doing: str
    argv: tuple[str, ...] = field(repr=False)
    returncode: int
    stdout: str = field(repr=False)
    stderr: str
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def output(self) -> str:
        """Both streams, redacted, for the callers that read a tool's failure in the user's terms."""
        return redact(self.stdout, self.secrets) + "\n" + self.stderr

    @property
    def said(self) -> str:
        """The tool's meaningful last words (``tail`` of stderr, else of stdout)."""
        return tail(self.stderr) or tail(redact(self.stdout, self.secrets)) or f"exit status {self.returncode}, no message"

    def error(self, hint: str, message: str | None = None, said: str | None = None) -> BuildError:
        """One line: ``message`` (default "<doing>: <tool> failed") and what the tool said, with ``hint``."""
        head = message or f"{self.doing}: {self.tool} failed"
        return BuildError(f"{head}: {redact(said, self.secrets) if said is not None else self.said}", hint)


def run(
    argv: Sequence[str | Path],
    *,
    tool: str,
    doing: str,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float | None = None,
    missing_hint: str | None = None,
) -> Ran:
    """Runs ``argv`` (``tool`` names it in messages; ``doing`` says what for, "installing the build
    requirements") with output captured as text and the environment of ``environment(tool, env, base_env)``.

    Returns the ``Ran`` whatever the exit status (callers decide what a failure means; ``Ran.error`` is the
    usual one). Raises ``BuildError`` when the executable cannot be started or ``timeout`` passes; on Ctrl-C
    the child's process group is ended before ``KeyboardInterrupt`` goes on.
    """
    args = [str(a) for a in argv]
    full_env = environment(tool, env, base_env)
    secrets = _secrets(args, full_env)
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: ended as one (below), and no terminal to prompt on
        )
    except OSError as exc:
        what = "is not installed (or not on PATH)" if isinstance(exc, FileNotFoundError) else f"cannot be started ({exc.strerror or exc})"
        raise BuildError(f"{doing}: {tool} {what}: {redact(args[0], secrets)}", missing_hint or f"install {tool}, or put it on PATH") from None
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _end_group(proc)
        raise BuildError(f"{doing}: {tool} did not finish within {timeout:g} s", f"check that {tool} can reach its index (network, proxy), then build again") from None
    except BaseException:  # Ctrl-C above all: the tool and its children must not outlive pyimage
        _end_group(proc)
        raise
    return Ran(tool, doing, tuple(args), proc.returncode, stdout, redact(stderr, secrets), secrets)


def _end_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to the child's process group, SIGKILL after ``_KILL_GRACE`` seconds; reaped either way."""
    for sig, wait in ((signal.SIGTERM, _KILL_GRACE), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.communicate(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
        except (OSError, ValueError):
            break
    proc.wait()
