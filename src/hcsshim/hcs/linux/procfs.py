"""What /proc says about a utility VM's QEMU process, and the record of it a VM leaves in its run dir.

* `start_time(pid)`: field 22 of /proc/<pid>/stat (clock ticks after boot): with the pid it names one process
  for the life of the host, so a recycled pid is never mistaken for our QEMU;
* `VMStats` / `stats(pid)`: QEMU's CPU time (user + system of all its threads) and memory (RSS as the working
  set, PSS from smaps_rollup when readable), what upstream reports as VirtualMachineStatistics;
* `PidRecord`: ``<run dir>/qemu.pid``, QEMU's pid and start time as JSON, written when QEMU starts, so that
  `hcsshim.hcs.linux.registry.cleanup_stale` can kill it after its owner died.

Synchronous and cheap: a few small reads of /proc.
"""

from __future__ import annotations

import contextlib
import json
import os

PID_FILE = "qemu.pid"
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (field 3 on), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """The process's start time (field 22, clock ticks since boot), None when it does not exist."""
    fields = _stat_fields(pid)
    return int(fields[22 - 3]) if fields else None


def alive(pid: int, started: int) -> bool:
    """Whether the process pid that started at `started` still runs (a zombie has finished running)."""
    fields = _stat_fields(pid)
    return bool(fields) and int(fields[22 - 3]) == started and fields[0] not in ("Z", "X")


class VMStats:
    """A utility VM's statistics, from its QEMU process (upstream: VirtualMachineStatistics)."""

    __slots__ = ("peak_bytes", "pss_bytes", "system_ns", "total_runtime_ns", "user_ns", "working_set_bytes")

    def __init__(self, total_runtime_ns: int, working_set_bytes: int, pss_bytes: int | None, *, user_ns: int = 0,
                 system_ns: int = 0, peak_bytes: int = 0) -> None:
        self.total_runtime_ns = total_runtime_ns  # CPU time, user + system (Processor.TotalRuntimeNS)
        self.user_ns = user_ns
        self.system_ns = system_ns
        self.working_set_bytes = working_set_bytes  # RSS (Memory.WorkingSetBytes)
        self.peak_bytes = peak_bytes  # the peak RSS (VmHWM)
        self.pss_bytes = pss_bytes  # proportional set size; None when smaps_rollup is not readable

    @property
    def total_runtime_100ns(self) -> int:
        """The CPU time in HCS's unit (Statistics.Processor.TotalRuntime100ns)."""
        return self.total_runtime_ns // 100

    def __repr__(self) -> str:
        return (f"VMStats(cpu {self.total_runtime_ns / 1e9:.2f} s, rss {self.working_set_bytes >> 20} MiB, "
                f"pss {'?' if self.pss_bytes is None else self.pss_bytes >> 20} MiB)")


def stats(pid: int) -> VMStats:
    """QEMU's CPU time and memory; OSError (ProcessLookupError) when the process is gone."""
    fields = _stat_fields(pid)
    if not fields:
        raise ProcessLookupError(f"/proc/{pid}: no such process")
    utime, stime = int(fields[14 - 3]), int(fields[15 - 3])
    with open(f"/proc/{pid}/statm") as f:
        rss_pages = int(f.read().split()[1])
    pss, peak = None, 0
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
                break
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    ns = 1_000_000_000 // _TICKS
    return VMStats((utime + stime) * ns, rss_pages * _PAGE, pss, user_ns=utime * ns, system_ns=stime * ns,
                   peak_bytes=peak)


def started_at(pid: int) -> float | None:
    """When process pid started, as a Unix time (None when it is gone)."""
    ticks = start_time(pid)
    if ticks is None:
        return None
    try:
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None
    return btime + ticks / _TICKS


class PidRecord:
    """QEMU's pid and start time, as kept in <run dir>/qemu.pid."""

    __slots__ = ("pid", "start_time")

    def __init__(self, pid: int, start_time: int) -> None:
        self.pid = pid
        self.start_time = start_time

    def write(self, run_dir: str) -> None:
        """Atomically (a crash leaves the old file or the new one, never half of one)."""
        path = os.path.join(run_dir, PID_FILE)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"pid": self.pid, "start_time": self.start_time}, f)
        os.replace(tmp, path)

    @classmethod
    def read(cls, run_dir: str) -> PidRecord | None:
        """The record in run_dir; None when there is none or it does not parse (QEMU never started)."""
        try:
            with open(os.path.join(run_dir, PID_FILE)) as f:
                data = json.load(f)
            return cls(int(data["pid"]), int(data["start_time"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def __repr__(self) -> str:
        return f"PidRecord(pid {self.pid}, started {self.start_time})"
