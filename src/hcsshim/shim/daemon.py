"""The long-lived shim daemon: logging to containerd's `log` FIFO, the child subreaper, the ttrpc server, shutdown.

Lifecycle of the daemon process:

    STARTING (forked by `start`, socket already listening)
      -> SERVING (ttrpc on the socket; tasks come and go)
      -> STOPPING (Shutdown with no task left, or SIGTERM/SIGINT: stop accepting, remove the socket if it is
                   still ours, finish in-flight requests, deliver queued events)
      -> exit 0

Logs go to `<bundle>/log`, a FIFO containerd holds open and copies to its own log; lines use logrus's text
format with fields (id, namespace, pid) so they read like containerd's. The FIFO is written non-blocking and
errors are ignored: a log write never blocks or kills the shim (containerd may be restarting).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from hcsshim.shim.flags import Flags

log = logging.getLogger("hcsshim.shim")

_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error",
           logging.CRITICAL: "fatal"}


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "-._/:@" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class FifoHandler(logging.Handler):
    """Writes logrus-style lines to a non-blocking fd, dropping them when the reader is away."""

    def __init__(self, fd: int, fields: dict[str, str]) -> None:
        super().__init__()
        self.fd = fd
        self.suffix = "".join(f" {k}={_quote(v)}" for k, v in fields.items())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            t = record.created
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1e9):09d}"
            tz = time.strftime("%z", time.localtime(t))
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + logging.Formatter().formatException(record.exc_info)
            line = (f'time="{stamp}{tz[:3]}:{tz[3:]}" level={_LEVELS.get(record.levelno, "info")} '
                    f"msg={_quote(msg)}{self.suffix} logger={record.name}\n")
            os.write(self.fd, line.encode(errors="replace"))
        except OSError:
            pass
        except Exception:
            self.handleError(record)


def setup_logging(bundle: str, flags: Flags) -> int | None:
    """Opens `<bundle>/log` (when containerd made it) and sends the hcsshim loggers there."""
    fd = None
    try:
        fd = os.open(os.path.join(bundle, "log"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        pass
    root = logging.getLogger("hcsshim")
    root.setLevel(logging.DEBUG if flags.debug else logging.INFO)
    root.propagate = False
    if fd is not None:
        root.addHandler(FifoHandler(fd, {"id": flags.id, "namespace": flags.namespace,
                                         "runtime": "io.containerd.runhcs.v1"}))
        os.dup2(fd, 2)  # stray tracebacks land in containerd's log too
        os.set_inheritable(2, False)
    return fd


def run(listener: socket.socket, flags: Flags, *, bundle: str, socket_path: str, socket_inode: int,
        options: bytes, loop: object = None, on_loaded: Callable[[], None] | None = None) -> int:
    """Runs the daemon until it is told to stop; returns the exit status.

    A cold daemon (forked by `start` itself) imports everything here, then calls `on_loaded` (`start` passes the
    fork server's ensure_running, so that later `start`s get a warm daemon, see forkserver.py). A daemon from the
    fork server has it all loaded already and brings the event `loop` it made while it waited."""
    setup_logging(bundle, flags)
    import asyncio
    import gc

    from hcsshim.shim import service  # noqa: F401 - the whole import graph, before the collector returns

    if on_loaded is not None:
        on_loaded()
    gc.enable()
    with asyncio.Runner(loop_factory=None if loop is None else lambda: loop) as runner:  # type: ignore[return-value]
        return runner.run(_serve(listener, flags, bundle=bundle, socket_path=socket_path,
                                 socket_inode=socket_inode))


def remove_socket(path: str, inode: int) -> None:
    """Removes the socket file only while it is still ours (a new shim may have bound the same path)."""
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


async def _serve(listener: socket.socket, flags: Flags, *, bundle: str, socket_path: str,
                 socket_inode: int) -> int:
    import asyncio

    from hcsshim.runc import Reaper, Runc
    from hcsshim.shim.events import Publisher
    from hcsshim.shim.paths import runc_root
    from hcsshim.shim.service import SERVICE, TaskService
    from hcsshim.ttrpc import Server

    loop = asyncio.get_running_loop()
    reaper = Reaper()
    reaper.start(subreaper=True)
    runc = Runc(runc_root(bundle, flags.namespace), reaper=reaper, debug=flags.debug)
    publisher = Publisher(os.environ.get("TTRPC_ADDRESS", ""), flags.namespace)
    service = TaskService(shim_id=flags.id, namespace=flags.namespace, runc=runc, reaper=reaper,
                          publish=publisher.publish, debug=flags.debug)
    server = Server()
    server.register(SERVICE, service.methods())
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.shutdown_requested.set)
    log.debug("serving on %s", socket_path)
    serving = asyncio.ensure_future(server.serve(listener))
    stop = asyncio.ensure_future(service.shutdown_requested.wait())
    await asyncio.wait([serving, stop], return_when=asyncio.FIRST_COMPLETED)
    # Stop accepting first, so that a new `start` for the same address binds a fresh socket.
    remove_socket(socket_path, socket_inode)
    await server.close(grace=2.0)
    for t in (serving, stop):
        t.cancel()
    await asyncio.gather(serving, stop, return_exceptions=True)
    await service.close()
    await publisher.close(timeout=10.0)
    reaper.close()
    log.debug("exiting")
    return 0
