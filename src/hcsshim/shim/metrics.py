"""Container statistics: runc's `events --stats` data turned into containerd's cgroups v1 `Metrics` message.

`ctr task metrics` and the CRI plugin read `io.containerd.cgroups.v1.Metrics` out of the Stats Any; the field
mapping follows containerd's runc shim (memory.stat names for the raw memory counters).
"""

from __future__ import annotations

from typing import Any

from hcsshim.api.containerd.cgroups.v1 import metrics_pb2 as m

_RAW_MEMORY = {
    "cache": "cache", "rss": "rss", "rss_huge": "rss_huge", "mapped_file": "mapped_file", "dirty": "dirty",
    "writeback": "writeback", "pgpgin": "pg_pg_in", "pgpgout": "pg_pg_out", "pgfault": "pg_fault",
    "pgmajfault": "pg_maj_fault", "inactive_anon": "inactive_anon", "active_anon": "active_anon",
    "inactive_file": "inactive_file", "active_file": "active_file", "unevictable": "unevictable",
    "hierarchical_memory_limit": "hierarchical_memory_limit",
    "hierarchical_memsw_limit": "hierarchical_swap_limit",
}
_RAW_MEMORY.update({"total_" + k: "total_" + v for k, v in list(_RAW_MEMORY.items())
                    if not k.startswith("hierarchical")})
_BLKIO = {
    "ioServiceBytesRecursive": "io_service_bytes_recursive", "ioServicedRecursive": "io_serviced_recursive",
    "ioQueueRecursive": "io_queued_recursive", "ioServiceTimeRecursive": "io_service_time_recursive",
    "ioWaitTimeRecursive": "io_wait_time_recursive", "ioMergedRecursive": "io_merged_recursive",
    "ioTimeRecursive": "io_time_recursive", "sectorsRecursive": "sectors_recursive",
}


def _u(value: Any) -> int:
    return int(value) if isinstance(value, int) and value >= 0 else 0


def _entry(data: dict | None) -> m.MemoryEntry:
    data = data or {}
    return m.MemoryEntry(limit=_u(data.get("limit")), usage=_u(data.get("usage")), max=_u(data.get("max")),
                         failcnt=_u(data.get("failcnt")))


def metrics_from_runc(data: dict) -> m.Metrics:
    """Builds Metrics from the `data` object of a runc stats event."""
    out = m.Metrics()
    pids = data.get("pids") or {}
    out.pids.CopyFrom(m.PidsStat(current=_u(pids.get("current")), limit=_u(pids.get("limit"))))
    cpu = data.get("cpu") or {}
    usage = cpu.get("usage") or {}
    throttling = cpu.get("throttling") or {}
    out.cpu.CopyFrom(m.CPUStat(
        usage=m.CPUUsage(total=_u(usage.get("total")), kernel=_u(usage.get("kernel")),
                         user=_u(usage.get("user")), per_cpu=[_u(v) for v in usage.get("percpu") or []]),
        throttling=m.Throttle(periods=_u(throttling.get("periods")),
                              throttled_periods=_u(throttling.get("throttled_periods")),
                              throttled_time=_u(throttling.get("throttled_time")))))
    memory = data.get("memory") or {}
    raw = memory.get("raw") or {}
    mem = m.MemoryStat(**{field: _u(raw.get(key)) for key, field in _RAW_MEMORY.items()})
    mem.usage.CopyFrom(_entry(memory.get("usage")))
    mem.swap.CopyFrom(_entry(memory.get("swap")))
    mem.kernel.CopyFrom(_entry(memory.get("kernel")))
    mem.kernel_tcp.CopyFrom(_entry(memory.get("kernelTCP")))
    out.memory.CopyFrom(mem)
    blkio = data.get("blkio") or {}
    for key, field in _BLKIO.items():
        entries = getattr(out.blkio, field)
        for e in blkio.get(key) or []:
            entries.add(op=str(e.get("op", "")), major=_u(e.get("major")), minor=_u(e.get("minor")),
                        value=_u(e.get("value")))
    for size, h in sorted((data.get("hugetlb") or {}).items()):
        out.hugetlb.add(pagesize=size, usage=_u(h.get("usage")), max=_u(h.get("max")),
                        failcnt=_u(h.get("failcnt")))
    return out
