"""The interface between the shim's backend-neutral tasks (hcsshim.shim.task) and what really runs them.

A backend is three kinds of object:

* a `Sandbox`: where a shim's containers run. The runc backend's sandbox is the host itself; the lcow backend's is
  a utility VM (one per standalone task, or one per pod that all the pod's containers share). The service makes
  one for the first Create and hands every Create of the shim to it; it never asks which kind it holds.
* a `ContainerBackend` per task: made by `Sandbox.create_container` (the container exists, its init has not
  started), then pause, resume, update, pids, stats, new_exec and delete.
* a `ProcessBackend` per process (the init, or an exec made by `ContainerBackend.new_exec`): start, kill,
  resize, close-io, drain and close.

Exits have one path: a backend calls the `on_exit(status)` it was given exactly once, with the exit status as
runc reports it (0-255; 128+N for a process killed by signal N; 255 when the status is unknowable, e.g. the VM
died). The task's process records it, waits for `drain()` and publishes `/tasks/exit` (hcsshim.shim.task).

Failures are ttrpc errors (hcsshim.ttrpc.errors) whose message names the operation and the task; a backend that
finds the process already gone raises `ProcessGone`, which the task answers as NotFound.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from hcsshim.api.containerd.task.v2 import shim_pb2 as api
    from hcsshim.shim.stdio import StdioPaths

ExitCallback = Callable[[int], None]

UNKNOWN_EXIT = 255  # the status of a process whose real status cannot be known (hcsshim's convention)


class ProcessGone(Exception):
    """The process has already exited (or was never there): signalling it is NotFound."""


class ProcessBackend(abc.ABC):
    """One process of a container: created by its backend, started by `start`, reports its exit once."""

    pid: int = 0

    @abc.abstractmethod
    async def start(self) -> int:
        """Starts the process (for the init: the container) and returns its pid."""

    @abc.abstractmethod
    async def kill(self, signal: int, all_: bool) -> None:
        """Sends `signal` (to every process of the container with all_); ProcessGone when it has exited."""

    @abc.abstractmethod
    async def resize(self, width: int, height: int) -> None:
        """Resizes the process's terminal (FailedPrecondition when it has none)."""

    @abc.abstractmethod
    def close_stdin(self) -> None:
        """End of input: the process reads EOF on stdin (idempotent)."""

    @abc.abstractmethod
    async def drain(self) -> None:
        """After the exit: waits (bounded) until the process's output has reached the client."""

    @abc.abstractmethod
    def close(self) -> None:
        """Releases the process's stdio (idempotent)."""


class ContainerBackend(abc.ABC):
    """One container: its init process and what it holds (rootfs, layers, the runc or guest container)."""

    init: ProcessBackend

    @abc.abstractmethod
    def new_exec(self, exec_id: str, spec: dict, paths: StdioPaths, on_exit: ExitCallback) -> ProcessBackend:
        """An exec process, not started yet (its stdio is opened by start)."""

    @abc.abstractmethod
    async def pause(self) -> None: ...

    @abc.abstractmethod
    async def resume(self) -> None: ...

    @abc.abstractmethod
    async def update(self, resources: dict) -> None:
        """Applies OCI LinuxResources."""

    @abc.abstractmethod
    async def pids(self) -> list[int]: ...

    @abc.abstractmethod
    async def stats(self) -> Message:
        """The message the Stats response carries in its Any."""

    @abc.abstractmethod
    async def delete(self) -> None:
        """Removes the container and everything it holds; its processes have exited (or never started)."""


class Sandbox(abc.ABC):
    """Where a shim's containers run (see the module docstring)."""

    @abc.abstractmethod
    async def create_container(self, req: api.CreateTaskRequest, spec: dict, paths: StdioPaths,
                               on_init_exit: ExitCallback) -> ContainerBackend:
        """Creates the container of a Create request; leaves nothing behind when it fails."""

    def accepts(self, req: api.CreateTaskRequest, spec: dict) -> None:
        """Raises a ttrpc error when this sandbox cannot take another container like `req` (default: any)."""
        return None

    async def container_deleted(self, task_id: str) -> None:
        """A container of this sandbox was deleted (a VM sandbox may go when its last container has)."""
        return None

    @property
    def empty(self) -> bool:
        """No container is left, and the sandbox holds nothing that outlives the shim."""
        return True

    async def close(self) -> None:
        """Releases everything the sandbox holds (idempotent)."""
        return None
