"""The errors a user can act on: one line of what is wrong, one line of how to fix it.

Anything else that escapes is a bug and gets a traceback (with ``--debug``).
"""

from __future__ import annotations

import errno

__all__ = ["PyimageError", "ConfigError", "BuildError", "RegistryError", "OS_HINTS"]


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


# OS errors a user's machine or paths cause (not pyimage's bugs), with what to do about each; temp files are
# removed on the way out by the code that made them. ``cli.main`` shows one of these as an error naming the path;
# an output's writer turns any OSError on its path into a BuildError with the same hint.
OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space there (`pyimage cache prune --max-size 10GB` frees cache space) and build again",
    errno.EDQUOT: "the disk quota is used up: free space there (`pyimage cache prune`) and build again",
    errno.EFBIG: "the file system refuses a file this large: write the output or cache somewhere else",
    errno.EACCES: "check the permissions of that path, or choose another output or --cache-dir",
    errno.EPERM: "check the permissions of that path, or choose another output or --cache-dir",
    errno.EROFS: "that file system is read-only: choose another output path or --cache-dir",
    errno.ENOTDIR: "a file is where a directory is expected: move it away, or choose another path",
    errno.EISDIR: "a directory is where a file is expected: move it away, or choose another path",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter output path or --cache-dir",
    errno.ELOOP: "the path has a symlink loop: fix it, or choose another path",
    errno.EMLINK: "too many links in that directory: choose another path",
}
