"""Live migration of a compute system (B16, upstream internal/hcs/v2 migration.go), the parts beside System's
methods: what a step is given (`MigrationConfig` and the documents built from it) and the system's migration
notifications as an awaitable stream (`MigrationNotifications`).

The workflow is HCS's; System forwards each step to its backend (backend.MigrationHandle) and names it in errors::

    source                                          destination
    initialize_live_migration_on_source(options)    create_compute_system(id, document)
    start_live_migration_on_source(config) ─socket─ start_with_migration_options(config)
    start_live_migration_transfer(options)
    finalize_live_migration(options)                finalize_live_migration(options)

`cancel_live_migration(options)` may be sent at any point, also while another step is still running (upstream
skips its handle lock for this; nothing here serializes the steps). The transport socket is the caller's: a
connected socket between the two hosts, given as its handle (a Windows SOCKET, socket.socket.fileno() there) or as
any object with fileno(); HCS gets it with the step's operation (HcsAddResourceToOperation, resource type Socket,
resourcepaths.LIVE_MIGRATION_SOCKET_URI) and the session id in the step's MigrationNetworkSettings.

Notifications: HCS reports progress as GroupLiveMigration events (SetupDone, TransferInProgress, BlackoutStarted,
OfflineDone, BlackoutExited, MigrationDone, MigrationFailed, ...), each an OperationSystemMigrationNotificationInfo.
`System.migration_notifications()` subscribes; a stream sees the events that arrive after it subscribed, so
subscribe before the step whose events matter (upstream's channel exists from the System's creation, to the same
end). A stream yields the decoded documents in order; an event without data yields the zero document (HCS sends
some so), a malformed one is logged and skipped, as upstream does. It ends when the system stops or is closed, or
when it is closed itself. Unlike upstream's 16-slot channel, nothing is dropped: streams buffer without bound.
`additional_details(info, BlackoutExitedEventDetails)` reads an event's AdditionalDetails as its typed document.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, TypeVar

from hcsshim import gojson
from hcsshim.hcs.backend import EVENT_GROUP_LIVE_MIGRATION
from hcsshim.hcs.notify import EventStream
from hcsshim.hcs.schema2.migration import (
    MigrationNetworkSettings,
    MigrationStartOptions,
    OperationSystemMigrationNotificationInfo,
    StartOptions,
)

__all__ = ["MigrationConfig", "MigrationNotifications", "additional_details", "parse_notification"]

log = logging.getLogger("hcsshim.hcs")

S = TypeVar("S", bound=gojson.Struct)


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


@dataclass(frozen=True)
class MigrationConfig:
    """Upstream's MigrationConfig: the transport socket (its handle, or an object with fileno()) and the
    migration session's id, for the steps that move the system over the socket."""

    socket: int | _HasFileno
    session_id: int = 0

    def socket_handle(self) -> int:
        """The socket's handle, as HCS is given it."""
        return self.socket if isinstance(self.socket, int) else self.socket.fileno()

    def start_options(self) -> MigrationStartOptions:
        """The source's start options: the session's network settings."""
        return MigrationStartOptions(network_settings=MigrationNetworkSettings(session_id=self.session_id))

    def destination_start_options(self) -> StartOptions:
        """The destination's HcsStartComputeSystem options: the same, as DestinationMigrationOptions."""
        return StartOptions(destination_migration_options=self.start_options())


def parse_notification(data: str, *, system_id: str = "") -> OperationSystemMigrationNotificationInfo | None:
    """A GroupLiveMigration event's data as its document: the zero document for no data, None (logged) when
    malformed."""
    if not data or data.strip() == "null":  # Go's decoder reads null as the zero value
        return OperationSystemMigrationNotificationInfo()
    try:
        info: OperationSystemMigrationNotificationInfo = gojson.loads(data, OperationSystemMigrationNotificationInfo)
    except gojson.DecodeError as err:
        log.warning("failed to unmarshal migration notification payload, dropping event",
                    extra={"cid": system_id, "event_data": data, "error": str(err)})
        return None
    return info


def additional_details(info: OperationSystemMigrationNotificationInfo, cls: type[S]) -> S | None:
    """A notification's AdditionalDetails read as `cls` (BlackoutExitedEventDetails for BlackoutExited); None
    when it has none. Raises gojson.DecodeError when they are not a `cls`."""
    if info.additional_details is None:
        return None
    return cls.from_json(info.additional_details, where=f"{cls.NAME} (AdditionalDetails of {info.event})")


class MigrationNotifications:
    """A system's live-migration notifications from subscription on (see the module docstring): an async iterator
    of OperationSystemMigrationNotificationInfo, and an async context manager that closes it."""

    def __init__(self, events: EventStream, system_id: str = "") -> None:
        self._events = events
        self._system_id = system_id

    def __aiter__(self) -> MigrationNotifications:
        return self

    async def __anext__(self) -> OperationSystemMigrationNotificationInfo:
        async for event in self._events:
            if event.type != EVENT_GROUP_LIVE_MIGRATION:
                continue
            info = parse_notification(event.data, system_id=self._system_id)
            if info is not None:
                return info
        raise StopAsyncIteration

    def close(self) -> None:
        """Stop receiving; iteration ends."""
        self._events.close()

    async def __aenter__(self) -> MigrationNotifications:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()
