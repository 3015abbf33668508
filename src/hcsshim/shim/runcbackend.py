"""The runc backend: process-isolated containers on the host, created and driven with the runc CLI.

`RuncSandbox` is the host itself: every Create becomes a `RuncContainer` (the snapshot mounted at
`<bundle>/rootfs`, the client's stdio opened, `runc create`), independent of the shim's other tasks.
`RuncProcess` is the init or an exec: its stdio is a `ProcessIO` (pipes or a pty between the client's FIFOs and
the process), its exit comes from the shim's child reaper (`Reaper.watch`, which also holds exits reported before
anyone watched them; the loop time before runc ran guards against a recycled pid) and goes to the task's one exit
path. OOM kills of the container's memory cgroup are published as `/tasks/oom`.

runc failures become ttrpc errors here and only here (`_runc`): UNKNOWN naming the operation and the task, or
ProcessGone for a kill of a process that has already finished.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from hcsshim import mount as mounts
from hcsshim.api.containerd.events import task_pb2 as ev
from hcsshim.runc import RuncError
from hcsshim.shim.backend import ContainerBackend, ExitCallback, ProcessBackend, ProcessGone, Sandbox
from hcsshim.shim.metrics import metrics_from_runc
from hcsshim.shim.oom import OOMWatcher
from hcsshim.shim.stdio import ProcessIO, StdioError, StdioPaths
from hcsshim.ttrpc import errors

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from hcsshim.api.containerd.task.v2 import shim_pb2 as api
    from hcsshim.runc import Reaper, Runc
    from hcsshim.shim.task import Host

log = logging.getLogger("hcsshim.shim.runc")

T = TypeVar("T")


async def _runc(op: str, task_id: str, call: Awaitable[T]) -> T:
    """Awaits a runc call; a RuncError becomes an UNKNOWN ttrpc error naming the operation and task."""
    try:
        return await call
    except RuncError as exc:
        raise errors.TtrpcError(errors.Code.UNKNOWN, f"{op} task {task_id}: {exc}") from None


def _gone(exc: RuncError) -> bool:
    text = str(exc)
    return "not running" in text or "does not exist" in text


class RuncSandbox(Sandbox):
    """The host as the sandbox of process-isolated containers."""

    def __init__(self, host: Host, runc: Runc, reaper: Reaper) -> None:
        self.host = host
        self.runc = runc
        self.reaper = reaper

    async def create_container(self, req: api.CreateTaskRequest, spec: dict, paths: StdioPaths,
                               on_init_exit: ExitCallback) -> ContainerBackend:
        container = RuncContainer(self, req.id, req.bundle, spec, list(req.rootfs), paths, on_init_exit)
        try:
            await container.create()
        except BaseException:
            await container.undo_create()
            raise
        return container


class RuncProcess(ProcessBackend):
    """The init or an exec of a runc container."""

    def __init__(self, container: RuncContainer, exec_id: str, paths: StdioPaths, spec: dict | None,
                 on_exit: ExitCallback) -> None:
        self.container = container
        self.exec_id = exec_id
        self.paths = paths
        self.spec = spec
        self.on_exit = on_exit
        self.io: ProcessIO | None = None
        self.pid = 0

    @property
    def name(self) -> str:
        return f"task {self.container.id}" + (f" exec {self.exec_id}" if self.exec_id else "")

    def watch(self, since: float) -> None:
        """Routes the reaper's report for self.pid to on_exit."""
        fut = self.container.sandbox.reaper.watch(self.pid, since=since)
        fut.add_done_callback(lambda f: None if f.cancelled() else self.on_exit(f.result()))

    def open_io(self, op: str) -> ProcessIO:
        try:
            self.io = ProcessIO.open(self.paths)
        except StdioError as exc:
            raise errors.invalid_argument(f"{op} {self.name}: {exc}") from None
        return self.io

    async def start(self) -> int:
        c = self.container
        if not self.exec_id:
            await _runc("start", c.id, c.sandbox.runc.start(c.id))
            return self.pid
        io = self.open_io("start")
        pid_file = os.path.join(c.bundle, f"{self.exec_id}.pid")
        since = asyncio.get_running_loop().time()
        try:
            self.pid = await _runc(f"exec {self.exec_id} in", c.id, run_with_console(io, c.sandbox.runc.exec(
                c.id, self.spec or {}, pid_file=pid_file, console_socket=io.console_socket,
                stdin=io.child_fds[0], stdout=io.child_fds[1], stderr=io.child_fds[2], detach=True)))
        except BaseException:
            io.close()
            self.io = None
            raise
        finally:
            _remove(pid_file)
        io.started()
        self.watch(since)
        return self.pid

    async def kill(self, signal: int, all_: bool) -> None:
        if self.exec_id:
            try:
                os.kill(self.pid, signal)
            except ProcessLookupError:
                raise ProcessGone from None
            return
        c = self.container
        try:
            await c.sandbox.runc.kill(c.id, signal, all=all_)
        except RuncError as exc:
            if _gone(exc):
                raise ProcessGone from None
            raise errors.TtrpcError(errors.Code.UNKNOWN, f"kill {self.name}: {exc}") from None

    async def resize(self, width: int, height: int) -> None:
        if self.io is None or self.io.master is None:
            raise errors.failed_precondition(f"resize {self.name}: the process has no terminal")
        self.io.resize(width, height)

    def close_stdin(self) -> None:
        if self.io is not None:
            self.io.close_stdin()

    async def drain(self) -> None:
        if self.io is not None:
            await self.io.drain()

    def close(self) -> None:
        if self.io is not None:
            self.io.close()


class RuncContainer(ContainerBackend):
    """A runc container: the rootfs mounts, the runc container and its OOM watcher."""

    def __init__(self, sandbox: RuncSandbox, id: str, bundle: str, spec: dict, rootfs: list,
                 paths: StdioPaths, on_init_exit: ExitCallback) -> None:
        self.sandbox = sandbox
        self.id = id
        self.bundle = bundle
        self.spec = spec
        self.rootfs = rootfs
        self.init = RuncProcess(self, "", paths, None, on_init_exit)
        self._mounted = 0
        self._oom: OOMWatcher | None = None

    async def create(self) -> None:
        """Mounts the rootfs, opens stdio and runs `runc create`."""
        rootfs_dir = os.path.join(self.bundle, "rootfs")
        if self.rootfs:
            os.makedirs(rootfs_dir, exist_ok=True)
            for m in self.rootfs:
                try:
                    mounts.mount(m.type, m.source, list(m.options), rootfs_dir)
                except OSError as exc:
                    raise errors.TtrpcError(errors.Code.UNKNOWN, f"create task {self.id}: {exc}") from None
                self._mounted += 1
        else:
            root = self.spec["root"]["path"]
            path = root if os.path.isabs(root) else os.path.join(self.bundle, root)
            if not os.path.isdir(path):
                raise errors.invalid_argument(f"create task {self.id}: rootfs {path}: no such directory")
        io = self.init.open_io("create")
        runc = self.sandbox.runc
        since = asyncio.get_running_loop().time()
        self.init.pid = await _runc("create", self.id, run_with_console(io, runc.create(
            self.id, self.bundle, pid_file=os.path.join(self.bundle, "init.pid"),
            console_socket=io.console_socket, stdin=io.child_fds[0], stdout=io.child_fds[1],
            stderr=io.child_fds[2])))
        io.started()
        self.init.watch(since)
        publish = self.sandbox.host.publish
        self._oom = OOMWatcher.for_pid(self.init.pid, lambda: publish(ev.TaskOOM(container_id=self.id)))

    async def undo_create(self) -> None:
        if self._oom is not None:
            self._oom.close()
        self.init.close()
        try:
            await self.sandbox.runc.delete(self.id, force=True)
        except RuncError as exc:
            log.warning("create task %s: cleanup: %s", self.id, exc)
        self._unmount()
        _remove(os.path.join(self.bundle, "init.pid"))

    def _unmount(self) -> None:
        if self._mounted:
            try:
                mounts.unmount_all(os.path.join(self.bundle, "rootfs"))
            except OSError as exc:
                log.error("task %s: %s", self.id, exc)
            self._mounted = 0

    def new_exec(self, exec_id: str, spec: dict, paths: StdioPaths, on_exit: ExitCallback) -> ProcessBackend:
        return RuncProcess(self, exec_id, paths, spec, on_exit)

    async def pause(self) -> None:
        await _runc("pause", self.id, self.sandbox.runc.pause(self.id))

    async def resume(self) -> None:
        await _runc("resume", self.id, self.sandbox.runc.resume(self.id))

    async def update(self, resources: dict) -> None:
        await _runc("update", self.id, self.sandbox.runc.update(self.id, resources))

    async def pids(self) -> list[int]:
        return await _runc("pids", self.id, self.sandbox.runc.ps(self.id))

    async def stats(self) -> Message:
        return metrics_from_runc(await _runc("stats", self.id, self.sandbox.runc.stats(self.id)))

    async def delete(self) -> None:
        await _runc("delete", self.id, self.sandbox.runc.delete(self.id, force=True))
        if self._oom is not None:
            self._oom.close()
        self._unmount()
        _remove(os.path.join(self.bundle, "init.pid"))


async def run_with_console(io: ProcessIO, runc_call: Awaitable[int]) -> int:
    """Runs a runc create/exec coroutine; for terminals, receives the pty master meanwhile."""
    if io.console is None:
        return await runc_call
    attach = asyncio.ensure_future(io.attach_console())
    try:
        pid = await runc_call
        await asyncio.wait_for(attach, 10)
    except BaseException:
        attach.cancel()
        raise
    return pid


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
