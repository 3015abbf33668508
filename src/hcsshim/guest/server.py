"""The guest end of one bridge connection: read, negotiate, dispatch each request concurrently, answer.

Owns the per-connection rules of specs/gcs-bridge.md:

* one reader cuts the stream into messages (`bridge.Decoder`, with a 16 MiB sanity limit; a size below 16
  or above the limit is fatal for the connection, which is then closed so that the agent re-dials);
* each request runs in its own task; one writer lock serializes whole messages; every response carries the
  request's id and the response form of the request's type, and stays within the host's 64 KiB limit;
* a fresh connection is un-negotiated: every request but NegotiateProtocol gets E_NOTIMPL, and once
  negotiated a second NegotiateProtocol gets E_NOTIMPL too;
* unknown types, invalid JSON and failing handlers are answered with an error result (HRESULT +
  ErrorRecords), never by dropping the connection;
* container-exit notifications are sent at once when a connection is up, else queued and sent as soon as
  the next connection is established (`Notifier`).

`Connection` states: open (un-negotiated) --NegotiateProtocol--> negotiated --EOF/error/close--> closed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from hcsshim import bridge
from hcsshim.bridge import (
    E_FAIL,
    E_NOTIMPL,
    MAX_MESSAGE_SIZE,
    NOTIFY_CONTAINER,
    NULL_GUID,
    PROTOCOL_VERSION,
    VMCOMPUTE_INVALID_JSON,
    VMCOMPUTE_UNSUPPORTED_PROTOCOL_VERSION,
    Decoder,
    HResultError,
    Message,
    ProtocolError,
    Rpc,
    field,
)
from hcsshim.bridge.resources import ContainerConstraints, ModificationRequest, NetworkAdapter, PodCgroupMemoryLimit
from hcsshim.guest import hoststate
from hcsshim.guest.containers import Guest
from hcsshim.guest.process import TaskSet
from hcsshim.guest.runcinfo import runc_errors
from hcsshim.guest.storage import Storage
from hcsshim.transport.base import Conn

log = logging.getLogger(__name__)

GUEST_MAX_INCOMING = 16 << 20  # sanity limit for host -> guest messages (the Go guest has none)
_MAX_ERROR_TEXT = 8192

Handler = Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any]]]


class Notifier:
    """Container-exit notifications: sent on the live connection, or queued until the next one."""

    def __init__(self) -> None:
        self.queue: collections.deque[dict[str, Any]] = collections.deque()
        self.connection: Connection | None = None
        self._flushing = False

    def notify(self, container_id: str, exit_type: str, activity_id: str) -> None:
        body = bridge.container_notification(container_id, exit_type, activity_id)
        log.info("container exit notification", extra={"container": container_id, "type": exit_type})
        self.queue.append(body)
        self.flush()

    def flush(self) -> None:
        conn = self.connection
        if conn is None or conn.closed or self._flushing or not self.queue:
            return
        self._flushing = True
        conn._tasks.spawn(self._drain(conn), "notifications")

    async def _drain(self, conn: Connection) -> None:
        """Send queued notifications in order; one stays queued until it was written whole."""
        try:
            while self.queue and not conn.closed:
                if not await conn.send(NOTIFY_CONTAINER, 0, self.queue[0]):
                    break
                self.queue.popleft()
        finally:
            self._flushing = False


class Connection:
    """Serves one bridge connection (see the module docstring). `serve()` returns at EOF or a fatal error."""

    def __init__(self, conn: Conn, guest: Guest, notifier: Notifier, *,
                 on_power_off: Callable[[], None] | None = None) -> None:
        self.conn = conn
        self.guest = guest
        self.notifier = notifier
        self.on_power_off = on_power_off or (lambda: None)
        self.negotiated = False
        self.closed = False
        self._tasks = TaskSet()  # sends: cancelled on close
        self._requests = TaskSet()  # other requests: finished on close, so the guest's state stays whole
        self._handlers: dict[int, Handler] = {
            Rpc.CREATE: lambda cid, act, body: guest.create(cid, act, body),
            Rpc.START: lambda cid, act, body: guest.start_container(cid),
            Rpc.SHUTDOWN_GRACEFUL: lambda cid, act, body: self._shutdown(cid, forced=False),
            Rpc.SHUTDOWN_FORCED: lambda cid, act, body: self._shutdown(cid, forced=True),
            Rpc.EXECUTE_PROCESS: lambda cid, act, body: guest.execute(cid, body),
            Rpc.WAIT_FOR_PROCESS: lambda cid, act, body: guest.wait(cid, body),
            Rpc.SIGNAL_PROCESS: lambda cid, act, body: guest.signal(cid, body),
            Rpc.RESIZE_CONSOLE: lambda cid, act, body: guest.resize(cid, body),
            Rpc.GET_PROPERTIES: lambda cid, act, body: guest.properties(cid, body),
            Rpc.MODIFY_SETTINGS: self._modify,
            Rpc.DUMP_STACKS: self._dump_stacks,
            Rpc.DELETE_CONTAINER_STATE: lambda cid, act, body: guest.delete_state(cid),
        }

    async def serve(self) -> None:
        decoder = Decoder(max_size=GUEST_MAX_INCOMING)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.notifier.connection = self
        self.notifier.flush()

        def consume(data: bytes) -> None:
            if done.done():
                return
            if not data:
                log.info("bridge: host closed the connection")
                done.set_result(None)
                return
            decoder.feed(data)
            try:
                while (msg := decoder.next_message()) is not None:
                    self._dispatch(msg)
            except ProtocolError as e:
                log.error("bridge: fatal protocol error, closing the connection", extra={"error": str(e)})
                done.set_result(None)

        try:
            set_consumer = getattr(self.conn, "set_consumer", None)
            if set_consumer is not None:  # bytes straight from the event loop: no wake-up per message
                set_consumer(consume)
                await done
            else:
                while not done.done():
                    consume(await self.conn.recv())
        except OSError as e:
            log.error("bridge: connection failed", extra={"error": str(e)})
        finally:
            await self.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.notifier.connection is self:
            self.notifier.connection = None
        self.conn.close()
        await self._tasks.close()
        while self._requests._tasks:
            await asyncio.gather(*list(self._requests._tasks), return_exceptions=True)

    def _dispatch(self, msg: Message) -> None:
        if msg.kind != bridge.KIND_REQUEST:
            self.send_later(bridge.response_type(msg.type), msg.id, bridge.error_body(
                E_NOTIMPL, f"bridge: unexpected {bridge.type_name(msg.type)} from the host"))
            return
        rpc = msg.type & 0x0FFFFFFF
        if rpc == Rpc.NEGOTIATE_PROTOCOL and not self.negotiated:
            self._negotiate(msg)  # synchronously: the version applies to every later request
            return
        if not self.negotiated:
            self.send_later(bridge.response_type(msg.type), msg.id, bridge.error_body(
                E_NOTIMPL, f"{bridge.type_name(msg.type)}: the protocol has not been negotiated"))
            return
        handler = self._handlers.get(rpc)
        if handler is None:
            self.send_later(bridge.response_type(msg.type), msg.id, bridge.error_body(
                E_NOTIMPL, f"{bridge.type_name(msg.type)} is not supported"))
            return
        # A WaitForProcess outlives its connection (owned by the guest, like the Go GCS's goroutine): it still
        # obtains the exit code, which releases the container's notification to the next connection.
        owner = self.guest.tasks if rpc == Rpc.WAIT_FOR_PROCESS else self._requests
        owner.spawn_eager(self._handle(msg, handler), lambda: f"request-{msg.id}-{bridge.type_name(msg.type)}")

    def _negotiate(self, msg: Message) -> None:
        rtype = bridge.response_type(msg.type)
        try:
            body = _request_body(msg)
            lo = field(body, "MinimumVersion", "uint32")
            hi = field(body, "MaximumVersion", "uint32")
            activity = field(body, "ActivityId") or NULL_GUID
            if hi < PROTOCOL_VERSION or lo > PROTOCOL_VERSION:
                raise HResultError(VMCOMPUTE_UNSUPPORTED_PROTOCOL_VERSION,
                                   f"negotiate protocol: versions {lo}..{hi} do not include {PROTOCOL_VERSION}")
        except HResultError as e:
            self.send_later(rtype, msg.id, bridge.error_body(e.hresult, e.message))
            return
        self.negotiated = True
        state = field(body, "HostState", dict)
        if state and self.guest.sync_host_state:
            hoststate.apply(state)
        self.send_later(rtype, msg.id, bridge.negotiate_response(activity, min(PROTOCOL_VERSION, hi)))

    async def _handle(self, msg: Message, handler: Handler) -> None:
        rtype = bridge.response_type(msg.type)
        activity = NULL_GUID
        try:
            body = _request_body(msg)
            activity = field(body, "ActivityId") or NULL_GUID
            if not bridge.is_guid(activity):
                activity = NULL_GUID
            result = await handler(field(body, "ContainerId"), activity, body)
            reply = bridge.response(activity, **result)
        except HResultError as e:
            log.info("request failed", extra={"request": bridge.type_name(msg.type), "id": msg.id,
                                               "error": e.message})
            reply = bridge.error_body(e.hresult, _clip(e.message), activity)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug or an unexpected OS error: still answer
            log.exception("request %s failed", bridge.type_name(msg.type))
            reply = bridge.error_body(E_FAIL, _clip(f"{bridge.type_name(msg.type)}: {e}"), activity)
        await self.send(rtype, msg.id, reply)

    async def send(self, type: int, id: int, body: dict[str, Any]) -> bool:
        """Write one message; False when the connection is closed or the write failed."""
        data = bridge.dumps_guest(body)
        if bridge.HEADER_SIZE + len(data) > MAX_MESSAGE_SIZE:
            log.error("response too large for the host, replaced by an error",
                      extra={"type": bridge.type_name(type), "size": len(data)})
            data = bridge.dumps_guest(bridge.error_body(E_FAIL, f"{bridge.type_name(type)}: response of "
                                                        f"{len(data)} bytes exceeds the 64 KiB limit"))
        frame = bridge.encode(type, id, data)
        if self.closed:
            return False
        try:
            await self.conn.send_frame(frame)
        except OSError as e:
            log.warning("bridge: write failed", extra={"error": str(e)})
            return False
        return True

    def send_later(self, type: int, id: int, body: dict[str, Any]) -> None:
        """Queue a message behind the ones being written (order of calls = order on the wire)."""
        self._tasks.spawn(self.send(type, id, body), f"send-{id}")

    async def _shutdown(self, cid: str, *, forced: bool) -> dict[str, Any]:
        if cid == NULL_GUID:
            log.info("power off requested by the host", extra={"forced": forced})
            asyncio.get_running_loop().call_soon(self.on_power_off)
            return {}
        return await self.guest.shutdown_container(cid, forced)

    async def _modify(self, cid: str, activity: str, body: dict[str, Any]) -> dict[str, Any]:
        raw = field(body, "Request", dict)
        if raw is None:
            raise HResultError(VMCOMPUTE_INVALID_JSON, "modify settings: no Request")
        request = ModificationRequest.from_json(raw)  # typed settings for every resource type we know
        resource, settings = request.resource_type, request.settings
        if cid != NULL_GUID:
            if not isinstance(settings, ContainerConstraints):
                raise HResultError(E_FAIL, f"modify container {cid}: resource {resource!r} is not supported")
            c = self.guest.container(cid, "modify container constraints")
            with runc_errors(f"update container {cid}"):
                await self.guest.runc.update(c.id, settings.linux)
            return {}
        if isinstance(settings, NetworkAdapter):
            await self.guest.networks.modify(request)
        elif resource in Storage.RESOURCE_TYPES:
            await self.guest.storage.modify(request)
        elif isinstance(settings, PodCgroupMemoryLimit):
            pass  # the pods cgroup has no limit here; nothing to recompute
        else:
            raise HResultError(E_FAIL, f"modify settings: resource type {resource!r} is not supported")
        return {}

    async def _dump_stacks(self, cid: str, activity: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.guest.dump_stacks()


def _request_body(msg: Message) -> dict[str, Any]:
    body = msg.json()
    if not isinstance(body, dict):
        raise HResultError(VMCOMPUTE_INVALID_JSON, f"{bridge.type_name(msg.type)}: body is not a JSON object")
    return body


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_TEXT else text[:_MAX_ERROR_TEXT] + "..."

