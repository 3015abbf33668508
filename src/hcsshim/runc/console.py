"""runc's console socket (`--console-socket`): where runc sends a terminal process's pty master.

A `ConsoleSocket` listens on `<tmp dir>/pty.sock` in a fresh 0700 directory (a path, not an abstract socket:
an abstract name is reachable from every process of the network namespace, host-network containers
included, which could race runc with a descriptor of their own). runc connects once and sends the master
with SCM_RIGHTS; `receive_master` returns it non-blocking and not inheritable. `close` removes the socket
and its directory. Used by the shim and by the guest agent.
"""

from __future__ import annotations

import asyncio
import os
import socket


class ConsoleError(OSError):
    """runc's console hand-over failed."""


class ConsoleSocket:
    __slots__ = ("_dir", "path", "sock")

    def __init__(self) -> None:
        import tempfile  # here: the guest agent imports this module on a utility VM's boot path

        self._dir = tempfile.mkdtemp(prefix="hcsshim-pty-", dir="/tmp")
        self.path = os.path.join(self._dir, "pty.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.bind(self.path)
            self.sock.listen(1)
            self.sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    async def receive_master(self) -> int:
        """Accepts runc's connection and returns the pty master it sends (non-blocking, ours to close)."""
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self.sock)
        with conn:
            conn.setblocking(False)
            while True:
                try:
                    _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
                    break
                except BlockingIOError:
                    readable = loop.create_future()
                    loop.add_reader(conn.fileno(), readable.set_result, None)
                    try:
                        await readable
                    finally:
                        loop.remove_reader(conn.fileno())
        if not fds:
            raise ConsoleError("console socket: runc sent no pty master")
        for extra in fds[1:]:
            os.close(extra)
        master = fds[0]
        os.set_blocking(master, False)
        os.set_inheritable(master, False)
        return master

    def close(self) -> None:
        """Closes the socket and removes it and its directory (idempotent)."""
        try:
            self.sock.close()
        except AttributeError:
            pass
        for remove, p in ((os.unlink, self.path), (os.rmdir, self._dir)):
            try:
                remove(p)
            except OSError:
                pass
