"""Native callbacks: one process-wide trampoline per C callback type, and the registry that routes to Python.

HCS calls back with an opaque `void* context`. As upstream does (spec 10.2), that context is never the address of
a Python object: it is an integer key of `REGISTRY`, which maps it to the Python handler. The trampolines
(ctypes function pointers for HCS_EVENT_CALLBACK, HCS_OPERATION_COMPLETION and vmcompute's
HCS_NOTIFICATION_CALLBACK) are created once and live as long as the process, so HCS never calls freed code; a
handler lives as long as the handle it is registered on: the bindings attach its key to the handle (the owner) and
release the owner when the handle is closed or the registration is undone. A callback whose key is gone (a late
event, a stale context) is dropped.

Handlers run on HCS's thread (the fake's thread in tests), holding the GIL; they must not block and should hand
work to their owner (e.g. loop.call_soon_threadsafe). An exception in a handler is logged, never propagated into
the DLL.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from hcsshim.hcs.win32.cdefs import (
    HCS_EVENT,
    HCS_EVENT_CALLBACK,
    HCS_NOTIFICATION_CALLBACK,
    HCS_OPERATION_COMPLETION,
    handle_value,
)
from hcsshim.hcs.win32.strings import read_wstr

__all__ = [
    "EVENT_TRAMPOLINE",
    "NOTIFICATION_TRAMPOLINE",
    "OPERATION_TRAMPOLINE",
    "REGISTRY",
    "CallbackRegistry",
    "CompletionHandler",
    "Event",
    "EventHandler",
    "Notification",
    "NotificationHandler",
]

log = logging.getLogger("hcsshim.hcs.win32")


@dataclass(frozen=True)
class Event:
    """An HCS_EVENT as delivered: its HCS_EVENT_TYPE, its data (JSON text, "" when none) and its operation."""

    type: int
    data: str = ""
    operation: int = 0


@dataclass(frozen=True)
class Notification:
    """A vmcompute notification: its type, its status HRESULT (unsigned 32-bit) and its data ("" when none)."""

    type: int
    status: int = 0
    data: str = ""


EventHandler = Callable[[Event], None]
CompletionHandler = Callable[[int], None]  # receives the operation handle
NotificationHandler = Callable[[Notification], None]


class CallbackRegistry:
    """Integer keys (the contexts given to HCS) -> Python handlers, each key attached to the handles that own it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter = itertools.count(1)  # 0 is NULL: "no context"
        self._handlers: dict[int, Callable[..., None]] = {}
        self._owners: dict[Hashable, set[int]] = {}

    def register(self, handler: Callable[..., None], owner: Hashable | None = None) -> int:
        """Keep `handler` alive under a fresh key (the context to pass to HCS), attached to `owner` if given."""
        with self._lock:
            key = next(self._counter)
            self._handlers[key] = handler
            if owner is not None:
                self._owners.setdefault(owner, set()).add(key)
        return key

    def attach(self, key: int, owner: Hashable) -> None:
        """Make `owner` (a handle) also own `key`: releasing the owner unregisters it."""
        with self._lock:
            if key in self._handlers:
                self._owners.setdefault(owner, set()).add(key)

    def lookup(self, key: int | None) -> Callable[..., None] | None:
        """The handler under `key`, or None when there is none (anymore)."""
        if not key:
            return None
        with self._lock:
            return self._handlers.get(key)

    def unregister(self, key: int) -> None:
        """Drop `key` and its handler (no-op when already gone)."""
        with self._lock:
            self._drop(key)

    def release(self, owner: Hashable) -> list[int]:
        """Unregister every key `owner` holds (its handle was closed); returns them."""
        with self._lock:
            keys = sorted(self._owners.pop(owner, ()))
            for key in keys:
                self._drop(key)
        return keys

    def keys(self, owner: Hashable) -> frozenset[int]:
        """The keys `owner` currently holds."""
        with self._lock:
            return frozenset(self._owners.get(owner, ()))

    def clear(self) -> None:
        """Drop every handler (tests; handles still registered with HCS would then have their events dropped)."""
        with self._lock:
            self._handlers.clear()
            self._owners.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._handlers)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._handlers

    def _drop(self, key: int) -> None:
        self._handlers.pop(key, None)
        for owner in [owner for owner, keys in self._owners.items() if key in keys]:
            keys = self._owners[owner]
            keys.discard(key)
            if not keys:
                del self._owners[owner]


REGISTRY = CallbackRegistry()


def _dispatch(kind: str, context: int | None, make: Callable[[], Any]) -> None:
    handler = REGISTRY.lookup(context)
    if handler is None:
        log.debug("HCS callback without a registered handler dropped", extra={"kind": kind, "context": context})
        return
    try:
        handler(make())
    except BaseException:  # nothing may propagate into the DLL
        log.exception("HCS callback handler failed", extra={"kind": kind, "context": context})


def _address(pointer: Any) -> int:
    return ctypes.cast(pointer, ctypes.c_void_p).value or 0


def _on_event(event: Any, context: int | None) -> None:
    if not event:
        return

    def make() -> Event:
        ev: HCS_EVENT = event.contents
        return Event(int(ev.Type), read_wstr(_address(ev.EventData)), handle_value(ev.Operation))

    _dispatch("event", context, make)


def _on_operation(operation: int | None, context: int | None) -> None:
    _dispatch("operation", context, lambda: handle_value(operation))


def _on_notification(notification_type: int, context: int | None, status: int, data: Any) -> None:
    _dispatch("notification", context,
              lambda: Notification(int(notification_type), status & 0xFFFFFFFF, read_wstr(_address(data))))


# The process-wide native entry points, never freed.
EVENT_TRAMPOLINE = HCS_EVENT_CALLBACK(_on_event)
OPERATION_TRAMPOLINE = HCS_OPERATION_COMPLETION(_on_operation)
NOTIFICATION_TRAMPOLINE = HCS_NOTIFICATION_CALLBACK(_on_notification)
