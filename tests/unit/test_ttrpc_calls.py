"""ttrpc client and server over real unix sockets: concurrency, errors, deadlines, metadata, bad peers, close."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from hcsshim.api.ttrpc.request_pb2 import KeyValue
from hcsshim.testing.sockets import unix_exchange
from hcsshim.ttrpc import Client, Code, ConnectionClosed, Server, TtrpcError

SERVICE = "test.Echo"


class Echo:
    """A test service: KeyValue in, KeyValue out."""

    def __init__(self) -> None:
        self.seen_metadata: dict[str, list[str]] = {}

    def methods(self):
        return {"Echo": (KeyValue, self.echo), "Slow": (KeyValue, self.slow), "Fail": (KeyValue, self.fail),
                "Crash": (KeyValue, self.crash), "Meta": (KeyValue, self.meta)}

    async def echo(self, ctx, req: KeyValue) -> KeyValue:
        return KeyValue(key=req.key, value=req.value)

    async def slow(self, ctx, req: KeyValue) -> KeyValue:
        await asyncio.sleep(float(req.value))
        return KeyValue(key="slow")

    async def fail(self, ctx, req: KeyValue) -> KeyValue:
        raise TtrpcError(Code.NOT_FOUND, "thing x: not found")

    async def crash(self, ctx, req: KeyValue) -> KeyValue:
        raise RuntimeError("boom")

    async def meta(self, ctx, req: KeyValue) -> KeyValue:
        self.seen_metadata = ctx.metadata
        return KeyValue()


def serve(tmp_path: Path, body) -> None:
    async def main() -> None:
        server = Server()
        service = Echo()
        server.register(SERVICE, service.methods())
        path = str(tmp_path / "s.sock")
        serving = asyncio.ensure_future(server.serve_path(path))
        await asyncio.sleep(0.01)
        try:
            await body(server, service, path)
        finally:
            await server.close()
            await serving
        assert not (tmp_path / "s.sock").exists()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())


def test_a_slow_call_does_not_hold_up_a_fast_one_on_the_same_connection(tmp_path: Path) -> None:
    async def body(server, service, path):
        client = await Client.connect(path)
        slow = asyncio.ensure_future(client.call(SERVICE, "Slow", KeyValue(value="0.3"), KeyValue))
        await asyncio.sleep(0.01)
        fast = await client.call(SERVICE, "Echo", KeyValue(key="k", value="v"), KeyValue)
        assert (fast.key, fast.value) == ("k", "v")
        assert not slow.done()
        assert (await slow).key == "slow"
        await client.close()

    serve(tmp_path, body)


def test_unknown_services_and_methods_are_unimplemented(tmp_path: Path) -> None:
    async def body(server, service, path):
        client = await Client.connect(path)
        with pytest.raises(TtrpcError) as e:
            await client.call("no.Such", "Echo", KeyValue(), KeyValue)
        assert (e.value.code, e.value.message) == (Code.UNIMPLEMENTED, "service no.Such")
        with pytest.raises(TtrpcError) as e:
            await client.call(SERVICE, "Nope", KeyValue(), KeyValue)
        assert (e.value.code, e.value.message) == (Code.UNIMPLEMENTED, "method Nope")
        await client.close()

    serve(tmp_path, body)


def test_handler_errors_reach_the_caller_with_their_code(tmp_path: Path) -> None:
    async def body(server, service, path):
        client = await Client.connect(path)
        with pytest.raises(TtrpcError) as e:
            await client.call(SERVICE, "Fail", KeyValue(), KeyValue)
        assert (e.value.code, e.value.message) == (Code.NOT_FOUND, "thing x: not found")
        with pytest.raises(TtrpcError) as e:
            await client.call(SERVICE, "Crash", KeyValue(), KeyValue)
        assert (e.value.code, e.value.message) == (Code.UNKNOWN, "boom")
        await client.close()

    serve(tmp_path, body)


def test_a_deadline_is_enforced_on_both_sides(tmp_path: Path) -> None:
    async def body(server, service, path):
        client = await Client.connect(path)
        with pytest.raises(TtrpcError) as e:
            await client.call(SERVICE, "Slow", KeyValue(value="5"), KeyValue, timeout=0.1)
        assert e.value.code == Code.DEADLINE_EXCEEDED
        # the server cancelled the handler at its deadline too: the connection is still fine
        assert (await client.call(SERVICE, "Echo", KeyValue(key="a"), KeyValue)).key == "a"
        await client.close()

    serve(tmp_path, body)


def test_metadata_reaches_the_handler(tmp_path: Path) -> None:
    async def body(server, service, path):
        client = await Client.connect(path)
        await client.call(SERVICE, "Meta", KeyValue(), KeyValue,
                          metadata={"containerd-namespace-ttrpc": "default", "Multi": ["a", "b"]})
        assert service.seen_metadata == {"containerd-namespace-ttrpc": ["default"], "multi": ["a", "b"]}
        await client.close()

    serve(tmp_path, body)


def test_large_payloads_pass_up_to_the_limit(tmp_path: Path) -> None:
    async def body(server, service, path):
        client = await Client.connect(path)
        big = "x" * (3900 * 1024)
        assert len((await client.call(SERVICE, "Echo", KeyValue(value=big), KeyValue)).value) == len(big)
        await client.close()

    serve(tmp_path, body)


@pytest.mark.parametrize("garbage", [
    b"\x00\x00\x00",                                              # short header, then EOF
    struct.pack(">IIBB", 64 << 20, 1, 1, 0) + b"x" * 64,          # declared length far over the limit
    struct.pack(">IIBB", 4, 1, 1, 0) + b"\xff\xff\xff\xff",        # a Request envelope that is not protobuf
])
def test_malformed_input_closes_only_that_connection(tmp_path: Path, garbage: bytes) -> None:
    async def body(server, service, path):
        client = await Client.connect(path)
        reply = await asyncio.get_running_loop().run_in_executor(None, unix_exchange, path, garbage)
        assert reply == b""
        assert (await client.call(SERVICE, "Echo", KeyValue(key="still"), KeyValue)).key == "still"
        await client.close()

    serve(tmp_path, body)


def test_an_even_stream_id_is_an_invalid_argument(tmp_path: Path) -> None:
    from hcsshim.ttrpc import decode_response, encode_request
    from hcsshim.ttrpc.codec import FrameDecoder

    async def body(server, service, path):
        reply = await asyncio.get_running_loop().run_in_executor(
            None, unix_exchange, path, encode_request(2, SERVICE, "Echo", b""))
        dec = FrameDecoder()
        dec.receive_data(reply)
        frame = dec.next_frame()
        assert frame is not None and frame.stream_id == 2
        assert decode_response(frame).status.code == Code.INVALID_ARGUMENT

    serve(tmp_path, body)


def test_pending_calls_fail_with_connection_closed_when_the_server_goes(tmp_path: Path) -> None:
    async def body(server, service, path):
        client = await Client.connect(path)
        pending = asyncio.ensure_future(client.call(SERVICE, "Slow", KeyValue(value="10"), KeyValue))
        await asyncio.sleep(0.05)
        await server.close()
        with pytest.raises(ConnectionClosed):
            await pending
        with pytest.raises(ConnectionClosed):
            await client.call(SERVICE, "Echo", KeyValue(), KeyValue)
        await client.close()

    serve(tmp_path, body)
