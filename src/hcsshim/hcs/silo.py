"""A process-isolated container's server silo, reached directly rather than through HCS (upstream's openSilo and
the System methods that use it): the job object HCS made for the container, opened by its well-known name
``\\Container_<id>`` (an implementation detail of HCS that upstream relies on too; opening it needs the rights of
SYSTEM), and what hcsshim does with it: set its CPU group affinities (upstream's SetCPUGroupAffinities).

HCS owns the silo: these functions open a transient handle, do their one thing and close it. They block (the
Windows backend runs them in a worker thread) and fail with hcsshim.hcs.win32's Win32Error naming the function.
"""

from __future__ import annotations

from collections.abc import Sequence

from hcsshim.hcs.backend import GroupAffinity
from hcsshim.hcs.win32.jobobject import JobObject

__all__ = ["SILO_NAME_FORMAT", "open_silo", "set_cpu_group_affinities", "silo_name"]

SILO_NAME_FORMAT = "\\Container_%s"


def silo_name(id: str) -> str:
    """The silo job object's name for container `id`: ``\\Container_<id>``."""
    return SILO_NAME_FORMAT % id


def open_silo(id: str) -> JobObject:
    """The silo of container `id`, opened with all access (NtOpenJobObject, as upstream); the caller closes it."""
    return JobObject.open(silo_name(id))


def set_cpu_group_affinities(id: str, affinities: Sequence[GroupAffinity]) -> None:
    """Restrict the silo's processes to these processor groups and masks (JobObjectGroupInformationEx): the kernel
    applies them to every process that joins the silo, and to those already in it."""
    with open_silo(id) as job:
        job.set_group_affinities([(a.group, a.mask) for a in affinities])
