"""The ext4 package's exceptions: one hierarchy, messages in upstream's wording (`NAME: what went wrong`)."""

from __future__ import annotations


class Ext4Error(Exception):
    """A conversion error: the message names the file and what went wrong (upstream's wording)."""


class DiskFullError(Ext4Error):
    """The image would grow past the maximum disk size."""


class WriterStateError(Ext4Error):
    """A call on a writer that is closed or failed."""
