"""ttrpc client and server on real unix sockets: concurrency, errors, deadlines, metadata, bad peers."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import struct
import tempfile
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest

from hcsshim.api.google.rpc.status_pb2 import Status
from hcsshim.api.ttrpc.request_pb2 import KeyValue, Request, Response
from hcsshim.ttrpc import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    TYPE_REQUEST,
    Client,
    Code,
    ConnectionClosed,
    Handler,
    RequestContext,
    Server,
    TtrpcError,
    encode_frame,
    encode_request,
    not_found,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

SERVICE = "test.Echo"


class Echo:
    """A test service with KeyValue as both request and response; it records what it sees."""

    def __init__(self) -> None:
        self.contexts: list[RequestContext] = []
        self.cancelled: list[str] = []
        self.started: dict[str, asyncio.Event] = {}
        self.server: Server | None = None

    def methods(self) -> dict[str, tuple[type[KeyValue], Handler]]:
        return {name: (KeyValue, getattr(self, name.lower()))
                for name in ("Echo", "Slow", "Hang", "Fail", "Crash", "Big", "Context", "Stop")}

    async def echo(self, ctx: RequestContext, req: KeyValue) -> KeyValue:
        return KeyValue(key=req.key, value=req.value)

    async def slow(self, ctx: RequestContext, req: KeyValue) -> KeyValue:
        await asyncio.sleep(float(req.value))
        return KeyValue(key=req.key, value="slept")

    async def hang(self, ctx: RequestContext, req: KeyValue) -> KeyValue:
        self.contexts.append(ctx)
        self.started.setdefault(req.key, asyncio.Event()).set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(req.key)
            raise
        raise AssertionError("unreachable")

    async def fail(self, ctx: RequestContext, req: KeyValue) -> KeyValue:
        raise not_found(f"task {req.value}")

    async def crash(self, ctx: RequestContext, req: KeyValue) -> KeyValue:
        raise RuntimeError(f"crashed on {req.value}")

    async def big(self, ctx: RequestContext, req: KeyValue) -> KeyValue:
        return KeyValue(value="x" * int(req.value))

    async def context(self, ctx: RequestContext, req: KeyValue) -> KeyValue:
        self.contexts.append(ctx)
        return KeyValue(key=ctx.method)

    async def stop(self, ctx: RequestContext, req: KeyValue) -> KeyValue:
        assert self.server is not None
        await self.server.close()
        return KeyValue(key="stopped")


def run(coro: Awaitable[None], timeout: float = 20.0) -> None:
    """Run a test body on a fresh loop; it must leave no task behind."""

    async def main() -> None:
        async with asyncio.timeout(timeout):
            await coro
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())


@pytest.fixture
def sock_dir() -> Iterator[str]:
    # Short on purpose: sun_path holds 108 bytes and pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="ttrpc-")
    yield path
    shutil.rmtree(path)


def listen(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(16)
    return sock


@asynccontextmanager
async def serving(path: str, echo: Echo | None = None) -> AsyncIterator[tuple[Server, Echo]]:
    """A server with the Echo service on `path`; closed (and its serve() task awaited) on exit."""
    echo = echo or Echo()
    server = Server()
    echo.server = server
    server.register(SERVICE, echo.methods())
    task = asyncio.create_task(server.serve(listen(path)))
    try:
        yield server, echo
    finally:
        await server.close()
        await task


async def call(client: Client, method: str, key: str = "", value: str = "", **kw: object) -> KeyValue:
    return await client.call(SERVICE, method, KeyValue(key=key, value=value), KeyValue, **kw)  # type: ignore


async def raw_exchange(path: str, data: bytes, answers: int = 1) -> list[tuple[int, Response]]:
    """Send raw bytes on a fresh connection and read `answers` Response frames: (stream id, Response)."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(data)
    out = []
    try:
        for _ in range(answers):
            length, stream_id, type_, _ = struct.unpack(">IIBB", await reader.readexactly(HEADER_SIZE))
            assert type_ == 2
            out.append((stream_id, Response.FromString(await reader.readexactly(length))))
        return out
    finally:
        writer.close()
        await writer.wait_closed()


@asynccontextmanager
async def fake_server(path: str, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                  Awaitable[None]]) -> AsyncIterator[None]:
    """A misbehaving peer for the client: serves one connection with `handler`, awaited on exit."""
    listener = listen(path)
    listener.setblocking(False)

    async def accept_one() -> None:
        conn, _ = await asyncio.get_running_loop().sock_accept(listener)
        reader, writer = await asyncio.open_unix_connection(sock=conn)
        try:
            await handler(reader, writer)
            await reader.read()  # until the client closes
        finally:
            writer.close()
            await writer.wait_closed()

    task = asyncio.create_task(accept_one())
    try:
        yield
    finally:
        await task
        listener.close()


# --- calls ----------------------------------------------------------------------------------------

def test_a_call_returns_the_handlers_answer(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path) as (server, _):
            async with await Client.connect(path, timeout=5) as client:
                assert await call(client, "Echo", "k", "v") == KeyValue(key="k", value="v")
                assert await call(client, "Echo") == KeyValue()
                assert server.connections == 1
            assert client.closed

    run(body())


def test_a_slow_call_does_not_block_fast_calls_on_the_same_connection(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path):
            client = await Client.connect(path)
            done: list[str] = []

            async def one(method: str, key: str, value: str) -> None:
                await call(client, method, key, value)
                done.append(key)

            async with asyncio.TaskGroup() as tg:
                tg.create_task(one("Slow", "slow", "0.5"))
                await asyncio.sleep(0.05)
                for i in range(10):
                    tg.create_task(one("Echo", f"fast{i}", ""))
            assert done == [f"fast{i}" for i in range(10)] + ["slow"]
            await client.close()

    run(body())


def test_answers_are_matched_to_their_calls_when_they_arrive_out_of_order(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path):
            client = await Client.connect(path)
            delays = [0.3, 0.0, 0.2, 0.1, 0.25, 0.05]
            calls = [call(client, "Slow", f"k{i}", str(d)) for i, d in enumerate(delays)]
            answers = await asyncio.gather(*calls)
            assert [a.key for a in answers] == [f"k{i}" for i in range(len(delays))]
            await client.close()

    run(body())


def test_unknown_services_and_methods_are_unimplemented(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path):
            client = await Client.connect(path)
            with pytest.raises(TtrpcError) as exc:
                await client.call("no.Such", "Echo", KeyValue(), KeyValue)
            assert (exc.value.code, str(exc.value)) == (Code.UNIMPLEMENTED, "service no.Such")
            with pytest.raises(TtrpcError) as exc:
                await call(client, "Nope")
            assert (exc.value.code, str(exc.value)) == (Code.UNIMPLEMENTED, "method Nope")
            await client.close()

    run(body())


def test_a_handlers_ttrpc_error_reaches_the_caller_with_its_code_and_message(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path):
            client = await Client.connect(path)
            with pytest.raises(TtrpcError) as exc:
                await call(client, "Fail", value="c1")
            assert (exc.value.code, exc.value.message) == (Code.NOT_FOUND, "task c1: not found")
            await client.close()

    run(body())


def test_an_unexpected_exception_is_unknown_and_logged_with_its_traceback(
        sock_dir: str, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path):
            client = await Client.connect(path)
            with pytest.raises(TtrpcError) as exc:
                await call(client, "Crash", value="purpose")
            assert (exc.value.code, str(exc.value)) == (Code.UNKNOWN, "crashed on purpose")
            assert await call(client, "Echo", "still", "up") == KeyValue(key="still", value="up")
            await client.close()

    with caplog.at_level(logging.ERROR, logger="hcsshim.ttrpc"):
        run(body())
    (record,) = [r for r in caplog.records if r.name == "hcsshim.ttrpc"]
    assert record.levelno == logging.ERROR
    assert "test.Echo/Crash" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


def test_a_payload_that_does_not_decode_is_internal(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path):
            ((stream_id, resp),) = await raw_exchange(path, encode_request(1, SERVICE, "Echo", b"\xff\xff"))
            assert stream_id == 1
            assert resp.status.code == Code.INTERNAL
            assert resp.status.message.startswith("ttrpc: error unmarshalling payload: ")

    run(body())


def test_metadata_and_peer_credentials_reach_the_handler(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path) as (_, echo):
            client = await Client.connect(path)
            md = {"Containerd-Namespace-Ttrpc": "default", "multi": ["a", "b"]}
            assert (await call(client, "Context", metadata=md)).key == "Context"
            assert (await call(client, "Context", timeout=30)).key == "Context"
            await client.close()
        first, second = echo.contexts
        assert first.metadata == {"containerd-namespace-ttrpc": ["default"], "multi": ["a", "b"]}
        assert (first.service, first.method, first.stream_id, first.deadline) == (SERVICE, "Context", 1, None)
        assert first.peer == (os.getpid(), os.getuid(), os.getgid())
        assert (second.stream_id, second.metadata) == (3, {})
        assert second.deadline is not None

    run(body())


def test_a_call_timeout_is_deadline_exceeded_for_the_caller_and_cancels_the_handler(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path) as (_, echo):
            client = await Client.connect(path)
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(TtrpcError) as exc:
                await call(client, "Hang", "h", timeout=0.2)
            assert exc.value.code == Code.DEADLINE_EXCEEDED
            assert 0.15 < loop.time() - start < 2
            (ctx,) = echo.contexts
            assert ctx.deadline is not None and ctx.deadline - start < 0.3
            for _ in range(100):
                if echo.cancelled:
                    break
                await asyncio.sleep(0.01)
            assert echo.cancelled == ["h"]
            assert await call(client, "Echo", "after") == KeyValue(key="after")
            await client.close()

    run(body())


def test_the_server_answers_deadline_exceeded_when_timeout_nano_expires(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path) as (_, echo):
            request = encode_request(5, SERVICE, "Hang", KeyValue(key="h").SerializeToString(),
                                     timeout_nano=100_000_000)
            ((stream_id, resp),) = await raw_exchange(path, request)
            assert stream_id == 5
            assert resp.status.code == Code.DEADLINE_EXCEEDED
            assert resp.status.message == "test.Echo/Hang: context deadline exceeded"
            assert echo.cancelled == ["h"]

    run(body())


def test_payloads_up_to_the_limit_pass_and_larger_ones_are_refused(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path):
            client = await Client.connect(path)
            big = "y" * (39 * MAX_MESSAGE_SIZE // 40)  # 3.9 MiB
            assert (await call(client, "Echo", value=big)).value == big
            assert len((await call(client, "Big", value=str(len(big)))).value) == len(big)
            with pytest.raises(TtrpcError) as exc:
                await call(client, "Echo", value="z" * MAX_MESSAGE_SIZE)
            assert exc.value.code == Code.RESOURCE_EXHAUSTED
            with pytest.raises(TtrpcError) as exc:
                await call(client, "Big", value=str(MAX_MESSAGE_SIZE))
            assert exc.value.code == Code.RESOURCE_EXHAUSTED
            assert await call(client, "Echo", "ok") == KeyValue(key="ok")
            await client.close()

    run(body())


def test_an_even_stream_id_is_invalid_and_unknown_frame_types_are_ignored(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path):
            echo = KeyValue(key="e").SerializeToString()
            data = (encode_request(2, SERVICE, "Echo", echo) + encode_frame(9, 3, b"data frame")
                    + encode_frame(11, 77, b"future type") + encode_request(7, SERVICE, "Echo", echo))
            (even, ok) = await raw_exchange(path, data, 2)
            assert (even[0], even[1].status.code) == (2, Code.INVALID_ARGUMENT)
            assert even[1].status.message == "StreamID must be odd for client initiated streams"
            assert ok[0] == 7 and not ok[1].HasField("status")
            assert KeyValue.FromString(ok[1].payload).key == "e"

    run(body())


def test_eof_from_the_peer_closes_the_connection_and_cancels_its_handlers(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path) as (server, echo):
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(encode_request(1, SERVICE, "Hang", KeyValue(key="h").SerializeToString()))
            for _ in range(100):
                if "h" in echo.started:
                    break
                await asyncio.sleep(0.01)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await writer.wait_closed()
            assert echo.cancelled == ["h"]
            assert server.connections == 0

    run(body())


# --- bad peers ------------------------------------------------------------------------------------

def header(length: int) -> bytes:
    return struct.pack(">IIBB", length, 3, TYPE_REQUEST, 0)


# name: (bytes sent, then EOF?, what the logged error says)
BAD_INPUTS = {
    "short header then EOF": (header(5)[:6], True, "middle of a frame"),
    "EOF inside a body": (header(50) + b"\x0a\x01", True, "middle of a frame"),
    "huge declared length": (header(0xFFFFFFF0), False, "exceeds the limit"),
    "length one over the limit": (header(MAX_MESSAGE_SIZE + 1) + b"\0" * 100, False, "exceeds the limit"),
    "garbage protobuf request": (
        encode_frame(3, TYPE_REQUEST, b"\xff\xff\xff\xff garbage"), False, "invalid request envelope"),
}


@pytest.mark.parametrize(("bad", "eof", "reason"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_malformed_input_closes_only_that_connection(sock_dir: str, bad: bytes, eof: bool, reason: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path) as (server, echo):
            good = await Client.connect(path)
            pending = asyncio.create_task(call(good, "Slow", "pending", "0.3"))
            reader, writer = await asyncio.open_unix_connection(path)
            # A request in flight on the bad connection, to be cancelled with it.
            writer.write(encode_request(1, SERVICE, "Hang", KeyValue(key="bad").SerializeToString()))
            for _ in range(100):
                if "bad" in echo.started:
                    break
                await asyncio.sleep(0.01)
            writer.write(bad)
            if eof:
                writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server, no answer
            writer.close()
            await writer.wait_closed()
            assert echo.cancelled == ["bad"]
            assert await call(good, "Echo", "good") == KeyValue(key="good")
            assert (await pending).value == "slept"
            assert server.connections == 1
            await good.close()

    with caplog.at_level(logging.ERROR, logger="hcsshim.ttrpc"):
        run(body())
    errors = [r.getMessage() for r in caplog.records if r.name == "hcsshim.ttrpc"]
    assert len(errors) == 1
    assert f"peer pid {os.getpid()}" in errors[0]
    assert reason in errors[0]


def test_a_client_disconnecting_mid_request_cancels_its_handlers_quietly(
        sock_dir: str, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path) as (server, echo):
            client = await Client.connect(path)
            calls = [asyncio.create_task(call(client, "Hang", f"h{i}")) for i in range(3)]
            for _ in range(100):
                if len(echo.started) == 3:
                    break
                await asyncio.sleep(0.01)
            await client.close()
            for task in calls:
                with pytest.raises(ConnectionClosed):
                    await task
            for _ in range(100):
                if server.connections == 0 and server.in_flight == 0:
                    break
                await asyncio.sleep(0.01)
            assert sorted(echo.cancelled) == ["h0", "h1", "h2"]
            assert (server.connections, server.in_flight) == (0, 0)

    with caplog.at_level(logging.DEBUG, logger="hcsshim.ttrpc"):
        run(body())
    assert [r for r in caplog.records if r.name == "hcsshim.ttrpc"] == []


# --- closing --------------------------------------------------------------------------------------

def test_pending_and_later_calls_fail_with_connection_closed_when_the_server_closes(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path) as (server, echo):
            client = await Client.connect(path)
            closes: list[str] = []
            client.add_close_callback(lambda: closes.append("closed"))
            pending = asyncio.create_task(call(client, "Hang", "h"))
            for _ in range(100):
                if "h" in echo.started:
                    break
                await asyncio.sleep(0.01)
            await server.close()
            with pytest.raises(ConnectionClosed) as exc:
                await pending
            assert (exc.value.code, str(exc.value)) == (Code.UNAVAILABLE, "ttrpc: closed")
            with pytest.raises(ConnectionClosed):
                await call(client, "Echo")
            assert client.closed and closes == ["closed"]
            await client.close()
            assert closes == ["closed"]
            late: list[str] = []
            client.add_close_callback(lambda: late.append("now"))
            assert late == ["now"]

    run(body())


def test_close_with_grace_lets_in_flight_calls_finish(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path) as (server, echo):
            client = await Client.connect(path)
            slow = asyncio.create_task(call(client, "Slow", "s", "0.2"))
            hang = asyncio.create_task(call(client, "Hang", "h"))
            await asyncio.sleep(0.05)
            await server.close(grace=1.0)
            assert (await slow).value == "slept"
            with pytest.raises(ConnectionClosed):
                await hang
            assert echo.cancelled == ["h"]
            await client.close()

    run(body())


def test_a_handler_may_close_the_server_and_still_answer(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path) as (server, _):
            client = await Client.connect(path)
            assert (await call(client, "Stop")).key == "stopped"
            assert server.closed
            await client.close()

    run(body())


def test_close_is_idempotent_and_leaves_no_tasks_and_no_connections(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        server = Server()
        echo = Echo()
        server.register(SERVICE, echo.methods())
        serve = asyncio.create_task(server.serve(listen(path)))
        clients = [await Client.connect(path) for _ in range(3)]
        calls = [asyncio.create_task(call(c, "Hang", f"h{i}")) for i, c in enumerate(clients)]
        await asyncio.sleep(0.05)
        assert server.connections == 3
        await asyncio.gather(server.close(), server.close())
        await server.close()
        await serve
        assert server.connections == 0
        assert sorted(echo.cancelled) == ["h0", "h1", "h2"]
        for c, t in zip(clients, calls, strict=True):
            with pytest.raises(ConnectionClosed):
                await t
            await c.close()
        assert os.path.exists(path), "serve() must not remove a socket file it did not create"
        with pytest.raises(ConnectionRefusedError, match=f"ttrpc: connect {path}"):
            await Client.connect(path)

    run(body())


def test_serve_path_creates_and_removes_only_its_own_socket_file(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/served.sock"
        other = f"{sock_dir}/keep.txt"
        with open(other, "w") as f:
            f.write("mine")
        server = Server()
        server.register(SERVICE, Echo().methods())
        serve = asyncio.create_task(server.serve_path(path))
        for _ in range(100):
            if os.path.exists(path):
                break
            await asyncio.sleep(0.01)
        client = await Client.connect(path)
        assert await call(client, "Echo", "x") == KeyValue(key="x")
        await client.close()
        await server.close()
        await serve
        assert sorted(os.listdir(sock_dir)) == ["keep.txt"]

    run(body())


def test_cancelling_serve_closes_the_server(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        server = Server()
        server.register(SERVICE, Echo().methods())
        serve = asyncio.create_task(server.serve_path(path))
        await asyncio.sleep(0.05)
        client = await Client.connect(path)
        serve.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serve
        assert server.closed and not os.path.exists(path)
        with pytest.raises(ConnectionClosed):
            await call(client, "Echo")
        await client.close()

    run(body())


def test_connecting_to_a_missing_socket_names_the_path(sock_dir: str) -> None:
    async def body() -> None:
        with pytest.raises(FileNotFoundError, match=f"ttrpc: connect {sock_dir}/absent"):
            await Client.connect(f"{sock_dir}/absent", timeout=1)

    run(body())


def test_a_client_works_on_an_already_connected_socket(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"
        async with serving(path):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            client = await Client.from_socket(sock)
            assert await call(client, "Echo", "x") == KeyValue(key="x")
            await client.close()
            assert sock.fileno() == -1

    run(body())


def test_a_garbage_answer_closes_the_client_with_connection_closed(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"

        async def bad_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readexactly(HEADER_SIZE)
            writer.write(struct.pack(">IIBB", MAX_MESSAGE_SIZE + 1, 1, 2, 0))

        async with fake_server(path, bad_server):
            client = await Client.connect(path)
            with pytest.raises(ConnectionClosed, match="exceeds the limit"):
                await call(client, "Echo")
            await client.close()

    run(body())


def test_an_error_status_with_details_is_still_an_error(sock_dir: str) -> None:
    async def body() -> None:
        path = f"{sock_dir}/s"

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            header = await reader.readexactly(HEADER_SIZE)
            length, stream_id, _, _ = struct.unpack(">IIBB", header)
            req = Request.FromString(await reader.readexactly(length))
            st = Status(code=Code.FAILED_PRECONDITION, message=f"{req.method}: nope")
            st.details.add(type_url="x", value=b"y")
            writer.write(encode_frame(stream_id, 2, Response(status=st).SerializeToString()))

        async with fake_server(path, answer):
            client = await Client.connect(path)
            with pytest.raises(TtrpcError) as exc:
                await call(client, "Echo")
            assert (exc.value.code, str(exc.value)) == (Code.FAILED_PRECONDITION, "Echo: nope")
            await client.close()

    run(body())
