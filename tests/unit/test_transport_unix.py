"""The unix: transport (port P = the socket DIR/P, the host listens, the guest dials) and transport strings."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from hcsshim.transport import FdConn, UnixTransport, open_transport
from hcsshim.transport.mux import MuxTransport


def test_port_p_is_the_socket_dir_slash_p_and_half_close_works(tmp_path: Path) -> None:
    async def main() -> None:
        t = UnixTransport(str(tmp_path))
        listener = await t.listen(0x40000001)
        assert (tmp_path / str(0x40000001)).is_socket()
        g = await t.dial(0x40000001)
        h = await listener.accept()
        await g.sendall(b"hello")
        g.write_eof()
        assert await h.recv_all() == b"hello"
        await h.sendall(b"back")
        h.close()
        assert await g.recv_all() == b"back"
        assert g.fileno() is not None
        g.close()
        listener.close()
        assert not (tmp_path / str(0x40000001)).exists()

    asyncio.run(main())


def test_a_dial_without_a_listener_fails_after_its_retries(tmp_path: Path) -> None:
    async def main() -> None:
        t = UnixTransport(str(tmp_path))
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(OSError, match=r"dial port 0x5 .*"):
            await t.dial(5, retries=3, delay=0.02)
        assert loop.time() - start >= 0.06

    asyncio.run(main())


def test_fd_conn_carries_bytes_over_a_pipe_pair() -> None:
    async def main() -> None:
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        a, b = FdConn(r1, w2), FdConn(r2, w1)

        async def send() -> None:
            await a.sendall(b"x" * 200000)  # more than a pipe holds: needs the reader running
            a.write_eof()

        _, got = await asyncio.gather(send(), b.recv_all())
        assert len(got) == 200000
        a.close()
        b.close()

    asyncio.run(main())


def test_transport_strings_select_the_transport(tmp_path: Path) -> None:
    assert isinstance(open_transport(f"unix:{tmp_path}", role="guest"), UnixTransport)
    r, w = os.pipe()
    t = open_transport(f"mux:fd={r},{w}", role="host")
    assert isinstance(t, MuxTransport)
    asyncio.run(t.close())
    for bad in ("tcp:1", "unix:", "mux:fd=x", "vsock:3"):
        with pytest.raises(ValueError, match="transport"):
            open_transport(bad, role="guest")
