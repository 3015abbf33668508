"""The Linux backend's registry of compute systems: one directory per system under a root, which is how another
process finds, opens and lists the systems, and how what a dead owner left is cleaned up.

The root is ``$HCSSHIM_HCS_ROOT`` or /run/hcsshim/hcs unless the backend is given one (the shim gives each task
bundle its own). A system's directory, ``<root>/<id>`` (mode 0700), holds:

    system.json       the record: id, owner, runtime id, creation time, the creating process (pid and start time)
                      and ShouldTerminateOnLastHandleClosed
    document.json     the ComputeSystem document it was created from
    qemu.pid          QEMU's pid and start time (hcsshim.hcs.linux.procfs.PidRecord), once started
    qmp.sock          the owner's QMP monitor (the owner listens, QEMU dials)
    control.sock      QEMU's second monitor, for a process that opens the system
    hvsock/           the host ends of the HvSocket services (hcsshim.hcs.linux.hvsock)
    shares/           the Plan9 shares' bind mounts, exported to the guest by one virtio-9p device
    stopping          the ExitType of a stop someone asked for (hcsshim.hcs.linux.machine)
    qemu.log, and whatever the document names inside it (a console file)

A system exists from its record's creation until its directory is removed: by the owner when its last handle is
closed after the system stopped (or was terminated for ShouldTerminateOnLastHandleClosed), or by `cleanup_stale`
after the owner died. A system whose owner died and whose QEMU is not running is stale: enumeration leaves it out
and open fails with ErrComputeSystemDoesNotExist.

`cleanup_stale(root, id)` is what the shim's `delete` action runs: synchronous, fast when there is nothing (one
stat), idempotent. In order: the QEMU named by qemu.pid is SIGKILLed when it is still that process (same pid *and*
start time: a recycled pid is left alone) and waited for briefly; everything mounted under the directory (the
shares' bind mounts) is lazily unmounted; the directory is removed, but only once nothing is mounted under it:
removing a tree through a live bind mount would delete the host's files; and QEMU's cgroup, if it had one
(hcsshim.hcs.linux.cgroups), is removed. It returns the problems (empty when all is clean); it never raises for
what it finds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import uuid
from dataclasses import asdict, dataclass

from hcsshim import mount
from hcsshim.hcs.linux import cgroups, procfs

__all__ = ["DEFAULT_ROOT", "ENV_ROOT", "SystemRecord", "cleanup_stale", "default_root", "list_ids", "read_record",
           "remove", "system_dir", "valid_id"]

DEFAULT_ROOT = "/run/hcsshim/hcs"
ENV_ROOT = "HCSSHIM_HCS_ROOT"
RECORD = "system.json"
DOCUMENT = "document.json"
KILL_WAIT = 2.0  # seconds for a SIGKILLed QEMU to exit


def default_root() -> str:
    return os.environ.get(ENV_ROOT) or DEFAULT_ROOT


def valid_id(id: str) -> bool:
    return bool(id) and "/" not in id and "\0" not in id and id not in (".", "..") and len(id) <= 200


def system_dir(root: str, id: str) -> str:
    """The directory of system `id`; ValueError for an id that cannot name one."""
    if not valid_id(id):
        raise ValueError(f"invalid compute system id {id!r}")
    return os.path.join(root, id)


@dataclass
class SystemRecord:
    """system.json (module docstring)."""

    id: str
    owner: str
    runtime_id: str
    created: float
    owner_pid: int
    owner_start: int
    terminate_on_last_handle_closed: bool

    @classmethod
    def new(cls, id: str, owner: str, terminate_on_last_handle_closed: bool) -> SystemRecord:
        me = os.getpid()
        return cls(id, owner, str(uuid.uuid4()), time.time(), me, procfs.start_time(me) or 0,
                   terminate_on_last_handle_closed)

    def write(self, directory: str) -> None:
        tmp = os.path.join(directory, f".{RECORD}.tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(self), f)
        os.replace(tmp, os.path.join(directory, RECORD))

    def owner_alive(self) -> bool:
        return procfs.alive(self.owner_pid, self.owner_start)


def read_record(root: str, id: str) -> SystemRecord | None:
    """The record of system `id`; None when there is none (or it does not parse: a create cut short)."""
    try:
        with open(os.path.join(system_dir(root, id), RECORD)) as f:
            data = json.load(f)
        return SystemRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def qemu_running(directory: str) -> procfs.PidRecord | None:
    """QEMU's record when that QEMU still runs."""
    record = procfs.PidRecord.read(directory)
    return record if record is not None and procfs.alive(record.pid, record.start_time) else None


def is_stale(root: str, record: SystemRecord) -> bool:
    """Its owner is gone and so is its QEMU (or it never started)."""
    return not record.owner_alive() and qemu_running(system_dir(root, record.id)) is None


CREATE_GRACE = 10.0  # seconds a directory without a record is taken for a create in progress, not a dead one


def young(directory: str) -> bool:
    """The directory was made less than CREATE_GRACE seconds ago."""
    try:
        return time.time() - os.stat(directory).st_mtime < CREATE_GRACE
    except OSError:
        return False


def list_ids(root: str) -> list[str]:
    """The ids of the systems under `root` that have a record, stale ones included, sorted."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return sorted(n for n in names if valid_id(n) and os.path.isfile(os.path.join(root, n, RECORD)))


def remove(directory: str) -> list[str]:
    """Unmounts what is left under a system's directory and removes it; the problems left."""
    problems = []
    try:
        for point in mount.mounted_under(directory):
            mount.unmount(point, detach=True)
    except OSError as exc:
        problems.append(f"unmount under {directory}: {exc}")
    left = mount.mounted_under(directory)
    if left:
        return [*problems, f"still mounted, {directory} kept: {', '.join(left)}"]
    try:
        shutil.rmtree(directory)
    except FileNotFoundError:
        pass
    except OSError as exc:
        problems.append(f"remove {directory}: {exc}")
    return problems


def cleanup_stale(root: str, id: str, *, kill_wait: float = KILL_WAIT) -> list[str]:
    """Frees what a dead owner left of system `id` under `root` (module docstring); the problems left."""
    if not valid_id(id):
        return [f"clean up compute system {id!r}: invalid compute system id"]
    directory = os.path.join(root, id)
    if not os.path.lexists(directory):
        return []
    problems = []
    record = procfs.PidRecord.read(directory)
    if record is not None and procfs.alive(record.pid, record.start_time):
        try:
            os.kill(record.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except OSError as exc:
            problems.append(f"clean up compute system {id}: kill QEMU (pid {record.pid}): {exc.strerror}")
        deadline = time.monotonic() + kill_wait
        while procfs.alive(record.pid, record.start_time) and time.monotonic() < deadline:
            time.sleep(0.01)
        if procfs.alive(record.pid, record.start_time):
            problems.append(f"clean up compute system {id}: QEMU (pid {record.pid}) still runs {kill_wait} s after "
                            "SIGKILL")
    left = [*remove(directory), *cgroups.remove(directory)]
    return [*problems, *(f"clean up compute system {id}: {p}" for p in left)]
