"""The errors a user can act on: one line of what is wrong, one line of how to fix it.

Anything else that escapes is a bug and gets a traceback (with ``--debug``).
"""

from __future__ import annotations

__all__ = ["PyimageError", "ConfigError", "BuildError", "RegistryError"]


class PyimageError(Exception):
    """A user-facing failure: ``message`` says what and where, ``hint`` says how to fix it."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "", details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details  # context shown above the error line (a backend's own last lines), never a traceback

    def __str__(self) -> str:
        return self.message


class ConfigError(PyimageError):
    """The configuration (pyproject.toml or a flag) is wrong; exit code 2."""

    exit_code = 2


class BuildError(PyimageError):
    """The inputs are valid but the image cannot be built from them; exit code 1."""

    exit_code = 1


class RegistryError(BuildError):
    """A registry refused or failed a step (pull, push, auth); names registry, repository, step."""
