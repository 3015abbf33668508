"""What the guest agent reads from runc and the system: runc failures as HRESULTs, runc stats as containerd's
cgroup metrics, whether the root is an initramfs (no pivot_root), and cleaning up the agent's parent cgroup.

`runc_errors(operation)` is the one place a RuncError becomes the HResultError the host sees: every runc call
of the agent runs inside it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from hcsshim.bridge import (
    E_FAIL,
    E_INVALIDARG,
    VMCOMPUTE_INVALID_STATE,
    VMCOMPUTE_SYSTEM_ALREADY_EXISTS,
    VMCOMPUTE_SYSTEM_ALREADY_STOPPED,
    VMCOMPUTE_SYSTEM_NOT_FOUND,
    HResultError,
)
from hcsshim.runc import RuncError


def runc_hresult(e: RuncError) -> int:
    """runc's failure as the Go GCS reports it (spec 8.2)."""
    text = e.reason
    if "does not exist" in text:
        return VMCOMPUTE_SYSTEM_NOT_FOUND
    if "invalid id" in text:
        return E_INVALIDARG
    if "not running" in text:
        return VMCOMPUTE_SYSTEM_ALREADY_STOPPED
    if "not stopped" in text or "running" in text:
        return VMCOMPUTE_INVALID_STATE
    if "exists" in text:
        return VMCOMPUTE_SYSTEM_ALREADY_EXISTS
    return E_FAIL


@contextlib.contextmanager
def runc_errors(operation: str) -> Iterator[None]:
    """A RuncError raised inside becomes HResultError(runc_hresult(e), "<operation>: <runc's reason>")."""
    try:
        yield
    except RuncError as e:
        raise HResultError(runc_hresult(e), f"{operation}: {e}") from e


def metrics(stats: dict[str, Any]) -> dict[str, Any]:
    """runc's stats (`runc events --stats`) in containerd's cgroup1 metrics JSON (snake_case keys)."""
    cpu = stats.get("cpu") or {}
    usage = cpu.get("usage") or {}
    throttling = cpu.get("throttling") or {}
    memory = stats.get("memory") or {}
    raw = memory.get("raw") or {}

    def entry(d: dict[str, Any] | None) -> dict[str, int]:
        d = d or {}
        return {"usage": d.get("usage", 0), "max": d.get("max", 0), "failcnt": d.get("failcnt", 0),
                "limit": d.get("limit", 0)}

    pids = stats.get("pids") or {}
    return {
        "pids": {"current": pids.get("current", 0), "limit": pids.get("limit", 0)},
        "cpu": {"usage": {"total": usage.get("total", 0), "kernel": usage.get("kernel", 0),
                          "user": usage.get("user", 0), "per_cpu": usage.get("percpu", [])},
                "throttling": {"periods": throttling.get("periods", 0),
                               "throttled_periods": throttling.get("throttledPeriods", 0),
                               "throttled_time": throttling.get("throttledTime", 0)}},
        "memory": {"cache": memory.get("cache", 0), "rss": raw.get("rss", 0),
                   "mapped_file": raw.get("mapped_file", 0), "pg_fault": raw.get("pgfault", 0),
                   "pg_maj_fault": raw.get("pgmajfault", 0), "usage": entry(memory.get("usage")),
                   "swap": entry(memory.get("swap")), "kernel": entry(memory.get("kernel"))},
    }


def root_is_ramfs() -> bool:
    """Whether / is an initramfs (rootfs/ramfs/tmpfs), where runc cannot pivot_root (spec 8.2)."""
    fstype = ""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[1] == "/":
                    fstype = parts[2]
    except OSError:
        return False
    return fstype in ("rootfs", "ramfs", "tmpfs")


def remove_cgroup_parent(parent: str) -> None:
    """Best effort: remove the (now empty) parent cgroup runc created for our containers."""
    base = "/sys/fs/cgroup"
    rel = parent.strip("/")
    if not rel:
        return
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in [*names, ""]:
        path = os.path.join(base, name, rel)
        with contextlib.suppress(OSError):
            os.rmdir(path)
