"""A compute system's processor limits on the Linux backend: the cgroup its QEMU runs in.

HCS caps a utility VM's processors with ProcessorLimits (a modify request at
``VirtualMachine/ComputeTopology/Processor/Limits``): Limit, the share of the VM's processors it may use in
1/100000ths (100000: all of them), and Weight, its share against other VMs (1..10000, HCS's default 100). Here
they become CFS bandwidth and shares of a cgroup holding the QEMU process (all its threads), made on the first
limit: ``<cpu controller>/hcsshim/<system id>-<hash of its directory>`` (ids are unique per registry root only),
on cgroup v1 (cpu.cfs_quota_us over a 100 ms cpu.cfs_period_us,
cpu.shares = Weight * 1024 / 100) or v2 (cpu.max, cpu.weight = Weight, clamped to 1..10000). Reservation and
MaximumFrequencyMHz have no counterpart and are refused by the caller. `remove` deletes the cgroup once QEMU has
exited (the registry's cleanup does it for a dead owner).
"""

from __future__ import annotations

import contextlib
import hashlib
import os

__all__ = ["PERIOD_US", "apply", "path_of", "remove"]

ROOT = "/sys/fs/cgroup"
PERIOD_US = 100_000
FULL = 100_000  # ProcessorLimits.Limit for all of the VM's processors
DEFAULT_WEIGHT = 100


def _v2() -> bool:
    return os.path.exists(os.path.join(ROOT, "cgroup.controllers"))


def path_of(system_dir: str) -> str:
    """The cgroup directory of the system whose directory is `system_dir` (made or not)."""
    base = ROOT if _v2() else os.path.join(ROOT, "cpu")
    digest = hashlib.sha256(os.path.abspath(system_dir).encode()).hexdigest()[:8]
    return os.path.join(base, "hcsshim", f"{os.path.basename(system_dir)[:200]}-{digest}")


def _write(path: str, name: str, value: str) -> None:
    with open(os.path.join(path, name), "w") as f:
        f.write(value)


def apply(system_dir: str, pid: int, cpus: int, *, limit: int = 0, weight: int = 0) -> str:
    """Puts QEMU (pid) in the system's cgroup and sets the limit and weight asked for (0: unchanged); the cgroup's
    path. OSError (or ValueError for a value out of range) names what failed."""
    if not 0 <= limit <= FULL:
        raise ValueError(f"Limit {limit} is out of range 0..{FULL}")
    if not 0 <= weight <= 10000:
        raise ValueError(f"Weight {weight} is out of range 0..10000")
    path = path_of(system_dir)
    v2 = _v2()
    if v2:
        with contextlib.suppress(OSError):  # the cpu controller for our children (it may be on already)
            _write(os.path.dirname(path), "cgroup.subtree_control", "+cpu")
    os.makedirs(path, mode=0o755, exist_ok=True)
    _write(path, "cgroup.procs", str(pid))
    if limit:
        quota = max(1000, PERIOD_US * cpus * limit // FULL)
        if v2:
            _write(path, "cpu.max", "max" if limit == FULL else f"{quota} {PERIOD_US}")
        else:
            _write(path, "cpu.cfs_period_us", str(PERIOD_US))
            _write(path, "cpu.cfs_quota_us", "-1" if limit == FULL else str(quota))
    if weight:
        if v2:
            _write(path, "cpu.weight", str(max(1, weight)))
        else:
            _write(path, "cpu.shares", str(max(2, weight * 1024 // DEFAULT_WEIGHT)))
    return path


def remove(system_dir: str) -> list[str]:
    """Removes the system's cgroup (its QEMU has exited); the problems left ([] when there was none)."""
    path = path_of(system_dir)
    if not os.path.isdir(path):
        return []
    try:
        os.rmdir(path)
    except OSError as exc:
        return [f"remove cgroup {path}: {exc.strerror}"]
    return []
