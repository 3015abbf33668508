"""OOM notifications of a container (cgroup v1): an eventfd registered on the memory cgroup's oom_control.

The kernel signals the eventfd each time the cgroup hits its memory limit and the OOM killer acts; the watcher
reads it on the event loop and calls back (the task publishes `/tasks/oom`). No process is spawned for it.
States: WATCHING -> CLOSED (close() is idempotent; a cgroup that goes away closes it too).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

log = logging.getLogger("hcsshim.shim.oom")

MEMORY_ROOT = "/sys/fs/cgroup/memory"


def memory_cgroup_of(pid: int) -> str | None:
    """The cgroup v1 memory directory of a process, or None (cgroup v2, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if "memory" in controllers.split(","):
                    full = os.path.join(MEMORY_ROOT, path.lstrip("/"))
                    return full if os.path.isdir(full) else None
    except (OSError, ValueError):
        return None
    return None


class OOMWatcher:
    def __init__(self, cgroup: str, on_oom: Callable[[], None]) -> None:
        self.cgroup = cgroup
        self._on_oom = on_oom
        self._loop = asyncio.get_running_loop()
        self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            ofd = os.open(os.path.join(cgroup, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
            try:
                with open(os.path.join(cgroup, "cgroup.event_control"), "w") as f:
                    f.write(f"{self._efd} {ofd}")
            finally:
                os.close(ofd)
        except BaseException:
            os.close(self._efd)
            raise
        self._loop.add_reader(self._efd, self._ready)
        self.closed = False

    @classmethod
    def for_pid(cls, pid: int, on_oom: Callable[[], None]) -> OOMWatcher | None:
        cgroup = memory_cgroup_of(pid)
        if cgroup is None:
            return None
        try:
            return cls(cgroup, on_oom)
        except OSError as exc:
            log.warning("oom notifications for %s: %s", cgroup, exc)
            return None

    def _ready(self) -> None:
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        if not os.path.isdir(self.cgroup):  # the cgroup was removed: the kernel signals that too
            self.close()
            return
        self._on_oom()

    def close(self) -> None:
        if not getattr(self, "closed", True):
            self.closed = True
            self._loop.remove_reader(self._efd)
            os.close(self._efd)
