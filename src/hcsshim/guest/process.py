"""The guest's processes and the tasks that serve them.

`Process` is one process the host can wait for, signal and resize: a container's init, an exec, or a
process in the UVM outside containers. Its state machine::

    running --exit reaped--> exiting --stdio relays drained, fds closed--> exited (exit code published)

The exit code (0..255, 128+signal when killed) is published only once exited, so a WaitForProcess answer
always comes after all of the process's output was handed to the host (spec 6.3). `supervise()` is the one
place an exit is recorded. A process knows its container by id only (`container_id`, None in the UVM): the
containers module owns the containers and finds them.

`TaskSet` owns background tasks (logged when they fail, cancelled and awaited on close), and can start a
request handler eagerly (`spawn_eager`): its first step runs at once and only a handler that waits
becomes a task, which saves a trip through the event loop for requests that answer without waiting.
"""

from __future__ import annotations

import asyncio
import collections.abc
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

from hcsshim.guest import stdio
from hcsshim.runc import ReaperClosed
from hcsshim.transport.base import Conn

__all__ = ["Process", "TaskSet"]

log = logging.getLogger(__name__)


class TaskSet:
    """Owns background tasks: each is logged if it fails, and `close()` cancels and awaits them all."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    def spawn_eager(self, coro: Coroutine[Any, Any, Any], name: Callable[[], str]) -> asyncio.Task[Any] | None:
        """Run coro's first step now; only if it then waits does it become a task (None when it finished).

        Saves a trip through the event loop for requests that complete without waiting."""
        try:
            first = coro.send(None)
        except StopIteration:
            return None
        except BaseException:
            log.exception("task %s failed", name())
            return None
        # (a bare yield, first None, just makes the task's first step resume the coroutine at once)
        return self.spawn(_Continued(coro, first), name())  # type: ignore[arg-type]

    async def close(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Continued(collections.abc.Coroutine):  # type: ignore[type-arg]
    """A coroutine whose first step already ran (yielding `first`), packaged so a Task can continue it:
    the Task's first send gets `first` back; everything else (including a cancellation that arrives before
    the Task's first step) goes straight to the inner coroutine."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first: Any = first

    def send(self, value: Any) -> Any:
        first, self._first = self._first, None
        if first is not None:
            return first
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._first = None
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)  # pragma: no cover - the old three-argument form

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Any:
        return self


class Process:
    """One process the host can wait for, signal and resize: a container init, an exec, or a UVM process."""

    def __init__(self, pid: int, exit: asyncio.Future[int], kind: str, container_id: str | None) -> None:
        self.pid = pid
        self.kind = kind  # "init", "exec" or "uvm"
        self.container_id = container_id
        self._exit = exit
        self.state = "running"
        self.exit_code: int | None = None
        self.exited = asyncio.Event()
        self.master: int | None = None  # pty master, when the process has a terminal
        self.pipes: stdio.Pipes | None = None  # an init's pipes between create and ExecuteProcess
        self.conns: list[Conn] = []
        self.relays: list[asyncio.Task[None]] = []
        self.stdin_task: asyncio.Task[None] | None = None
        self.on_exit: Callable[[Process], Coroutine[Any, Any, None]] | None = None

    def __repr__(self) -> str:
        where = f" in {self.container_id}" if self.container_id else ""
        return f"Process({self.kind} pid {self.pid}{where}, {self.state})"

    def attach(self, tasks: TaskSet, stdin: Conn | None, stdout: Conn | None, stderr: Conn | None) -> None:
        """Start relaying between the process's pipes (or pty) and the host's connections."""
        self.conns = [c for c in (stdin, stdout, stderr) if c is not None]
        name = f"{self.kind}-{self.pid}"
        if self.master is not None:
            self.relays.append(tasks.spawn(stdio.pty_relay(self.master, stdin, stdout), f"pty-{name}"))
            if stderr is not None:
                stderr.close()
            return
        pipes = self.pipes
        if pipes is None:
            for c in self.conns:
                c.close()
            return
        fd = pipes.take(0)
        if fd is not None:
            if stdin is not None:
                self.stdin_task = tasks.spawn(stdio.conn_to_fd(stdin, fd), f"stdin-{name}")
            else:
                os.close(fd)  # no stdin from the host: the process reads EOF
        for i, conn in ((1, stdout), (2, stderr)):
            fd = pipes.take(i)
            if fd is not None:
                self.relays.append(tasks.spawn(stdio.fd_to_conn(fd, conn), f"{('', 'stdout', 'stderr')[i]}-{name}"))
            elif conn is not None:
                conn.close()

    async def supervise(self) -> None:
        """Wait for the exit, drain the relays, publish the exit code (the one place an exit is recorded)."""
        try:
            status = await self._exit
        except ReaperClosed:
            status = 255
        self.state = "exiting"
        log.debug("process exited", extra={"pid": self.pid, "status": status, "kind": self.kind})
        if self.on_exit is not None:
            await self.on_exit(self)
        if self.stdin_task is not None:
            self.stdin_task.cancel()
        if self.relays:
            await asyncio.gather(*self.relays, return_exceptions=True)
        if self.stdin_task is not None:
            await asyncio.gather(self.stdin_task, return_exceptions=True)
        self.release()
        self.exit_code = status
        self.state = "exited"
        self.exited.set()

    def drop_host(self) -> None:
        """Power-off: close the host's stdio connections so the relays finish without the host."""
        for c in self.conns:
            c.close()

    def release(self) -> None:
        for c in self.conns:
            c.close()
        self.conns = []
        if self.pipes is not None:
            self.pipes.close()
            self.pipes = None
        if self.master is not None:
            os.close(self.master)
            self.master = None
