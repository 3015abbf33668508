"""A process-isolated container's server silo, reached directly rather than through HCS (upstream's openSilo and
the System methods that use it): the job object HCS made for the container, opened by its well-known name
``\\Container_<id>`` (an implementation detail of HCS that upstream relies on too; opening it needs the rights of
SYSTEM), and what hcsshim does with it: read its counters (upstream's statisticsInProc) and set its CPU group
affinities (upstream's SetCPUGroupAffinities).

HCS owns the silo: these functions open a transient handle, do their one thing and close it. They block (the
Windows backend runs them in a worker thread) and fail with hcsshim.hcs.win32's Win32Error naming the function.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from hcsshim.hcs.backend import GroupAffinity, SiloStatistics
from hcsshim.hcs.win32.jobobject import JobObject

__all__ = ["SILO_NAME_FORMAT", "open_silo", "set_cpu_group_affinities", "silo_name", "statistics"]

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


def statistics(id: str) -> SiloStatistics:
    """The silo's counters, as HCS would report them (upstream's statisticsInProc): memory, processor time and
    I/O from the job object's accounting, and the private working set summed over the silo's processes, which
    is cheaper than HCS's walk over every process of the host. The timestamp is taken first, as HCS takes it."""
    timestamp = time.time()
    with open_silo(id) as job:
        memory = job.memory_usage()
        processor = job.basic_accounting()
        storage = job.io_attribution()
        private_working_set = job.private_working_set()
    return SiloStatistics(
        timestamp=timestamp, memory_commit_bytes=int(memory.JobMemory),
        memory_commit_peak_bytes=int(memory.PeakJobMemoryUsed), kernel_time_100ns=int(processor.TotalKernelTime),
        user_time_100ns=int(processor.TotalUserTime), read_count=int(storage.ReadStats.IoCount),
        read_bytes=int(storage.ReadStats.TotalSize), write_count=int(storage.WriteStats.IoCount),
        write_bytes=int(storage.WriteStats.TotalSize), private_working_set_bytes=private_working_set)
