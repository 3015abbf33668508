"""The guest agent facing a misbehaving host: raw bridge bytes over the `unix:` transport. Each bad input is
answered as specs/gcs-bridge.md says (an error result, or for broken framing a dropped connection that the
agent re-dials), and the agent keeps serving and ends with nothing left behind."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hcsshim import bridge
from hcsshim.bridge import BRIDGE_PORT, Decoder, Message, Requests, Rpc
from hcsshim.testing.gcsagent import GcsAgent, running_agent
from hcsshim.testing.rootfs import oci_spec
from hcsshim.transport import Conn, Transport

pytestmark = pytest.mark.integration

NULL = bridge.NULL_GUID


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[GcsAgent]:
    with running_agent(tmp_path / "agent") as a:
        yield a


class Raw:
    """A bare bridge connection: send any bytes, read whole messages."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.decoder = Decoder(max_size=None)
        self.next_id = 0

    @classmethod
    async def accept(cls, transport: Transport) -> Raw:
        listener = await transport.listen(BRIDGE_PORT)
        try:
            return cls(await asyncio.wait_for(listener.accept(), 10))
        finally:
            listener.close()

    async def send_raw(self, data: bytes) -> None:
        await self.conn.sendall(data)

    async def send(self, rpc_type: int, body: bytes | dict[str, Any]) -> int:
        id = self.next_id
        self.next_id += 1
        data = body if isinstance(body, bytes) else bridge.dumps_host(body)
        await self.conn.sendall(bridge.encode(rpc_type, id, data))
        return id

    async def recv(self, timeout: float = 10) -> Message | None:
        """The next message, or None at EOF."""
        while (msg := self.decoder.next_message()) is None:
            data = await asyncio.wait_for(self.conn.recv(), timeout)
            if not data:
                return None
            self.decoder.feed(data)
        return msg

    async def call(self, rpc: int, body: bytes | dict[str, Any]) -> tuple[Message, dict[str, Any]]:
        id = await self.send(bridge.request_type(rpc), body)
        msg = await self.recv()
        assert msg is not None, "the agent closed the connection"
        assert msg.id == id
        assert msg.type == bridge.response_type(bridge.request_type(rpc))
        return msg, msg.json()

    async def negotiate(self) -> None:
        _, body = await self.call(Rpc.NEGOTIATE_PROTOCOL, Requests.negotiate())
        assert body["Result"] == 0 and body["Version"] == 4


def run(agent: GcsAgent, scenario: Callable[[Raw, Transport], Awaitable[None]]) -> None:
    async def main() -> None:
        transport = agent.host_transport()
        raw = await Raw.accept(transport)
        try:
            await asyncio.wait_for(scenario(raw, transport), 60)
            await raw.call(Rpc.SHUTDOWN_FORCED, Requests.base(NULL))
        finally:
            raw.conn.close()
            await transport.close()

    agent.run_until_powered_off(main)


def assert_error(body: dict[str, Any], hresult: int) -> None:
    assert body["Result"] == bridge.int32(hresult), body
    assert body["ErrorRecords"][0]["Result"] == bridge.int32(hresult)
    assert body["ErrorMessage"]


def test_requests_before_negotiation_and_a_second_negotiation_get_not_implemented(agent: GcsAgent) -> None:
    async def scenario(raw: Raw, transport: Transport) -> None:
        _, body = await raw.call(Rpc.GET_PROPERTIES, Requests.properties(NULL, []))
        assert_error(body, bridge.E_NOTIMPL)
        _, body = await raw.call(Rpc.NEGOTIATE_PROTOCOL, Requests.negotiate(5, 6))
        assert_error(body, bridge.VMCOMPUTE_UNSUPPORTED_PROTOCOL_VERSION)
        await raw.negotiate()
        _, body = await raw.call(Rpc.NEGOTIATE_PROTOCOL, Requests.negotiate())
        assert_error(body, bridge.E_NOTIMPL)
        _, body = await raw.call(Rpc.GET_PROPERTIES, Requests.properties(NULL, []))
        assert body["Result"] == 0

    run(agent, scenario)


def test_invalid_json_and_unknown_types_get_error_results_on_the_same_connection(agent: GcsAgent) -> None:
    async def scenario(raw: Raw, transport: Transport) -> None:
        await raw.negotiate()
        _, body = await raw.call(Rpc.CREATE, b'{"ContainerId": "x", oops\n')
        assert_error(body, bridge.VMCOMPUTE_INVALID_JSON)
        _, body = await raw.call(Rpc.CREATE, b"[1, 2]\n")
        assert_error(body, bridge.VMCOMPUTE_INVALID_JSON)
        _, body = await raw.call(Rpc.CREATE, Requests.base("x") | {"ContainerConfig": "{not json"})
        assert_error(body, bridge.VMCOMPUTE_INVALID_JSON)
        _, body = await raw.call(Rpc.WAIT_FOR_PROCESS, Requests.base(NULL) | {"ProcessId": -1})
        assert_error(body, bridge.VMCOMPUTE_INVALID_JSON)
        for rpc in (0x00101001, Rpc.UPDATE_CONTAINER, Rpc.LIFECYCLE_NOTIFICATION, Rpc.MODIFY_SERVICE_SETTINGS):
            _, body = await raw.call(rpc, Requests.base(NULL))
            assert_error(body, bridge.E_NOTIMPL)
        id = await raw.send(0x20100901, Requests.base(NULL))  # a "response" from the host
        msg = await raw.recv()
        assert msg is not None and msg.id == id and msg.type == 0x20100901
        assert_error(msg.json(), bridge.E_NOTIMPL)
        unknown = {"RequestType": "Add", "ResourceType": "NoSuchResource", "Settings": {}}  # no class for it
        _, body = await raw.call(Rpc.MODIFY_SETTINGS, Requests.modify(unknown))
        assert_error(body, bridge.E_FAIL)
        _, body = await raw.call(Rpc.GET_PROPERTIES, Requests.properties(NULL, []))
        assert body["Result"] == 0

    run(agent, scenario)


def test_unknown_container_ids_and_a_second_create_of_an_id_are_errors(agent: GcsAgent, rootfs: str) -> None:
    async def scenario(raw: Raw, transport: Transport) -> None:
        await raw.negotiate()
        for rpc, body in ((Rpc.SHUTDOWN_GRACEFUL, Requests.base("nope")),
                          (Rpc.SHUTDOWN_FORCED, Requests.base("nope")),
                          (Rpc.EXECUTE_PROCESS, Requests.execute("nope", {"OciProcess": {"args": ["true"]}}, {})),
                          (Rpc.WAIT_FOR_PROCESS, Requests.wait("nope", 1)),
                          (Rpc.SIGNAL_PROCESS, Requests.signal("nope", 1, 9)),
                          (Rpc.GET_PROPERTIES, Requests.properties("nope", ["ProcessList"])),
                          (Rpc.DELETE_CONTAINER_STATE, Requests.base("nope"))):
            _, reply = await raw.call(rpc, body)
            assert_error(reply, bridge.VMCOMPUTE_SYSTEM_NOT_FOUND)
        _, reply = await raw.call(Rpc.WAIT_FOR_PROCESS, Requests.wait(NULL, 999999))
        assert_error(reply, bridge.ERROR_NOT_FOUND)
        bad = Requests.create("twice", str(Path(rootfs).parent / "twice"), oci_spec("/no/such/rootfs", ["true"]))
        _, reply = await raw.call(Rpc.CREATE, bad)
        assert_error(reply, bridge.E_FAIL)
        assert "create container twice: rootfs /no/such/rootfs: no such directory" in reply["ErrorMessage"]
        assert not (Path(rootfs).parent / "twice").exists()  # a failed Create leaves nothing
        create = Requests.create("twice", str(Path(rootfs).parent / "twice"), oci_spec(rootfs, ["true"]))
        _, reply = await raw.call(Rpc.CREATE, create)
        assert reply["Result"] == 0
        _, reply = await raw.call(Rpc.CREATE, create)
        assert_error(reply, bridge.VMCOMPUTE_SYSTEM_ALREADY_EXISTS)
        # the first one is intact: run it
        _, reply = await raw.call(Rpc.EXECUTE_PROCESS, Requests.execute("twice", {}, {}))
        assert reply["Result"] == 0
        _, reply = await raw.call(Rpc.WAIT_FOR_PROCESS, Requests.wait("twice", reply["ProcessId"]))
        assert reply == {"Result": 0, "ActivityId": NULL, "ExitCode": 0}
        msg = await raw.recv()
        assert msg is not None and msg.type == bridge.NOTIFY_CONTAINER and msg.id == 0
        assert json.loads(msg.body) == {"ContainerId": "twice", "ActivityId": NULL, "Type": "UnexpectedExit",
                                        "Operation": "None", "Result": 0}
        _, reply = await raw.call(Rpc.DELETE_CONTAINER_STATE, Requests.base("twice"))
        assert reply["Result"] == 0

    run(agent, scenario)


@pytest.mark.parametrize("size", [15, 0, (16 << 20) + 1], ids=["below-header", "zero", "over-limit"])
def test_a_bad_size_drops_the_connection_and_the_agent_dials_again_unnegotiated(agent: GcsAgent,
                                                                                 size: int) -> None:
    async def scenario(raw: Raw, transport: Transport) -> None:
        await raw.negotiate()
        await raw.send_raw(bridge.request_type(Rpc.GET_PROPERTIES).to_bytes(4, "little") +
                           size.to_bytes(4, "little") + bytes(8))
        assert await raw.recv() is None  # dropped
        raw.conn.close()
        again = await Raw.accept(transport)
        raw.conn, raw.decoder, raw.next_id = again.conn, again.decoder, 0
        _, body = await raw.call(Rpc.GET_PROPERTIES, Requests.properties(NULL, []))
        assert_error(body, bridge.E_NOTIMPL)
        await raw.negotiate()

    run(agent, scenario)


def test_a_host_that_disconnects_mid_request_leaves_the_agent_consistent(agent: GcsAgent, rootfs: str) -> None:
    async def scenario(raw: Raw, transport: Transport) -> None:
        await raw.negotiate()
        bundle = str(Path(rootfs).parent / "midway")
        await raw.send(bridge.request_type(Rpc.CREATE), Requests.create("midway", bundle, oci_spec(rootfs, ["true"])))
        # an ExecuteProcess whose stdio port nobody listens on, and half a message
        params = {"CommandArgs": ["true"], "CreateStdOutPipe": True}
        await raw.send(bridge.request_type(Rpc.EXECUTE_PROCESS),
                       Requests.execute(NULL, params, {"StdOut": 0x40000009}))
        frame = bridge.encode(bridge.request_type(Rpc.GET_PROPERTIES), 99,
                              bridge.dumps_host(Requests.properties(NULL, [])))
        await raw.send_raw(frame[:20])
        raw.conn.close()
        again = await Raw.accept(transport)
        raw.conn, raw.decoder, raw.next_id = again.conn, again.decoder, 0
        await raw.negotiate()
        _, body = await raw.call(Rpc.GET_PROPERTIES, Requests.properties("midway", ["ProcessList"]))
        if body["Result"] == 0:  # the Create completed: the container is there, created, and can be removed
            _, body = await raw.call(Rpc.SHUTDOWN_FORCED, Requests.base("midway"))
            assert body["Result"] == 0
        else:
            assert_error(body, bridge.VMCOMPUTE_SYSTEM_NOT_FOUND)
        _, body = await raw.call(Rpc.GET_PROPERTIES, Requests.properties(NULL, ["ProcessList"]))
        assert body["Result"] == 0

    run(agent, scenario)


def test_exit_notifications_produced_while_disconnected_are_sent_on_the_next_connection(agent: GcsAgent,
                                                                                        rootfs: str) -> None:
    async def scenario(raw: Raw, transport: Transport) -> None:
        await raw.negotiate()
        bundle = str(Path(rootfs).parent / "queued")
        _, body = await raw.call(Rpc.CREATE, Requests.create("queued", bundle, oci_spec(rootfs, ["sleep", "0.3"])))
        assert body["Result"] == 0
        _, body = await raw.call(Rpc.EXECUTE_PROCESS, Requests.execute("queued", {}, {}))
        await raw.send(bridge.request_type(Rpc.WAIT_FOR_PROCESS), Requests.wait("queued", body["ProcessId"]))
        raw.conn.close()
        await asyncio.sleep(0.8)  # the init exits while no host is connected
        again = await Raw.accept(transport)
        raw.conn, raw.decoder, raw.next_id = again.conn, again.decoder, 0
        msg = await raw.recv()  # first thing on the new connection, before negotiation
        assert msg is not None and msg.type == bridge.NOTIFY_CONTAINER
        assert msg.json()["ContainerId"] == "queued"
        await raw.negotiate()
        _, body = await raw.call(Rpc.DELETE_CONTAINER_STATE, Requests.base("queued"))
        assert body["Result"] == 0

    run(agent, scenario)
