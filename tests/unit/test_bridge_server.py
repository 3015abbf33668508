"""The guest's bridge server in-process (no runc involved): negotiation, error results for anything
malformed, and the eager request tasks it runs handlers with."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hcsshim import bridge
from hcsshim.bridge import Decoder, Message, Requests, Rpc
from hcsshim.guest.containers import Guest
from hcsshim.guest.process import TaskSet
from hcsshim.guest.server import Connection, Notifier
from hcsshim.transport import SocketConn, UnixTransport


def serve(tmp: Path, scenario: Callable[[socket.socket], Awaitable[None]]) -> None:
    """Serve one Connection (Guest not started: requests that need runc fail) on a socket pair."""

    async def main() -> None:
        a, b = socket.socketpair()
        guest = Guest(str(tmp / "root"), UnixTransport(str(tmp)))
        conn = Connection(await SocketConn.open(b), guest, Notifier())
        server = asyncio.create_task(conn.serve())
        a.setblocking(False)
        try:
            await asyncio.wait_for(scenario(a), 20)
        finally:
            a.close()
            await asyncio.wait_for(server, 5)

    asyncio.run(main())


async def call(sock: socket.socket, type: int, id: int, body: bytes, decoder: Decoder) -> Message:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, bridge.encode(type, id, body))
    while (msg := decoder.next_message()) is None:
        data = await loop.sock_recv(sock, 65536)
        assert data, "the server closed the connection"
        decoder.feed(data)
    return msg


def test_negotiation_then_a_no_op_request_round_trips(tmp_path: Path) -> None:
    async def scenario(sock: socket.socket) -> None:
        d = Decoder()
        msg = await call(sock, bridge.request_type(Rpc.NEGOTIATE_PROTOCOL), 0,
                         bridge.dumps_host(Requests.negotiate()), d)
        assert msg.type == 0x20100B01 and msg.id == 0
        assert msg.body == bridge.dumps_guest(bridge.negotiate_response())
        msg = await call(sock, bridge.request_type(Rpc.GET_PROPERTIES), 1,
                         bridge.dumps_host(Requests.properties(bridge.NULL_GUID, ["ProcessList"])), d)
        assert msg.json() == {"Result": 0, "ActivityId": bridge.NULL_GUID, "Properties": '{"ProcessList":[]}'}

    serve(tmp_path, scenario)


rpcs = st.sampled_from([Rpc.CREATE, Rpc.START, Rpc.WAIT_FOR_PROCESS, Rpc.SIGNAL_PROCESS, Rpc.RESIZE_CONSOLE,
                        Rpc.GET_PROPERTIES, Rpc.MODIFY_SETTINGS, Rpc.DELETE_CONTAINER_STATE, Rpc.DUMP_STACKS,
                        Rpc.UPDATE_CONTAINER, 0x00107701, Rpc.SHUTDOWN_FORCED])
json_values = st.recursive(st.none() | st.booleans() | st.integers(-(1 << 40), 1 << 40) | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=3), max_leaves=8)
bodies = st.one_of(st.binary(max_size=64), json_values.map(bridge.dumps_host),
                   st.dictionaries(st.sampled_from(["ContainerId", "ProcessId", "Query", "Request", "Options",
                                                    "TimeoutInMs", "Height", "ContainerConfig"]),
                                   json_values, max_size=4).map(bridge.dumps_host))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(st.tuples(rpcs, bodies), min_size=1, max_size=6))
def test_any_request_gets_exactly_one_response_with_its_id_and_an_int32_result(
        tmp_path: Path, requests: list[tuple[int, bytes]]) -> None:
    async def scenario(sock: socket.socket) -> None:
        d = Decoder()
        await call(sock, bridge.request_type(Rpc.NEGOTIATE_PROTOCOL), 0, bridge.dumps_host(Requests.negotiate()), d)
        for i, (rpc, body) in enumerate(requests, start=1):
            if rpc == Rpc.SHUTDOWN_FORCED:
                body = bridge.dumps_host(Requests.base("no-such-container"))
            msg = await call(sock, bridge.request_type(rpc), i, body, d)
            assert msg.id == i and msg.type == bridge.response_type(bridge.request_type(rpc))
            reply: Any = msg.json()
            assert -(1 << 31) <= reply["Result"] < (1 << 31)
            if reply["Result"] != 0:
                assert reply["ErrorRecords"][0]["Result"] == reply["Result"]
            assert len(msg.body) + 16 <= bridge.MAX_MESSAGE_SIZE

    serve(tmp_path, scenario)


def test_eager_tasks_finish_inline_or_continue_and_cancel_like_tasks() -> None:
    async def main() -> None:
        tasks = TaskSet()
        log: list[str] = []

        async def quick() -> None:
            log.append("quick")

        async def slow(gate: asyncio.Event) -> None:
            log.append("slow started")
            try:
                await gate.wait()
                log.append("slow done")
            except asyncio.CancelledError:
                log.append("slow cancelled")
                raise

        assert tasks.spawn_eager(quick(), lambda: "quick") is None
        assert log == ["quick"]
        gate = asyncio.Event()
        t = tasks.spawn_eager(slow(gate), lambda: "slow")
        assert t is not None and log == ["quick", "slow started"]
        gate.set()
        await t
        assert log[-1] == "slow done"
        t = tasks.spawn_eager(slow(asyncio.Event()), lambda: "slow2")
        await tasks.close()
        assert t is not None and t.cancelled() and log[-1] == "slow cancelled"

    asyncio.run(main())
