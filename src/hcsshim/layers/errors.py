"""The layer cache's one error type: its message names the layer directory (or cache path) and the operation."""

from __future__ import annotations

__all__ = ["LayerError"]


class LayerError(Exception):
    """A layer cache, snapshot key or scratch operation failed; nothing half-made is left behind."""
