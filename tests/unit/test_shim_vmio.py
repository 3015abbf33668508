"""The stdio relays of a process in a utility VM (hcsshim.shim.vmio): real FIFOs on one side, real socket
connections (the transport's SocketConn over a socketpair) on the other."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from hcsshim.shim.stdio import StdioPaths
from hcsshim.shim.vmio import ConnIO
from hcsshim.transport.base import SocketConn


async def conn_pair() -> tuple[SocketConn, socket.socket]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    return await SocketConn.open(ours), theirs


async def recv_all(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    chunks = []
    while data := await loop.sock_recv(sock, 65536):
        chunks.append(data)
    return b"".join(chunks)


def fifo(path: Path) -> str:
    os.mkfifo(path)
    return str(path)


def test_stdin_is_relayed_until_the_clients_eof_then_half_closed(tmp_path: Path) -> None:
    async def main() -> None:
        io = ConnIO.open(StdioPaths(stdin=fifo(tmp_path / "in")))
        conn, peer = await conn_pair()
        io.attach(conn, None, None)
        data = os.urandom(1 << 20)

        def client() -> None:
            writer = os.open(tmp_path / "in", os.O_WRONLY)
            view = memoryview(data)
            while view:
                view = view[os.write(writer, view):]
            os.close(writer)

        _, got = await asyncio.wait_for(asyncio.gather(asyncio.to_thread(client), recv_all(peer)), 20)
        assert got == data
        io.close()
        peer.close()

    asyncio.run(main())


def test_close_io_sends_what_the_fifo_still_holds_before_the_eof(tmp_path: Path) -> None:
    async def main() -> None:
        io = ConnIO.open(StdioPaths(stdin=fifo(tmp_path / "in")))
        conn, peer = await conn_pair()
        writer = os.open(tmp_path / "in", os.O_WRONLY | os.O_NONBLOCK)
        os.write(writer, b"still in the pipe")
        os.close(writer)
        io.close_stdin()  # CloseIO before the relay has read anything
        io.attach(conn, None, None)
        assert await asyncio.wait_for(recv_all(peer), 10) == b"still in the pipe"
        io.close()
        peer.close()

    asyncio.run(main())


def test_output_reaches_the_fifo_and_the_connection_is_closed_at_its_eof(tmp_path: Path) -> None:
    async def main() -> None:
        out = fifo(tmp_path / "out")
        reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
        io = ConnIO.open(StdioPaths(stdout=out))
        conn, peer = await conn_pair()
        io.attach(None, conn, None)
        await asyncio.get_running_loop().sock_sendall(peer, b"hello from the guest\n")
        peer.shutdown(socket.SHUT_WR)
        await io.drain()
        assert os.read(reader, 100) == b"hello from the guest\n"
        assert await asyncio.wait_for(asyncio.get_running_loop().sock_recv(peer, 10), 5) == b""  # closed by us
        io.close()
        os.close(reader)
        peer.close()

    asyncio.run(main())


def test_closing_while_the_stdin_relay_waits_leaves_no_registration_on_the_reused_descriptor(tmp_path: Path) -> None:
    """The bug this guards against: a wait left behind on the FIFO's descriptor took over the number's next owner
    (a ttrpc connection) in the event loop, whose requests were then never read."""

    async def main() -> None:
        path = fifo(tmp_path / "in")
        keep_writer = os.open(path, os.O_RDWR)  # a writer that never writes: the relay waits
        io = ConnIO.open(StdioPaths(stdin=path))
        conn, peer = await conn_pair()
        io.attach(conn, None, None)
        await asyncio.sleep(0.05)
        fifo_fd = io._fds[0]
        io.close()
        await asyncio.sleep(0.05)  # the cancelled relay finishes, then the descriptors close
        a, b = socket.socketpair()
        try:
            assert fifo_fd in (a.fileno(), b.fileno()) or not os.path.exists(f"/proc/self/fd/{fifo_fd}")
            a.setblocking(False)
            b.setblocking(False)
            loop = asyncio.get_running_loop()
            for receiver, sender in ((a, b), (b, a)):  # each waits in the event loop first, then gets its data
                got = asyncio.ensure_future(loop.sock_recv(receiver, 4))
                await asyncio.sleep(0.05)
                sender.send(b"ping")
                assert await asyncio.wait_for(got, 5) == b"ping"
        finally:
            a.close()
            b.close()
            os.close(keep_writer)
            peer.close()

    asyncio.run(main())
