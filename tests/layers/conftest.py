"""Fixtures for the layer tests: real wheels from PyPI, downloaded once and cached by requirement."""

from __future__ import annotations

from wheels_fixture import real_wheels  # noqa: F401  (a session fixture, re-exported for tests/layers)
