"""The shim's stdio of a process (hcsshim.shim.stdio.ProcessIO) on real FIFOs and pipes: CloseIO delivers what the
client already wrote before the process reads EOF (containerd 2.x's ctr calls CloseIO right after its last write)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from hcsshim.shim.stdio import ProcessIO, StdioPaths


def test_close_io_right_after_the_last_write_still_delivers_all_of_stdin(tmp_path: Path) -> None:
    fifo = tmp_path / "stdin"
    os.mkfifo(fifo)
    data = os.urandom(100 << 10)  # more than the process's pipe holds: the rest waits in the FIFO

    async def body() -> bytes:
        io = ProcessIO.open(StdioPaths(stdin=str(fifo)))
        child_stdin = io.child_fds[0]
        assert child_stdin is not None
        reader = os.dup(child_stdin)  # the process's end of its stdin pipe
        io.started()
        got = bytearray()

        def read_all() -> None:
            while chunk := os.read(reader, 1 << 16):
                got.extend(chunk)
            os.close(reader)

        def client() -> None:  # a ctr: writes everything into the FIFO, closes it
            with open(fifo, "wb") as f:
                f.write(data)

        await asyncio.to_thread(client)
        await asyncio.sleep(0.2)  # the pump has filled the pipe
        io.close_stdin()  # CloseIO, while the tail is still in the FIFO
        consumer = threading.Thread(target=read_all)  # the process reads only now
        consumer.start()
        await asyncio.to_thread(consumer.join, 30)
        assert not consumer.is_alive()
        io.close()
        return bytes(got)

    assert asyncio.run(asyncio.wait_for(body(), 60)) == data


def test_close_io_with_another_writer_holding_the_fifo_closes_stdin_after_a_quiet_second(tmp_path: Path) -> None:
    fifo = tmp_path / "stdin"
    os.mkfifo(fifo)

    async def body() -> bytes:
        io = ProcessIO.open(StdioPaths(stdin=str(fifo)))
        reader = os.dup(io.child_fds[0])  # type: ignore[arg-type]
        io.started()
        holder = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # a writer that never closes
        os.write(holder, b"tail")
        io.close_stdin()
        try:
            got = await asyncio.wait_for(asyncio.to_thread(lambda: os.read(reader, 100) + os.read(reader, 100)), 10)
        finally:
            os.close(holder)
            os.close(reader)
            io.close()
        return got

    assert asyncio.run(body()) == b"tail"  # delivered, then EOF (the second read) although the FIFO stays open
