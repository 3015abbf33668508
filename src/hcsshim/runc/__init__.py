"""Async wrapper of the runc CLI (`Runc`) and the child reaper it runs processes with (`Reaper`).

Standard library only: the guest agent uses this package inside the utility VM.
"""

from hcsshim.runc.reaper import (
    DEVNULL,
    PIPE,
    Child,
    Completed,
    PidfdWaiter,
    Reaper,
    ReaperClosed,
    exit_status,
)
from hcsshim.runc.runc import Runc, RuncError, RuncNotFound

__all__ = [
    "DEVNULL",
    "PIPE",
    "Child",
    "Completed",
    "PidfdWaiter",
    "Reaper",
    "ReaperClosed",
    "Runc",
    "RuncError",
    "RuncNotFound",
    "exit_status",
]
