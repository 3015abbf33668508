"""The port multiplexer (docs/transport-mux.md) on its own: the frame codec, and two sessions over a pipe pair."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hcsshim.transport.mux import (
    CONNECT,
    DATA,
    HEADER,
    MAX_PAYLOAD,
    FrameDecoder,
    MuxProtocolError,
    MuxTransport,
    encode_frame,
)

frames = st.lists(st.tuples(st.integers(1, 8), st.integers(0, 0xFFFFFFFF), st.binary(max_size=200)), max_size=20)


@given(fs=frames, cut=st.integers(1, 50))
def test_frames_decode_back_from_any_split(fs: list[tuple[int, int, bytes]], cut: int) -> None:
    stream = b"".join(encode_frame(t, s, p) for t, s, p in fs)
    d = FrameDecoder()
    out = []
    for i in range(0, len(stream), cut):
        d.feed(stream[i:i + cut])
        while (f := d.next_frame()) is not None:
            out.append(f)
    assert out == fs


def test_a_bad_magic_an_unknown_type_or_an_oversized_frame_is_fatal() -> None:
    for data in (b"\x00" + encode_frame(DATA, 1, b"x")[1:], HEADER.pack(0xB7, 99, 0, 1, 0),
                 HEADER.pack(0xB7, DATA, 0, 1, MAX_PAYLOAD + 1)):
        d = FrameDecoder()
        d.feed(data)
        with pytest.raises(MuxProtocolError):
            d.next_frame()
    with pytest.raises(ValueError):
        encode_frame(DATA, 1, bytes(MAX_PAYLOAD + 1))


def pair_run(scenario: Callable[[MuxTransport, MuxTransport], Awaitable[None]]) -> None:
    """Run scenario(host, guest) with two sessions joined by a pipe pair."""

    async def main() -> None:
        a_r, b_w = os.pipe()
        b_r, a_w = os.pipe()
        host = MuxTransport(a_r, a_w, role="host")
        guest = MuxTransport(b_r, b_w, role="guest")
        await host.start()
        await guest.start()
        try:
            await asyncio.wait_for(scenario(host, guest), 30)
        finally:
            await guest.close()
            await host.close()

    asyncio.run(main())


def test_the_guest_dials_a_port_the_host_listens_on_and_data_flows_both_ways() -> None:
    async def scenario(host: MuxTransport, guest: MuxTransport) -> None:
        listener = await host.listen(0x40000000)
        g = await guest.dial(0x40000000)
        h = await listener.accept()
        assert h.port == 0x40000000
        await g.sendall(b"ping")
        assert await h.recv() == b"ping"
        await h.sendall(b"pong")
        assert await g.recv() == b"pong"
        g.write_eof()
        assert await h.recv() == b""
        await h.sendall(b"still open the other way")
        h.write_eof()
        assert await g.recv_all() == b"still open the other way"
        g.close()
        h.close()
        listener.close()

    pair_run(scenario)


def test_dialing_a_port_nobody_listens_on_is_refused_after_the_retries() -> None:
    async def scenario(host: MuxTransport, guest: MuxTransport) -> None:
        with pytest.raises(ConnectionRefusedError, match="0x40000005"):
            await guest.dial(0x40000005, retries=2, delay=0.01)

    pair_run(scenario)


def test_a_dial_succeeds_once_the_listener_appears_within_the_retries() -> None:
    async def scenario(host: MuxTransport, guest: MuxTransport) -> None:
        dial = asyncio.create_task(guest.dial(7, retries=50, delay=0.01))
        await asyncio.sleep(0.05)
        listener = await host.listen(7)
        conn = await dial
        accepted = await listener.accept()
        await conn.sendall(b"x")
        assert await accepted.recv() == b"x"
        listener.close()

    pair_run(scenario)


def test_megabytes_flow_through_the_credit_window_intact() -> None:
    data = os.urandom(8 << 20)

    async def scenario(host: MuxTransport, guest: MuxTransport) -> None:
        listener = await host.listen(1)
        g = await guest.dial(1)
        h = await listener.accept()

        async def send() -> None:
            await g.sendall(data)
            g.write_eof()

        _, got = await asyncio.gather(send(), h.recv_all())
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()

    pair_run(scenario)


def test_a_stream_nobody_reads_does_not_block_the_others() -> None:
    async def scenario(host: MuxTransport, guest: MuxTransport) -> None:
        listener = await host.listen(1)
        stuck = await guest.dial(1)
        await listener.accept()  # never read
        blocked = asyncio.create_task(stuck.sendall(bytes(1 << 20)))
        await asyncio.sleep(0.05)
        assert not blocked.done()  # out of credit
        other = await guest.dial(1)
        other_h = await listener.accept()
        await other.sendall(b"through")
        assert await other_h.recv() == b"through"
        blocked.cancel()

    pair_run(scenario)


def test_closing_a_stream_resets_it_for_the_peer() -> None:
    async def scenario(host: MuxTransport, guest: MuxTransport) -> None:
        listener = await host.listen(3)
        g = await guest.dial(3)
        h = await listener.accept()
        h.close()
        assert await g.recv() == b""
        await asyncio.sleep(0.01)
        with pytest.raises(BrokenPipeError):
            await g.sendall(b"x")

    pair_run(scenario)


def test_many_streams_interleave() -> None:
    async def scenario(host: MuxTransport, guest: MuxTransport) -> None:
        listeners = [await host.listen(100 + i) for i in range(20)]

        async def one(i: int) -> bytes:
            c = await guest.dial(100 + i)
            await c.sendall(f"stream {i}".encode() * 1000)
            c.write_eof()
            return await c.recv_all()

        async def echo(i: int) -> None:
            h = await listeners[i].accept()
            data = await h.recv_all()
            await h.sendall(data[::-1])
            h.write_eof()

        results = await asyncio.gather(*(one(i) for i in range(20)), *(echo(i) for i in range(20)))
        for i in range(20):
            assert results[i] == (f"stream {i}".encode() * 1000)[::-1]

    pair_run(scenario)


def test_a_restarted_peer_resets_the_open_streams() -> None:
    async def scenario(host: MuxTransport, guest: MuxTransport) -> None:
        listener = await host.listen(9)
        g = await guest.dial(9)
        h = await listener.accept()
        guest._send(1, 0, (1).to_bytes(4, "little"))  # a second HELLO: the guest "restarted"
        assert await h.recv() == b""
        listener.close()
        g.close()

    pair_run(scenario)


def test_the_peer_going_away_resets_everything_and_fails_dials() -> None:
    async def scenario(host: MuxTransport, guest: MuxTransport) -> None:
        listener = await host.listen(9)
        g = await guest.dial(9)
        await listener.accept()
        await host.close()
        assert await g.recv() == b""
        await asyncio.sleep(0.01)
        with pytest.raises(OSError):
            await guest.dial(9, retries=0)

    pair_run(scenario)


def test_a_connect_with_the_wrong_parity_is_refused() -> None:
    async def scenario(host: MuxTransport, guest: MuxTransport) -> None:
        await host.listen(5)
        seen = []
        orig = guest._on_frame

        def spy(type: int, stream: int, payload: bytes) -> None:
            seen.append((type, stream))
            orig(type, stream, payload)

        guest._on_frame = spy  # type: ignore[method-assign]
        guest._send(CONNECT, 4, (5).to_bytes(4, "little"))  # even = a host id, sent by the guest
        await asyncio.sleep(0.05)
        assert (4, 4) in seen  # REFUSE

    pair_run(scenario)
