"""Compute systems (upstream internal/hcs/v2's System): create or open one over a Backend, drive its lifecycle, query
and modify it, run processes in it, and learn when and how it stopped.

State machine of a System (the object's; HCS keeps the system's own state: created, running, paused, ...):

    create_compute_system / open_compute_system
                    │
                    ▼
                  OPEN ──SystemExited or ServiceDisconnect──► STOPPED
                    │                                           │
                    └──────────────────close()──────────────────┴──► CLOSED

* OPEN: every operation is sent to HCS, which refuses what the system's state does not allow (the error says so).
* STOPPED (`stopped` is True): `wait()` has returned, or raises the wait error (ServiceDisconnect: the connection
  to HCS was lost, ErrUnexpectedProcessAbort); `exit_error()` tells why the system stopped (an ExitType of
  "UnexpectedExit" gives ErrVmcomputeUnexpectedExit; a clean exit, None). `shutdown()` and `terminate()` are
  no-ops; the rest still reach HCS (the handle is open).
* CLOSED: the handle is released (after any call in flight returns). Operations fail with ErrAlreadyClosed,
  except shutdown and terminate (no-ops) and close (idempotent). HCS sends nothing at close, so a system closed
  before it stopped counts as stopped with the wait error ErrAlreadyClosed; its exit is unknown.

Creation (`create_compute_system`) caches the system's type, OS and owner from a first v1 properties query, as
open does; when that query fails a created system is terminated and closed (an opened one only closed), as
upstream. `start` records the start time, the stop is timed when reported.

Errors: every failure is a SystemError (hcsshim.hcs.errors) naming upstream's operation and the system,
``hcs::System::Start c1: <what failed>``, with the ErrorEvents HCS returned; operations after close fail with
ErrAlreadyClosed wrapped the same way. Notifications: `events()` streams the system's HCS events (hcsshim.hcs.notify).

Live migration (upstream's v2-only methods, hcsshim.hcs.migration): `initialize_live_migration_on_source`,
`start_live_migration_on_source`, `start_live_migration_transfer`, `finalize_live_migration`,
`cancel_live_migration` and, on the destination, `start_with_migration_options` (which records the start time as
`start` does); `migration_notifications()` streams the GroupLiveMigration events as documents. They need a backend
whose handle can migrate (backend.MigrationHandle): otherwise, as on a closed system, they fail before reaching
HCS, with ErrNotSupported.

CPU groups: `set_cpu_group_affinities` pins a container's processes to processor groups on its silo job object
(upstream's SetCPUGroupAffinities; backend.SiloHandle): containers only, ErrNotSupported for other systems and
for backends without silos.

Statistics in process (upstream's statisticsInProc): `properties_v2` asked for Statistics of a Windows container
reads them from its silo job object (backend.SiloHandle) instead of asking HCS, which upstream found costly; any
other type asked along with it still comes from HCS, and when the silo cannot be read (logged) Statistics do too.
Unlike upstream, which tries the silo of any container and answers a query without types itself, the silo is
read only when Statistics are asked of a Windows container.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

from hcsshim import gojson
from hcsshim.hcs import schema1, schema2
from hcsshim.hcs.backend import (
    EVENT_SERVICE_DISCONNECT,
    EVENT_SYSTEM_EXITED,
    Backend,
    Event,
    GroupAffinity,
    MigrationHandle,
    SiloHandle,
    SiloStatistics,
    SystemHandle,
    document_text,
    events_of,
    raising,
    supports,
)
from hcsshim.hcs.errors import (
    ErrAlreadyClosed,
    ErrComputeSystemDoesNotExist,
    Errno,
    ErrNotSupported,
    ErrUnexpectedProcessAbort,
    ErrUnexpectedValue,
    ErrVmcomputeAlreadyStopped,
    ErrVmcomputeOperationPending,
    ErrVmcomputeSystemAlreadyStopped,
    ErrVmcomputeUnexpectedExit,
    SentinelError,
    is_any,
    make_system_error,
)
from hcsshim.hcs.migration import MigrationConfig, MigrationNotifications
from hcsshim.hcs.notify import EventFeed, EventStream
from hcsshim.hcs.process import Process, open_stdio
from hcsshim.hcs.service import default_backend

__all__ = ["ErrNotExited", "System", "create_compute_system", "open_compute_system"]

log = logging.getLogger("hcsshim.hcs")

Document = gojson.Struct | Mapping[str, Any] | str
# What shutdown and terminate count as done (upstream's three, and the HRESULT form of "already stopped").
_STOPPING_DONE = (ErrVmcomputeAlreadyStopped, ErrVmcomputeSystemAlreadyStopped, ErrComputeSystemDoesNotExist,
                  ErrVmcomputeOperationPending)


class ErrNotExited(SentinelError):
    """exit_error() asked of a system that has not stopped (upstream's unnamed error)."""

    MESSAGE = "container not exited"


class _SystemExitStatus(gojson.Struct):
    """A SystemExited event's data."""

    status: int = gojson.field("Status", gojson.I32)
    exit_type: str = gojson.field("ExitType", gojson.STR)


def _go_time(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat().replace("+00:00", "Z")


def _statistics_document(counters: SiloStatistics, start_time: float | None) -> schema2.Statistics:
    """A Statistics property from a silo's counters, as upstream's statisticsInProc fills it. The uptime counts
    from start(); for a system this object did not start it is 0 and ContainerStartTime the zero time (upstream
    reports the time since year 1)."""
    uptime = 0 if start_time is None else max(0, int((time.time() - start_time) * 10_000_000))
    return schema2.Statistics(
        timestamp=_go_time(counters.timestamp),
        container_start_time=gojson.ZERO_TIME if start_time is None else _go_time(start_time),
        uptime_100ns=uptime,
        memory=schema2.MemoryStats(memory_usage_commit_bytes=counters.memory_commit_bytes,
                                   memory_usage_commit_peak_bytes=counters.memory_commit_peak_bytes,
                                   memory_usage_private_working_set_bytes=counters.private_working_set_bytes),
        processor=schema2.ProcessorStats(runtime_kernel_100ns=counters.kernel_time_100ns,
                                         runtime_user_100ns=counters.user_time_100ns,
                                         total_runtime_100ns=counters.kernel_time_100ns + counters.user_time_100ns),
        storage=schema2.StorageStats(read_count_normalized=counters.read_count, read_size_bytes=counters.read_bytes,
                                     write_count_normalized=counters.write_count,
                                     write_size_bytes=counters.write_bytes))


async def create_compute_system(id: str, document: Document, *, backend: Backend | None = None) -> System:
    """Create compute system `id` from its document (a schema2 ComputeSystem, a schema1 ContainerConfig, or the
    JSON text), without starting it."""
    op = "hcs::CreateComputeSystem"
    backend = backend or default_backend()
    with raising(lambda err: make_system_error(id, op, err, events_of(err))):
        handle = await backend.create_system(id, document_text(document))
    return await _ready(System(id, handle, backend), terminate=True)


async def open_compute_system(id: str, *, backend: Backend | None = None) -> System:
    """Open the existing compute system `id`."""
    op = "hcs::OpenComputeSystem"
    backend = backend or default_backend()
    with raising(lambda err: make_system_error(id, op, err, events_of(err))):
        handle = await backend.open_system(id)
    return await _ready(System(id, handle, backend), terminate=False)


async def _ready(system: System, *, terminate: bool) -> System:
    """`system` once its properties are cached; if that fails, terminated (when asked) and closed."""
    try:
        await system._cache_properties()
    except BaseException:
        await system._abandon(terminate=terminate)
        raise
    return system


class System:
    """An open compute system; made by create_compute_system or open_compute_system. See the module docstring."""

    def __init__(self, id: str, handle: SystemHandle, backend: Backend) -> None:
        self._id = id
        self._handle = handle
        self._backend = backend
        self._closed = False
        self._close_lock = asyncio.Lock()
        self._stopped = asyncio.Event()
        self._wait_error: BaseException | None = None
        self._exit_error: BaseException | None = None
        self._os = self._type = self._owner = ""
        self._start_time: float | None = None
        self._stop_time: float | None = None
        self._events = EventFeed()
        handle.set_event_sink(self._on_event)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "stopped" if self.stopped else "open"
        return f"<System {self._id} {state}>"

    # -- identity and cached properties

    @property
    def id(self) -> str:
        return self._id

    @property
    def backend(self) -> Backend:
        """The backend the system lives on."""
        return self._backend

    def os(self) -> str:
        """The system's OS, lowercase ("linux", "windows"), from the first properties query."""
        return self._os

    def system_type(self) -> str:
        """The system's type, lowercase ("container", "virtualmachine"), from the first properties query."""
        return self._type

    def owner(self) -> str:
        """The system's owner, lowercase, from the first properties query."""
        return self._owner

    def is_oci(self) -> bool:
        """Whether processes are created from OCI specs: a Linux container."""
        return self._os == "linux" and self._type == "container"

    @property
    def stopped(self) -> bool:
        """Whether the system has stopped (or was closed first: see the module docstring)."""
        return self._stopped.is_set()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def started_time(self) -> float | None:
        """When start() succeeded (time.time()), None before."""
        return self._start_time

    @property
    def stopped_time(self) -> float | None:
        """When the stop was reported (or the system closed), None before."""
        return self._stop_time

    def events(self) -> EventStream:
        """The system's HCS notifications from now on, until it stops or is closed (an async iterator)."""
        return self._events.subscribe()

    async def _cache_properties(self) -> None:
        props = await self.properties()
        self._type = props.system_type.lower()
        self._os = props.runtime_os_type.lower()
        self._owner = props.owner.lower()
        if not self._os and self._type == "container":
            self._os = "windows"  # pre-RS5 HCS did not say, but only ran Windows containers

    async def _abandon(self, *, terminate: bool) -> None:
        """Tear down after a failed create/open; failures here are logged (the first error is the one raised)."""
        try:
            if terminate:
                await self.terminate()
        except Exception as err:
            log.warning("terminating a system whose creation failed", extra={"cid": self._id, "error": str(err)})
        await self.close()

    # -- notifications

    def _error(self, op: str, err: BaseException | int) -> BaseException:
        exc = Errno(err) if isinstance(err, int) else err
        return make_system_error(self._id, op, exc, events_of(exc))

    def _check_open(self, op: str) -> None:
        if self._closed:
            raise self._error(op, ErrAlreadyClosed())

    def _on_event(self, event: Event) -> None:
        self._events.publish(event)
        if event.type == EVENT_SYSTEM_EXITED:
            self._exited_with(event.data)
        elif event.type == EVENT_SERVICE_DISCONNECT:
            self._finish(self._error("hcs::System::waitBackground", ErrUnexpectedProcessAbort()))

    def _exited_with(self, data: str) -> None:
        if data:
            try:
                status = gojson.loads(data, _SystemExitStatus)
            except gojson.DecodeError as err:
                log.warning("failed to parse SystemExitStatus", extra={"cid": self._id, "exit_data": data,
                                                                       "error": str(err)})
            else:
                if status.exit_type == "UnexpectedExit":
                    log.debug("unexpected system exit", extra={"cid": self._id, "status": status.status})
                    self._exit_error = self._error("hcs::System::waitBackground", ErrVmcomputeUnexpectedExit)
        self._finish(None)

    def _finish(self, wait_error: BaseException | None) -> None:
        """Record the stop once (the first report wins) and release the waiters."""
        if self._stopped.is_set():
            return
        self._wait_error = wait_error
        self._stop_time = time.time()
        self._stopped.set()
        self._events.end()

    # -- lifecycle

    async def start(self) -> None:
        """Start the system (returns when HCS has started it)."""
        op = "hcs::System::Start"
        self._check_open(op)
        with raising(lambda err: self._error(op, err)):
            await self._handle.start()
        self._start_time = time.time()

    async def _request_stop(self, op: str, request: str) -> None:
        if self._closed or self.stopped:
            return
        try:
            await getattr(self._handle, request)()
        except Exception as err:
            if is_any(err, *_STOPPING_DONE):
                return
            raise self._error(op, err) from err

    async def shutdown(self) -> None:
        """Ask the system to shut down cleanly; its stop is reported later (wait()). Already stopped, gone or
        pending counts as done; a no-op once stopped or closed."""
        await self._request_stop("hcs::System::Shutdown", "shutdown")

    async def terminate(self) -> None:
        """Ask HCS to terminate the system; as shutdown, its stop is reported later."""
        await self._request_stop("hcs::System::Terminate", "terminate")

    async def pause(self) -> None:
        """Pause the system."""
        op = "hcs::System::Pause"
        self._check_open(op)
        with raising(lambda err: self._error(op, err)):
            await self._handle.pause()

    async def resume(self) -> None:
        """Resume a paused system."""
        op = "hcs::System::Resume"
        self._check_open(op)
        with raising(lambda err: self._error(op, err)):
            await self._handle.resume()

    async def save(self, options: schema2.SaveOptions | Document) -> None:
        """Save the system's state (SaveOptions: SaveType, SaveStateFilePath)."""
        op = "hcs::System::Save"
        self._check_open(op)
        with raising(lambda err: self._error(op, err)):
            await self._handle.save(document_text(options))

    async def wait(self) -> None:
        """Return once the system has stopped; raise the wait error when its stop is unknown (see the module
        docstring). Why it stopped is exit_error()."""
        await self._stopped.wait()
        if self._wait_error is not None:
            raise self._wait_error

    def exit_error(self) -> BaseException | None:
        """Why the system stopped: the wait error if any, else the exit error (an unexpected exit), else None.
        Raises ErrNotExited (wrapped) while the system runs."""
        if not self.stopped:
            raise self._error("hcs::System::ExitError", ErrNotExited())
        return self._wait_error or self._exit_error

    # -- queries and changes

    async def _query(self, op: str, query: str, cls: type[gojson.Struct]) -> Any:
        self._check_open(op)
        with raising(lambda err: self._error(op, err)):
            result = await self._handle.properties(query)
            if not result:
                raise ErrUnexpectedValue()
            return gojson.loads(result, cls)

    async def properties(self, *types: str) -> schema1.ContainerProperties:
        """The system's v1 properties, with the schema1.PropertyType parts asked for (Statistics, ProcessList,
        MappedVirtualDisk, GuestConnection)."""
        query = gojson.dumps(schema1.PropertyQuery(property_types=list(types)))
        props: schema1.ContainerProperties = await self._query("hcs::System::Properties", query,
                                                               schema1.ContainerProperties)
        return props

    async def properties_v2(self, *types: str) -> schema2.Properties:
        """The system's v2 properties with the schema2.PropertyType parts asked for. A Windows container's
        Statistics come from its silo job object when the backend can read it (upstream's statisticsInProc, see
        the module docstring), the rest, and Statistics when that fails, from HCS."""
        op = "hcs::System::PropertiesV2"
        self._check_open(op)
        statistics = None
        if schema2.PropertyType.STATISTICS in types and self._type == "container" and self._os == "windows" \
                and supports(self._handle, SiloHandle):
            statistics = await self._statistics_in_proc(cast(SiloHandle, self._handle))
        if statistics is None:
            return await self._properties_v2_query(op, types)
        props = schema2.Properties(id=self._id, system_type=self._type, runtime_os_type=self._os, owner=self._owner)
        rest = [t for t in types if t != schema2.PropertyType.STATISTICS]
        if rest:
            log.info("falling back to HCS for property type queries", extra={"cid": self._id, "property_types": rest})
            props = await self._properties_v2_query(op, rest)
            props.owner = self._owner
        props.statistics = statistics
        return props

    async def _properties_v2_query(self, op: str, types: Sequence[str]) -> schema2.Properties:
        query = gojson.dumps(schema2.PropertyQuery(property_types=list(types)))
        props: schema2.Properties = await self._query(op, query, schema2.Properties)
        return props

    async def _statistics_in_proc(self, handle: SiloHandle) -> schema2.Statistics | None:
        """The container's Statistics from its silo's counters; None (logged) when they cannot be read."""
        try:
            counters = await handle.silo_statistics()
        except Exception as err:
            log.warning("failed to get statistics in-proc; falling back to HCS",
                        extra={"cid": self._id, "error": str(err)})
            return None
        return _statistics_document(counters, self._start_time)

    async def properties_v3(self, query: schema2.PropertyQuery | Document) -> schema2.Properties:
        """The system's v2 properties for a full PropertyQuery (types and per-type Queries), passed as is."""
        props: schema2.Properties = await self._query("hcs::System::PropertiesV3", document_text(query),
                                                      schema2.Properties)
        return props

    async def modify(self, request: Document) -> None:
        """Change the system: a schema2.ModifySettingRequest (or a schema1 ResourceModificationRequestResponse)."""
        op = "hcs::System::Modify"
        self._check_open(op)
        with raising(lambda err: self._error(op, err)):
            await self._handle.modify(document_text(request))

    # -- processes

    async def create_process(self, params: schema2.ProcessParameters | schema1.ProcessConfig | Document) -> Process:
        """Start a process in the system; its stdio pipes (those params asked for) are Process.stdio()."""
        op = "hcs::System::CreateProcess"
        self._check_open(op)
        if isinstance(params, schema2.ProcessParameters | schema1.ProcessConfig):
            op += ": " + params.command_line
        with raising(lambda err: self._error(op, err)):
            handle, info = await self._handle.create_process(document_text(params))
            try:
                stdio = open_stdio(info)
            except BaseException:
                await handle.close()
                raise
        return Process(self, handle, info.pid, stdio)

    async def open_process(self, pid: int) -> Process:
        """Open the system's process `pid` (no stdio: see Process.stdio_legacy)."""
        op = "hcs::System::OpenProcess"
        self._check_open(op)
        with raising(lambda err: self._error(op, err)):
            handle = await self._handle.open_process(pid)
        return Process(self, handle, pid)

    async def set_cpu_group_affinities(self, affinities: Sequence[GroupAffinity]) -> None:
        """Pin the container to these processor groups and masks, on its silo's job object (HCS's container schema
        has no such setting). Call it after create and before start, so the init process joins an already pinned
        silo; a running silo takes it too. Containers only; at least one affinity."""
        op = "hcs::System::SetCPUGroupAffinities"
        self._check_open(op)
        if self._type != "container":
            raise self._error(op, Errno(ErrNotSupported, "cpu group affinities are only supported on container "
                                                         f"compute systems, got {self._type!r}"))
        if not affinities:
            raise self._error(op, ValueError("affinities must be non-empty"))
        if not supports(self._handle, SiloHandle):
            raise self._error(op, ErrNotSupported)
        with raising(lambda err: self._error(op, err)):
            await cast(SiloHandle, self._handle).set_silo_cpu_group_affinities(list(affinities))

    # -- live migration

    def _migration(self, op: str) -> MigrationHandle:
        self._check_open(op)
        if not supports(self._handle, MigrationHandle):
            raise self._error(op, ErrNotSupported)
        return cast(MigrationHandle, self._handle)

    async def _migrate(self, op: str, step: str, options: Document | None,
                       config: MigrationConfig | None = None) -> None:
        """Run the backend's migration `step` with the options document ({} for None) and, when given, the
        config's socket."""
        handle = self._migration(op)
        with raising(lambda err: self._error(op, err)):
            text = document_text(options) if options is not None else "{}"
            if config is None:
                await getattr(handle, step)(text)
            else:
                await getattr(handle, step)(text, config.socket_handle())

    async def start_with_migration_options(self, config: MigrationConfig) -> None:
        """Start the system as a live migration's destination, receiving it over config's socket (returns when HCS
        has started it); records the start time as start() does."""
        await self._migrate("hcs::System::Start", "start_migration_destination",
                            config.destination_start_options(), config)
        self._start_time = time.time()

    async def initialize_live_migration_on_source(
            self, options: schema2.MigrationInitializeOptions | Document | None = None) -> None:
        """Prepare the source system for a live migration (before start_live_migration_on_source)."""
        await self._migrate("hcs::System::InitializeLiveMigrationOnSource", "initialize_live_migration", options)

    async def start_live_migration_on_source(self, config: MigrationConfig) -> None:
        """Begin the source side of the migration over config's socket and session; returns once HCS accepted it
        (progress: migration_notifications())."""
        await self._migrate("hcs::System::StartLiveMigrationOnSource", "start_live_migration",
                            config.start_options(), config)

    async def start_live_migration_transfer(
            self, options: schema2.MigrationTransferOptions | Document | None = None) -> None:
        """Start the memory transfer phase."""
        await self._migrate("hcs::System::StartLiveMigrationTransfer", "start_live_migration_transfer", options)

    async def finalize_live_migration(
            self, options: schema2.MigrationFinalizedOptions | Document | None = None) -> None:
        """Conclude the migration on this side: MigrationFinalizedOptions says whether the system resumes or
        stops."""
        await self._migrate("hcs::System::FinalizeLiveMigration", "finalize_live_migration", options)

    async def cancel_live_migration(self, options: schema2.MigrationCancelOptions | Document | None = None) -> None:
        """Cancel the migration in flight; may run while another step is still waiting for HCS."""
        await self._migrate("hcs::System::CancelLiveMigration", "cancel_live_migration", options)

    def migration_notifications(self) -> MigrationNotifications:
        """The system's live-migration notifications from now on (hcsshim.hcs.migration), until it stops or is
        closed: an async iterator of OperationSystemMigrationNotificationInfo."""
        return MigrationNotifications(self._events.subscribe(), self._id)

    # -- closing

    async def close(self) -> None:
        """Release the handle, without stopping the system or waiting for it (idempotent); waiters are released
        with ErrAlreadyClosed when the system had not stopped."""
        async with self._close_lock:
            if self._closed:
                return
            self._closed = True
            try:
                await self._handle.close()
            finally:
                self._finish(self._error("hcs::System::Wait", ErrAlreadyClosed()))

    async def __aenter__(self) -> System:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
