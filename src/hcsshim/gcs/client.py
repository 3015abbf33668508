"""The host end of the bridge: `GuestConnection` (one bridge connection), `Container` and `Process`.

GuestConnection states: accepted --negotiate (v4)--> ready --close / EOF / protocol error--> closed.
One sender lock writes whole requests (ids from 0, one per request); one receiver task routes responses by
id and container-exit notifications to their `Container`. Like the Go host, a message the host cannot
accept (bad size, unknown response id, a notification for a container nobody waits on or a second one,
anything of kind Request) tears the bridge down: every pending call then fails with `BridgeClosed` and
every container is marked exited. Synchronous RPCs time out after `rpc_timeout` (5 minutes), which also
tears the bridge down; WaitForProcess has no timeout.

Container states: created --start_init--> running --exit notification--> exited --delete_state--> deleted
(shutdown/terminate ask the guest to stop it; `wait()` returns the notification's exit type).

Process: stdio connections are accepted on fresh ports (listened on before ExecuteProcess, each closed
after its one connection); `wait()` is the one WaitForProcess sent right after the process started.
Follow the stdio rules: half-close stdin at end of input (`close_stdin`), and close stdout/stderr after
reading their EOF (`read_all` and `communicate` do) or the guest never reports the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal as _signal
import time
from typing import Any

from hcsshim import bridge
from hcsshim.bridge import (
    BRIDGE_PORT,
    ERROR_NOT_FOUND,
    MAX_MESSAGE_SIZE,
    NOTIFY_CONTAINER,
    NULL_GUID,
    PROTOCOL_VERSION,
    STDIO_PORT_BASE,
    VMCOMPUTE_SYSTEM_NOT_FOUND,
    Decoder,
    HResultError,
    ProtocolError,
    Requests,
    Rpc,
    field,
    inner_json,
)
from hcsshim.bridge.resources import ModificationRequest, Resource
from hcsshim.transport.base import Conn, Listener, Transport

__all__ = ["BridgeClosed", "Container", "GuestConnection", "Process"]

log = logging.getLogger(__name__)

RPC_TIMEOUT = 300.0
STDIO_ACCEPT_TIMEOUT = 30.0


class BridgeClosed(ConnectionError):
    """The bridge connection is closed (by either side or after a protocol error); the reason is kept."""


class GuestConnection:
    """One bridge connection to a guest agent (see the module docstring)."""

    def __init__(self, conn: Conn, transport: Transport, *, guest_root: str = "/run/gcs",
                 rpc_timeout: float = RPC_TIMEOUT) -> None:
        self.conn = conn
        self.transport = transport
        self.guest_root = guest_root
        self.rpc_timeout = rpc_timeout
        self.capabilities: dict[str, Any] = {}
        self.state = "accepted"
        self.close_reason: str | None = None
        self._next_id = 0
        self._next_port = STDIO_PORT_BASE
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiting: dict[str, Container] = {}  # containers awaiting their exit notification
        self._receiver: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, transport: Transport, *, timeout: float = 120.0, port: int = BRIDGE_PORT,
                      guest_root: str = "/run/gcs", rpc_timeout: float = RPC_TIMEOUT,
                      hostname: str | None = None) -> GuestConnection:
        """Listen on the bridge port, accept the guest's one connection, close the listener, negotiate.

        With `hostname`, the negotiation also carries the host's state (clock, entropy and that hostname, see
        bridge.host_state), which a utility VM's GCS applies: a VM restored from a template needs it."""
        listener = await transport.listen(port)
        try:
            conn = await asyncio.wait_for(listener.accept(), timeout)
        except TimeoutError:
            raise TimeoutError(f"connect to the guest: no connection on port {port:#x} within {timeout} s") from None
        finally:
            listener.close()
        gc = cls(conn, transport, guest_root=guest_root, rpc_timeout=rpc_timeout)
        gc.start()
        try:
            await gc.negotiate(hostname=hostname)
        except BaseException:
            await gc.close()
            raise
        return gc

    def start(self) -> None:
        """Start the receiver (connect() does this)."""
        if self._receiver is None:
            self._receiver = asyncio.create_task(self._receive(), name="gcs-bridge-receiver")

    async def __aenter__(self) -> GuestConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the wire -------------------------------------------------------------------------------------

    async def _receive(self) -> None:
        decoder = Decoder(max_size=MAX_MESSAGE_SIZE)
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def consume(data: bytes) -> None:
            if done.done():
                return
            if not data:
                done.set_result("the guest closed the bridge")
                return
            try:
                decoder.feed(data)
                while (msg := decoder.next_message()) is not None:
                    self._route(msg)
            except (ProtocolError, HResultError) as e:
                log.error("bridge: protocol error: %s", e)
                done.set_result(f"protocol error: {e}")

        reason = "the bridge was closed"
        try:
            set_consumer = getattr(self.conn, "set_consumer", None)
            if set_consumer is not None:  # responses routed straight from the event loop
                set_consumer(consume)
                reason = await done
            else:
                while not done.done():
                    consume(await self.conn.recv())
                reason = done.result()
        except OSError as e:
            reason = f"bridge read failed: {e}"
        finally:
            self._teardown(reason)

    def _route(self, msg: bridge.Message) -> None:
        if msg.kind == bridge.KIND_RESPONSE:
            fut = self._pending.pop(msg.id, None)
            if fut is None:
                raise ProtocolError(f"{bridge.type_name(msg.type)} with unknown id {msg.id}")
            body = msg.json()
            if not isinstance(body, dict):
                raise ProtocolError(f"{bridge.type_name(msg.type)} id {msg.id}: body is not an object")
            if not fut.done():
                fut.set_result(body)
            return
        if msg.kind == bridge.KIND_NOTIFICATION and msg.type == NOTIFY_CONTAINER:
            body = msg.json()
            cid = field(body, "ContainerId")
            activity = field(body, "ActivityId")
            if not bridge.is_guid(activity):
                raise ProtocolError(f"container notification for {cid}: invalid ActivityId {activity!r}")
            container = self._waiting.pop(cid, None)
            if container is None:
                raise ProtocolError(f"container notification for {cid}, which is not awaiting one")
            container._exited(field(body, "Type"))
            return
        raise ProtocolError(f"unexpected {bridge.type_name(msg.type)} from the guest")

    def _teardown(self, reason: str) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self.close_reason = reason
        self.conn.close()
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(BridgeClosed(reason))
        waiting, self._waiting = self._waiting, {}
        for c in waiting.values():
            c._exited("BridgeClosed")

    async def request(self, rpc: int, body: dict[str, Any], operation: str, *, timeout: float | None = -1.0
                      ) -> dict[str, Any]:
        """Send one request and return its successful response body (HResultError for an error result).

        timeout -1 = the connection's rpc_timeout (its expiry tears the bridge down), None = no timeout."""
        if self.state == "closed":
            raise BridgeClosed(f"{operation}: {self.close_reason}")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        id = self._next_id
        self._next_id += 1
        self._pending[id] = fut
        try:
            await self.conn.send_frame(bridge.encode(bridge.request_type(rpc), id, bridge.dumps_host(body)))
        except OSError as e:
            self._pending.pop(id, None)
            self._teardown(f"bridge write failed: {e}")
            raise BridgeClosed(f"{operation}: {e}") from e
        limit = self.rpc_timeout if timeout == -1.0 else timeout
        timer = None if limit is None else loop.call_later(limit, self._expire, id, operation, limit)
        try:
            reply = await fut
        except BridgeClosed as e:
            raise BridgeClosed(f"{operation}: {e}") from None
        finally:
            if timer is not None:
                timer.cancel()
        return bridge.raise_for_result(reply, operation)

    def _expire(self, id: int, operation: str, limit: float) -> None:
        fut = self._pending.get(id)
        if fut is not None and not fut.done():
            fut.set_exception(TimeoutError(f"{operation}: no response within {limit} s; the bridge was closed"))
            self._teardown(f"{operation}: no response within {limit} s")

    # --- connection-wide requests -----------------------------------------------------------------------

    async def negotiate(self, *, hostname: str | None = None) -> None:
        state = None if hostname is None else bridge.host_state(time.time_ns(), os.urandom(64), hostname)
        reply = await self.request(Rpc.NEGOTIATE_PROTOCOL, Requests.negotiate(host_state=state),
                                   "negotiate protocol")
        version = field(reply, "Version", "uint32")
        if version != PROTOCOL_VERSION:
            raise HResultError(bridge.VMCOMPUTE_UNSUPPORTED_PROTOCOL_VERSION,
                               f"negotiate protocol: the guest chose version {version}")
        caps = field(reply, "Capabilities", dict)
        if caps is None or field(caps, "GuestDefinedCapabilities", dict) is None:
            raise HResultError(bridge.VMCOMPUTE_INVALID_JSON, "negotiate protocol: no guest capabilities")
        self.capabilities = caps
        self.state = "ready"

    async def modify(self, resource: Resource, request_type: str = "Add", *, container_id: str = NULL_GUID) -> None:
        """ModifySettings with one typed guest resource (hcsshim.bridge.resources): request_type Add, Remove or
        Update; container_id for a container's ContainerConstraints, else the UVM itself."""
        modification = ModificationRequest.of(resource, request_type)
        where = f" of container {container_id}" if container_id != NULL_GUID else ""
        await self.request(Rpc.MODIFY_SETTINGS, Requests.modify(modification, container_id),
                           f"{request_type.lower()} {modification.resource_type}{where}")

    async def properties(self, types: list[str], *, container_id: str = NULL_GUID) -> dict[str, Any]:
        """GetProperties: the decoded Properties object ({} when empty)."""
        reply = await self.request(Rpc.GET_PROPERTIES, Requests.properties(container_id, types),
                                   f"get properties of {container_id}")
        return inner_json(field(reply, "Properties"), "Properties") or {}

    async def dump_stacks(self) -> str:
        reply = await self.request(Rpc.DUMP_STACKS, Requests.base(NULL_GUID), "dump stacks")
        return field(reply, "GuestStacks")

    async def shutdown(self, *, forced: bool = False) -> None:
        """Power the guest off (ShutdownGraceful/Forced on the UVM); the guest then closes the bridge."""
        rpc = Rpc.SHUTDOWN_FORCED if forced else Rpc.SHUTDOWN_GRACEFUL
        await self.request(rpc, Requests.base(NULL_GUID), "shut down the guest")

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Until the guest closes the bridge (after a power-off)."""
        if self._receiver is not None:
            await asyncio.wait_for(asyncio.shield(self._receiver), timeout)

    async def close(self) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._receiver
        self._teardown("the bridge was closed")

    # --- containers and processes ------------------------------------------------------------------------

    async def create_container(self, container_id: str, spec: dict[str, Any], *, bundle: str | None = None,
                               scratch: str = "") -> Container:
        """Create: the guest prepares the bundle (default <guest_root>/c/<id>) and runs `runc create`."""
        bundle = bundle or f"{self.guest_root.rstrip('/')}/c/{container_id}"
        container = Container(self, container_id)
        if container_id in self._waiting:
            raise HResultError(bridge.VMCOMPUTE_SYSTEM_ALREADY_EXISTS,
                               f"create container {container_id}: already created on this connection")
        self._waiting[container_id] = container
        try:
            await self.request(Rpc.CREATE, Requests.create(container_id, bundle, spec, scratch),
                               f"create container {container_id}")
        except BaseException:
            if self._waiting.get(container_id) is container:
                del self._waiting[container_id]
            raise
        return container

    async def exec_in_uvm(self, args: list[str], *, env: dict[str, str] | None = None, cwd: str = "/",
                          stdin: bool = False, stdout: bool = True, stderr: bool = True,
                          terminal: bool = False) -> Process:
        """Run a process in the guest, outside any container."""
        params: dict[str, Any] = {"CommandArgs": args, "WorkingDirectory": cwd,
                                  "Environment": {k: v for k, v in (env or {}).items() if v}}
        if terminal:
            params["EmulateConsole"] = True
        return await self._execute(NULL_GUID, params, stdin, stdout, stderr and not terminal,
                                   f"run {args[0] if args else '?'} in the guest")

    def _port(self) -> int:
        port = self._next_port
        self._next_port += 1
        return port

    async def _execute(self, container_id: str, params: dict[str, Any], stdin: bool, stdout: bool,
                       stderr: bool, operation: str) -> Process:
        listeners: dict[str, Listener] = {}
        accepts: dict[str, asyncio.Task[Conn]] = {}
        ports: dict[str, int] = {}
        try:
            for key, want, flag in (("StdIn", stdin, "CreateStdInPipe"), ("StdOut", stdout, "CreateStdOutPipe"),
                                    ("StdErr", stderr, "CreateStdErrPipe")):
                if want:
                    params[flag] = True
                    port = self._port()
                    listeners[key] = await self.transport.listen(port)
                    ports[key] = port
                    accepts[key] = asyncio.create_task(listeners[key].accept(), name=f"accept-{port:#x}")
            reply = await self.request(Rpc.EXECUTE_PROCESS, Requests.execute(container_id, params, ports), operation)
            pid = field(reply, "ProcessId", "uint32")
            conns: dict[str, Conn] = {}
            for key, task in accepts.items():
                try:
                    conns[key] = await asyncio.wait_for(asyncio.shield(task), STDIO_ACCEPT_TIMEOUT)
                except TimeoutError:
                    raise TimeoutError(f"{operation}: the guest did not connect {key.lower()}") from None
        except BaseException:
            for task in accepts.values():
                task.cancel()
                with contextlib.suppress(BaseException):
                    (await task).close()
            raise
        finally:
            for listener in listeners.values():
                listener.close()
        process = Process(self, container_id, pid, conns.get("StdIn"), conns.get("StdOut"), conns.get("StdErr"))
        process._start_wait()
        return process


class Container:
    """A container in the guest (see the module docstring for its states)."""

    def __init__(self, gc: GuestConnection, id: str) -> None:
        self.gc = gc
        self.id = id
        self.state = "created"
        self.exit_type: str | None = None
        self._exit = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"Container({self.id}, {self.state})"

    def _exited(self, exit_type: str) -> None:
        self.state = "exited"
        self.exit_type = exit_type
        if not self._exit.done():
            self._exit.set_result(exit_type)

    async def start(self) -> None:
        await self.gc.request(Rpc.START, Requests.base(self.id), f"start container {self.id}")

    async def start_init(self, *, stdin: bool = False, stdout: bool = True, stderr: bool = True,
                         terminal: bool = False) -> Process:
        """Start then ExecuteProcess without OciProcess: runs the spec's process (the container starts)."""
        await self.start()
        p = await self.gc._execute(self.id, {}, stdin, stdout, stderr and not terminal,
                                   f"start the init of container {self.id}")
        self.state = "running" if self.state == "created" else self.state
        return p

    async def exec(self, process: dict[str, Any], *, stdin: bool = False, stdout: bool = True,
                   stderr: bool = True) -> Process:
        """Run an OCI process spec (args, env, cwd, terminal, user...) in the running container."""
        process = {"cwd": "/", "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   **process}
        terminal = bool(process.get("terminal"))
        return await self.gc._execute(self.id, {"OciProcess": process}, stdin, stdout, stderr and not terminal,
                                      f"exec {process.get('args', ['?'])[0]} in container {self.id}")

    async def properties(self, types: list[str] | None = None) -> dict[str, Any]:
        return await self.gc.properties(types or ["ProcessList"], container_id=self.id)

    async def _shutdown(self, rpc: int, what: str) -> None:
        try:
            await self.gc.request(rpc, Requests.base(self.id), f"{what} container {self.id}")
        except HResultError as e:
            if e.hresult != VMCOMPUTE_SYSTEM_NOT_FOUND:  # already gone counts as done
                raise

    async def shutdown(self) -> None:
        """ShutdownGraceful: SIGTERM to the init; returns at once (wait() for the exit)."""
        await self._shutdown(Rpc.SHUTDOWN_GRACEFUL, "shut down")

    async def terminate(self) -> None:
        """ShutdownForced: SIGKILL to the init."""
        await self._shutdown(Rpc.SHUTDOWN_FORCED, "terminate")

    async def wait(self, timeout: float | None = None) -> str:
        """The exit type of the container's exit notification (UnexpectedExit, GracefulExit, ForcedExit)."""
        return await asyncio.wait_for(asyncio.shield(self._exit), timeout)

    async def delete_state(self) -> None:
        await self.gc.request(Rpc.DELETE_CONTAINER_STATE, Requests.base(self.id),
                              f"delete state of container {self.id}")
        self.state = "deleted"


class Process:
    """A process in the guest: its pid, stdio connections (None when not requested) and exit code."""

    def __init__(self, gc: GuestConnection, container_id: str, pid: int, stdin: Conn | None,
                 stdout: Conn | None, stderr: Conn | None) -> None:
        self.gc = gc
        self.container_id = container_id
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.exit_code: int | None = None
        self._wait: asyncio.Task[int] | None = None

    def __repr__(self) -> str:
        return f"Process(pid {self.pid} in {self.container_id}, exit_code={self.exit_code})"

    def _start_wait(self) -> None:
        self._wait = asyncio.create_task(self._wait_for_exit(), name=f"wait-{self.pid}")
        self._wait.add_done_callback(_retrieve)

    async def _wait_for_exit(self) -> int:
        try:
            reply = await self.gc.request(Rpc.WAIT_FOR_PROCESS, Requests.wait(self.container_id, self.pid),
                                          f"wait for process {self.pid}", timeout=None)
            code = field(reply, "ExitCode", "uint32")
        except HResultError as e:
            if e.hresult != ERROR_NOT_FOUND:
                raise
            code = 0  # like the Go host: "not found" means it has exited
        self.exit_code = code
        return code

    async def wait(self, timeout: float | None = None) -> int:
        """The exit code (128+signal when killed); requires stdout/stderr to be read and closed."""
        assert self._wait is not None
        return await asyncio.wait_for(asyncio.shield(self._wait), timeout)

    async def signal(self, sig: int) -> bool:
        """Send a signal; False when the process was already gone (ERROR_NOT_FOUND)."""
        try:
            await self.gc.request(Rpc.SIGNAL_PROCESS, Requests.signal(self.container_id, self.pid, int(sig)),
                                  f"signal process {self.pid} with {int(sig)}")
        except HResultError as e:
            if e.hresult == ERROR_NOT_FOUND:
                return False
            raise
        return True

    async def kill(self) -> bool:
        return await self.signal(_signal.SIGKILL)

    async def resize(self, height: int, width: int) -> None:
        await self.gc.request(Rpc.RESIZE_CONSOLE, Requests.resize(self.container_id, self.pid, height, width),
                              f"resize console of process {self.pid}")

    def close_stdin(self) -> None:
        """End of input: half-close stdin (the process reads EOF)."""
        if self.stdin is not None:
            self.stdin.write_eof()

    async def read_all(self, name: str = "stdout") -> bytes:
        """All of stdout (or stderr) until EOF, then the connection is closed (as the guest requires)."""
        conn = getattr(self, name)
        if conn is None:
            return b""
        try:
            return await conn.recv_all()
        finally:
            conn.close()

    async def communicate(self, input: bytes | None = None) -> tuple[bytes, bytes]:
        """Write input (then half-close stdin), read stdout and stderr to EOF; returns (stdout, stderr)."""

        async def feed() -> None:
            if self.stdin is None:
                return
            try:
                if input:
                    await self.stdin.sendall(input)
            finally:
                self.stdin.write_eof()

        _, out, err = await asyncio.gather(feed(), self.read_all("stdout"), self.read_all("stderr"))
        return out, err

    def close(self) -> None:
        for conn in (self.stdin, self.stdout, self.stderr):
            if conn is not None:
                conn.close()


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a background wait's failure as seen (it is raised to whoever awaits wait())."""
    if not task.cancelled():
        task.exception()

