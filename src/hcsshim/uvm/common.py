"""What a utility VM and its device managers share: the error type, the VM's states, the VM as a manager sees
it (`Machine`: the host half of a change is a modify request to its compute system, the guest half a request to
its GCS), `join`, how a later user of a shared disk, mount or share waits for the first user's setup, and
`guest_step`, which runs a guest or host step of a teardown unless the VM has stopped.

The managers (scsi, shares, nics) take the VM as a `Machine` and never import the VM module: the VM owns them,
not the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable
from typing import Protocol, TypeVar

from hcsshim.bridge import HResultError
from hcsshim.gcs import GuestConnection
from hcsshim.hcs.schema2 import ModifySettingRequest

T = TypeVar("T")

STOP_GRACE = 2.0  # seconds a step that failed for lack of a peer waits to see the VM stop (then it was that)


class UVMError(Exception):
    """A utility VM operation failed; the message names the VM, the operation and, where it matters, the state."""


class State(enum.Enum):
    NOT_CREATED = "not created"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    CLOSED = "closed"
    INVALID = "invalid"


class Machine(Protocol):
    """The VM as its device managers use it."""

    id: str
    state: State
    exited: asyncio.Event

    def path(self, name: str) -> str:
        """A file in the VM's run dir."""

    async def modify_host(self, operation: str, request: ModifySettingRequest) -> None:
        """Sends the host half of a change to the VM's compute system (hcsshim.hcs System.modify); UVMError
        naming the operation when there is no system, the system's error (an HResultError) when it fails."""

    def guest(self, operation: str) -> GuestConnection:
        """The GCS connection (UVMError naming the operation when there is none)."""


class Shared(Protocol):
    """A reference-counted device or mount that its first user sets up while later users wait (scsi, shares)."""

    refs: int
    settled: asyncio.Event  # set once the first user's setup finished, either way
    state: enum.Enum
    error: str


async def join(vm: Machine, operation: str, item: Shared, ready: enum.Enum) -> None:
    """Takes a reference on `item` and waits until its setup settled; UVMError with the setup's error unless it
    reached `ready` (a cancelled wait gives the reference back)."""
    item.refs += 1
    try:
        await item.settled.wait()
    except BaseException:
        item.refs -= 1
        raise
    if item.state is not ready:
        raise UVMError(f"uvm {vm.id}: {operation}: {item.error}")


def check_state(vm: Machine, operation: str, *allowed: State) -> None:
    """UVMError("uvm <id>: <operation>: the VM is <state>") unless the VM is in one of `allowed`."""
    if vm.state not in allowed:
        raise UVMError(f"uvm {vm.id}: {operation}: the VM is {vm.state.value}")


def stopped(vm: Machine) -> bool:
    """The VM is gone (or going): nothing in the guest or its compute system is left to undo."""
    return vm.exited.is_set() or vm.state in (State.STOPPED, State.CLOSED, State.INVALID)


async def guest_step(vm: Machine, step: Awaitable[T]) -> bool:
    """Runs one guest or host step of a teardown: True when it ran, False when the VM stopped before or during it
    (its guest and compute system are gone, so there is nothing to undo and nothing to wait for). A failure that
    is not the VM stopping is raised: an HRESULT from the guest or the compute system at once, any other (a closed
    bridge, a lost monitor) after STOP_GRACE seconds of looking whether the VM is going down."""
    if stopped(vm):
        if asyncio.iscoroutine(step):
            step.close()
        return False
    task = asyncio.ensure_future(step)
    died = asyncio.ensure_future(vm.exited.wait())
    try:
        await asyncio.wait([task, died], return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            return False
        exc = task.exception()
        if exc is None:
            return True
        if not isinstance(exc, HResultError):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(died), STOP_GRACE)
            if stopped(vm):
                return False
        raise exc
    finally:
        task.cancel()
        died.cancel()
