"""The C library through ctypes, loaded once on first use: prctl, mount and umount2 have no os-module wrappers.

Standard library only, and cheap to import (ctypes itself is loaded on the first call, not here).
"""

from __future__ import annotations

_libc = None


def libc():  # -> ctypes.CDLL, untyped so that importing this module does not import ctypes
    """The process's libc (dlopen(NULL)), with errno kept for ctypes.get_errno()."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def errno() -> int:
    """errno of the last libc() call."""
    import ctypes

    return ctypes.get_errno()
