"""pyimage: Python application images, layer by layer, without Docker."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0.dev0"
