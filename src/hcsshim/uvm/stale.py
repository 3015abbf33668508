"""Cleaning up after a utility VM whose owner died without closing it (a SIGKILLed shim).

`cleanup_stale(run_root, vm_id)` is what the shim's `delete` action runs: synchronous, fast when there is
nothing (one stat), idempotent. In order:

1. the QEMU named by ``<run dir>/qemu.pid`` (hcsshim.uvm.procfs.PidRecord) is SIGKILLed when it is still that
   process (same pid *and* start time: a recycled pid is left alone), and waited for briefly (QEMU also runs
   under a parent-death signal, so it is usually gone already);
2. everything mounted under the run dir (the shares' bind mounts) is lazily unmounted;
3. the run dir is removed, but only once nothing is mounted under it: removing a tree through a live bind
   mount would delete the host's files.

It returns the problems (empty when all is clean); it never raises for what it finds.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

from hcsshim import mount
from hcsshim.uvm import procfs

KILL_WAIT = 2.0  # seconds for a SIGKILLed QEMU to exit


def cleanup_stale(run_root: str, vm_id: str, *, kill_wait: float = KILL_WAIT) -> list[str]:
    """Frees what a dead owner left of VM vm_id under run_root (module docstring); the problems left."""
    if not vm_id or "/" in vm_id or vm_id in (".", ".."):
        return [f"clean up uvm {vm_id!r}: invalid utility VM id"]
    run_dir = os.path.join(run_root, vm_id)
    if not os.path.lexists(run_dir):
        return []
    problems = []
    record = procfs.PidRecord.read(run_dir)
    if record is not None and procfs.alive(record.pid, record.start_time):
        try:
            os.kill(record.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except OSError as exc:
            problems.append(f"clean up uvm {vm_id}: kill QEMU (pid {record.pid}): {exc.strerror}")
        deadline = time.monotonic() + kill_wait
        while procfs.alive(record.pid, record.start_time) and time.monotonic() < deadline:
            time.sleep(0.01)
        if procfs.alive(record.pid, record.start_time):
            problems.append(f"clean up uvm {vm_id}: QEMU (pid {record.pid}) still runs {kill_wait} s after SIGKILL")
    try:
        for point in mount.mounted_under(run_dir):
            mount.unmount(point, detach=True)
    except OSError as exc:
        problems.append(f"clean up uvm {vm_id}: unmount under {run_dir}: {exc}")
    left = mount.mounted_under(run_dir)
    if left:
        problems.append(f"clean up uvm {vm_id}: still mounted, {run_dir} kept: {', '.join(left)}")
        return problems
    try:
        shutil.rmtree(run_dir)
    except FileNotFoundError:
        pass
    except OSError as exc:
        problems.append(f"clean up uvm {vm_id}: remove {run_dir}: {exc}")
    return problems
