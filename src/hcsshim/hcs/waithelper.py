"""Waiting for HCS v1 notifications (upstream internal/hcs's callback.go channels and waithelper.go's
waitForNotification): one `Channels` per system or process handle, fed that handle's notifications, and
`Channels.wait_for`, which waits for the notification that completes a call HCS answered "pending".

Plain logic on the event loop: no DLL and no threads (hcsshim.hcs.windows_v1 hands each notification over from
HCS's thread, then calls `put`). The channels of a handle are upstream's: a system's ServiceDisconnect,
SystemExited and the Create/Start/Pause/Resume/Save completions (`SYSTEM_CHANNELS`), a process's
ServiceDisconnect and ProcessExited (`PROCESS_CHANNELS`); a notification of another type is not routed.

Outcomes of `wait_for(expected, timeout)`, as upstream's:

* `expected` arrives: its Notification is returned; the caller decodes its status (and result document).
* SystemExited came first (and another type is expected): ErrUnexpectedContainerExit.
* ServiceDisconnect came first: ErrUnexpectedProcessAbort.
* The channels were closed (their handle is closing), before or during the wait: ErrHandleClose.
* `timeout` seconds passed (None: no limit): ErrTimeout.
* `expected` is not a channel of the handle: ErrInvalidNotificationType.

Deliberate differences from upstream's one-slot Go channels:

* SystemExited, ServiceDisconnect and ProcessExited are latched, not consumed: they end every later wait too
  (upstream's exit watcher and a pending wait race for the one value, and the loser waits for its timeout).
* Completions queue in arrival order, and `discard(type)` drops those left over by an abandoned wait: the
  backend calls it before issuing a call, so a late completion of a timed-out start does not complete the next.
* When several outcomes are ready the first to arrive wins (upstream's select picks among ready channels at
  random).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterable

from hcsshim.hcs.errors import (
    ErrHandleClose,
    ErrInvalidNotificationType,
    ErrTimeout,
    ErrUnexpectedContainerExit,
    ErrUnexpectedProcessAbort,
)
from hcsshim.hcs.win32.callbacks import Notification
from hcsshim.hcs.win32.vmcompute import (
    NOTIFICATION_PROCESS_EXITED,
    NOTIFICATION_SERVICE_DISCONNECT,
    NOTIFICATION_SYSTEM_CREATE_COMPLETED,
    NOTIFICATION_SYSTEM_EXITED,
    NOTIFICATION_SYSTEM_PAUSE_COMPLETED,
    NOTIFICATION_SYSTEM_RESUME_COMPLETED,
    NOTIFICATION_SYSTEM_SAVE_COMPLETED,
    NOTIFICATION_SYSTEM_START_COMPLETED,
)

__all__ = ["PROCESS_CHANNELS", "SYSTEM_CHANNELS", "Channels"]

SYSTEM_CHANNELS = frozenset({
    NOTIFICATION_SERVICE_DISCONNECT, NOTIFICATION_SYSTEM_EXITED, NOTIFICATION_SYSTEM_CREATE_COMPLETED,
    NOTIFICATION_SYSTEM_START_COMPLETED, NOTIFICATION_SYSTEM_PAUSE_COMPLETED, NOTIFICATION_SYSTEM_RESUME_COMPLETED,
    NOTIFICATION_SYSTEM_SAVE_COMPLETED,
})
PROCESS_CHANNELS = frozenset({NOTIFICATION_SERVICE_DISCONNECT, NOTIFICATION_PROCESS_EXITED})

_LATCHED = frozenset({NOTIFICATION_SYSTEM_EXITED, NOTIFICATION_SERVICE_DISCONNECT, NOTIFICATION_PROCESS_EXITED})
# What ends a wait for another notification, and how.
_INTERRUPTS: dict[int, type[Exception]] = {
    NOTIFICATION_SYSTEM_EXITED: ErrUnexpectedContainerExit,
    NOTIFICATION_SERVICE_DISCONNECT: ErrUnexpectedProcessAbort,
}


class Channels:
    """One handle's notification channels; used from the event loop's thread only."""

    def __init__(self, types: Iterable[int]) -> None:
        self._types = frozenset(types)
        self._queues: dict[int, deque[tuple[int, Notification]]] = {t: deque() for t in self._types - _LATCHED}
        self._latched: dict[int, tuple[int, Notification]] = {}
        self._order = itertools.count()
        self._closed = False
        self._wakers: set[asyncio.Future[None]] = set()

    @property
    def types(self) -> frozenset[int]:
        """The notification types routed here."""
        return self._types

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, notification: Notification) -> bool:
        """Route a notification to its channel; False when it has none (or the channels are closed). A latched
        type keeps its first notification."""
        if self._closed or notification.type not in self._types:
            return False
        entry = (next(self._order), notification)
        if notification.type in _LATCHED:
            self._latched.setdefault(notification.type, entry)
        else:
            self._queues[notification.type].append(entry)
        self._wake()
        return True

    def discard(self, type: int) -> None:
        """Drop the queued notifications of a completion type (those nobody waited for)."""
        queue = self._queues.get(type)
        if queue is not None:
            queue.clear()

    def close(self) -> None:
        """Close every channel: waits in progress, and later ones, fail with ErrHandleClose."""
        self._closed = True
        for queue in self._queues.values():
            queue.clear()
        self._wake()

    async def wait_for(self, expected: int, timeout: float | None) -> Notification:
        """The notification of type `expected`, or an outcome raised (see the module docstring)."""
        if expected not in self._types:
            raise ErrInvalidNotificationType()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while (outcome := self._outcome(expected)) is None:
                    waker = loop.create_future()
                    self._wakers.add(waker)
                    try:
                        await waker
                    finally:
                        self._wakers.discard(waker)
        except TimeoutError:
            raise ErrTimeout() from None
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _outcome(self, expected: int) -> Notification | Exception | None:
        if self._closed:
            return ErrHandleClose()
        candidates: list[tuple[int, int]] = []  # (arrival, type)
        queue = self._queues.get(expected)
        if queue:
            candidates.append((queue[0][0], expected))
        for type, (arrival, _) in self._latched.items():
            if type == expected or type in _INTERRUPTS:
                candidates.append((arrival, type))
        if not candidates:
            return None
        _, first = min(candidates)
        if first != expected:
            return _INTERRUPTS[first]()
        if queue:
            return queue.popleft()[1]
        return self._latched[expected][1]

    def _wake(self) -> None:
        for waker in self._wakers:
            if not waker.done():
                waker.set_result(None)
