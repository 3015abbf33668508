"""The shim's fork server: a warm process, with the daemon's modules loaded, from which new shim daemons come.

Why it exists: containerd runs `<shim> start` on the critical path of every task and sends Create as soon as
`start` has exited. A cold shim daemon must first import asyncio and protobuf (~100 ms on the machines we
measure on, against ~12 ms for the whole start-up of the Go shim). The fork server pays that once per containerd
instance: `start` hands the task's listening socket to a pre-forked spare that has everything loaded and its
event loop made, and that spare serves the task a few milliseconds later. It is the idea of Python's
multiprocessing "forkserver", with the fork itself moved off the critical path.

One fork server per containerd instance, at `<containerd state>/runhcs/forkserver.sock` (directory 0700, socket
0600, peers must have our uid). Processes and their states:

    server S (comm runhcs-forksrv; title `containerd-shim-runhcs-v1 -address A forkserver`)
      (absent) --a cold daemon (forked by `start` itself) has finished its imports--> LISTENING
          the cold daemon double-forks S; S takes `forkserver.lock` (flock) or exits when another server holds
          it, binds the socket, connects to containerd's ttrpc socket (TTRPC_ADDRESS) and forks a spare
      LISTENING --its spare took a request--> forks the next spare --> LISTENING
      LISTENING --a daemon (its child) exited--> reaps it --> LISTENING
      LISTENING --containerd's connection reaches EOF (containerd stopped) | no request for IDLE_TIMEOUT |
                  SIGTERM | the spare found a loaded module changed on disk (an upgrade) | three spares died
                  at birth--> EXITED: kills its idle spare, removes its socket (while still its own); daemons
                  carry on, adopted by init

    spare P (a child of S, its own session)
      WAITING (blocked in accept on S's socket, event loop made) --connection--> tells S (a byte on a pipe),
      closes S's descriptors --> a valid request: DAEMON (below) | anything else: error reply, exits

    daemon (P after a request): answers {pid}, waits for `start`'s go-ahead, then runs daemon.run exactly as
      a cold daemon does (its own environment, cwd = bundle, log FIFO, subreaper)

Without TTRPC_ADDRESS (no containerd to outlive) no fork server is started and `start` always forks its own
daemon. Any failure to reach or use the fork server makes `start` fall back to that cold path: the fork server
is an accelerator, never a dependency.

The exchange (unix stream, one per task; both ends are this module, so the encoding is `marshal` with a version):

    start  -> spare   frame {v, argv, env, bundle, options, socket_path, socket_inode} + SCM_RIGHTS [listener]
    spare  -> start   frame {pid}    or frame {error} when the request cannot be served
    start  -> daemon  b"go"          once start has the pid; EOF instead and the daemon exits unserved, which is
                                     what happens when start gave up and forked a daemon itself

A frame is a 4-byte big-endian length and the marshalled dict. This module is imported on the `start` path:
the client side uses only os, sys, marshal and the C module _socket.
"""

from __future__ import annotations

import marshal
import os
import sys

from hcsshim.shim.paths import can_connect, state_dir_of

TYPE_CHECKING = False  # not typing's: this module is on the start path
if TYPE_CHECKING:
    import _socket
    import socket

VERSION = 1
SOCKET_NAME = "forkserver.sock"
LOCK_NAME = "forkserver.lock"
IDLE_TIMEOUT = 600.0  # seconds without a request after which the server exits (the next start is cold again)
CLIENT_TIMEOUT = 2.0  # seconds `start` waits for the whole exchange before falling back to a cold daemon
GO = b"go"
MAX_FRAME = 1 << 20
_UNIX_PATH_MAX = 107
_PR_SET_PDEATHSIG = 1


class ForkServerError(Exception):
    """The fork server could not serve a request; `start` falls back to forking its own daemon."""


def socket_path(bundle: str) -> str | None:
    """`<state>/runhcs/forkserver.sock` of the containerd instance owning `bundle`; None when there is none."""
    state = state_dir_of(bundle)
    if state is None:
        return None
    path = os.path.join(state, "runhcs", SOCKET_NAME)
    return path if len(path.encode()) <= _UNIX_PATH_MAX else None


def _send_frame(sock: _socket.socket, obj: dict, fds: list[int] | None = None) -> None:
    import _socket

    data = marshal.dumps(obj)
    frame = len(data).to_bytes(4, "big") + data
    if fds:
        ancillary = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)  # an array of C ints
        sent = sock.sendmsg([frame], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, ancillary)])
        frame = frame[sent:]
    if frame:
        sock.sendall(frame)


def _recv_exact(sock: _socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ForkServerError("connection closed mid-frame" if buf else "connection closed")
        buf += chunk
    return bytes(buf)


def _recv_frame(sock: _socket.socket, *, with_fds: bool = False) -> tuple[dict, list[int]]:
    fds: list[int] = []
    if with_fds:
        import socket

        head, fds, _flags, _addr = socket.recv_fds(sock, 4, 4)  # type: ignore[arg-type]
        if not head:
            raise ForkServerError("connection closed")
        if len(head) < 4:
            head += _recv_exact(sock, 4 - len(head))
    else:
        head = _recv_exact(sock, 4)
    size = int.from_bytes(head, "big")
    try:
        if size > MAX_FRAME:
            raise ForkServerError(f"frame of {size} bytes is over the {MAX_FRAME} limit")
        try:
            obj = marshal.loads(_recv_exact(sock, size))
        except (ValueError, EOFError, TypeError) as exc:
            raise ForkServerError(f"undecodable frame: {exc}") from None
        if not isinstance(obj, dict):
            raise ForkServerError("frame is not a mapping")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return obj, fds


# -- the client: `start` -------------------------------------------------------------------------------------


def delegate(path: str, *, argv: list[str], bundle: str, options: bytes, listener: _socket.socket,
             listener_path: str, listener_inode: int) -> int | None:
    """Asks the fork server at `path` for a daemon serving `listener`; its pid, or None to fall back.

    None means no daemon will serve `listener` on the server's behalf: either none was made, or the one made
    sees this connection close without the go-ahead and exits unserved."""
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(CLIENT_TIMEOUT)
        try:
            sock.connect(path)
        except OSError:
            return None
        request = {"v": VERSION, "argv": argv, "env": dict(os.environ), "bundle": bundle, "options": options,
                   "socket_path": listener_path, "socket_inode": listener_inode}
        _send_frame(sock, request, [listener.fileno()])
        reply, _ = _recv_frame(sock)
        pid = reply.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return None
        sock.sendall(GO)
        return pid
    except (OSError, ForkServerError):
        return None
    finally:
        sock.close()


# -- the server ----------------------------------------------------------------------------------------------
#
# The server process (S) never accepts: it keeps one pre-forked spare (P) blocked in accept() on the server
# socket, with everything a daemon needs already loaded and its event loop already made. P that accepts a
# request tells S over a pipe (S forks the next spare at once) and becomes the daemon of that request, a child
# of S that S reaps when it exits. The critical path of a warm `start` is thus one accept and one exchange.


def ensure_running(bundle: str, *, address: str, inherited: list[socket.socket]) -> None:
    """Called by a cold daemon after its imports: starts this containerd's fork server unless one answers.

    `inherited` are the daemon's sockets, which the server must not keep open. The server is a grandchild
    (double fork), so this daemon never has to reap it; the cost here is two forks (~2 ms)."""
    ttrpc = os.environ.get("TTRPC_ADDRESS", "")
    path = socket_path(bundle)
    if not ttrpc or path is None or can_connect(path):
        return
    try:
        pid = os.fork()
    except OSError:
        return
    if pid:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        return
    rc = 1
    try:  # the intermediate child
        os.setsid()
        rc = _server_main(path, ttrpc.removeprefix("unix://"), address, inherited) if os.fork() == 0 else 0
    except BaseException:
        rc = 1
    finally:
        os._exit(rc)


def _set_comm(name: str) -> None:
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass


def _title(argv: list[str]) -> None:
    """The command line `ps` shows: a forked process would still carry the cold `start`'s."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(" ".join(["containerd-shim-runhcs-v1", *argv]))


def _module_stamps() -> dict[str, int]:
    """mtime of every hcsshim module file loaded: a change means an upgrade, and the server must not make
    daemons from stale code."""
    import sys

    stamps = {}
    for name, mod in list(sys.modules.items()):
        if name == "hcsshim" or name.startswith("hcsshim."):
            f = getattr(mod, "__file__", None)
            if f:
                try:
                    stamps[f] = os.stat(f).st_mtime_ns
                except OSError:
                    stamps[f] = -1
    return stamps


def _stale(stamps: dict[str, int]) -> bool:
    for f, mtime in stamps.items():
        try:
            if os.stat(f).st_mtime_ns != mtime:
                return True
        except OSError:
            return True
    return False


def _preload() -> None:
    """What a daemon loads lazily, loaded once here so that no daemon pays for it."""
    import ctypes  # noqa: F401 - prctl, mount
    import json  # noqa: F401 - config.json

    from hcsshim import libc, mount  # noqa: F401
    from hcsshim.shim import service  # noqa: F401 - and with it every module a daemon runs

    libc.libc()


class _Server:
    """S: the listening socket, the containerd connection, the spare and the daemons (its children)."""

    def __init__(self, path: str, containerd_ttrpc: str, address: str) -> None:
        import socket

        self.path = path
        self.address = address
        self.containerd_ttrpc = containerd_ttrpc
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.containerd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.pid = os.getpid()
        self.inode: int | None = None
        self.lock_fd = -1
        self.spare = 0  # pid of the spare, 0 when there is none
        self.spare_r = -1  # S's end of the spare's pipe: a byte when it took a request, EOF when it is gone
        self.spare_born = 0.0
        self.quick_deaths = 0
        self.stamps: dict[str, int] = {}

    def bind(self) -> bool:
        import fcntl

        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.lock_fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # another fork server holds the lock
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.server.bind(self.path)
        os.chmod(self.path, 0o600)
        self.inode = os.stat(self.path).st_ino
        self.server.listen(64)
        self.containerd.connect(self.containerd_ttrpc)  # its EOF tells us containerd has gone
        return True

    def close(self) -> None:
        import signal

        if self.spare:
            try:
                os.kill(self.spare, signal.SIGKILL)
                os.waitpid(self.spare, 0)
            except OSError:
                pass
        if self.inode is not None:
            try:
                if os.stat(self.path).st_ino == self.inode:
                    os.unlink(self.path)
            except OSError:
                pass
        self.server.close()
        self.containerd.close()
        for fd in (self.lock_fd, self.spare_r):
            if fd >= 0:
                os.close(fd)

    def fork_spare(self) -> None:
        import time

        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            rc = 1
            try:
                os.close(r)
                rc = _spare_main(self, w)
            except BaseException:
                import traceback

                traceback.print_exc()  # a daemon's stderr is its log FIFO, as for a cold daemon
                rc = 1
            finally:
                os._exit(rc)
        os.close(w)
        self.spare, self.spare_r, self.spare_born = pid, r, time.monotonic()

    def reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def serve(self) -> int:
        import gc
        import select
        import signal
        import time

        wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        _title(["-address", self.address, "forkserver"])
        self.stamps = _module_stamps()
        gc.collect()
        gc.freeze()  # the heap stays shared copy-on-write with every spare and daemon
        gc.enable()  # a cold daemon forked us with the collector off
        last = time.monotonic()
        poller = select.poll()
        poller.register(self.containerd, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        try:
            while True:
                if not self.spare:
                    if self.quick_deaths >= 3:
                        return 1  # spares die at birth: stop rather than fork in a loop
                    self.fork_spare()
                    poller.register(self.spare_r, select.POLLIN)
                timeout = last + IDLE_TIMEOUT - time.monotonic()
                if timeout <= 0:
                    return 0
                events = poller.poll(timeout * 1000)
                for fd, _ in events:
                    if fd == wake_r:
                        try:
                            os.read(wake_r, 4096)
                        except BlockingIOError:
                            pass
                        self.reap()
                    elif fd == self.spare_r:
                        took = os.read(self.spare_r, 1)
                        poller.unregister(self.spare_r)
                        os.close(self.spare_r)
                        self.spare_r = -1
                        if took == b"s":
                            return 0  # the spare found our code stale
                        if took:
                            last = time.monotonic()
                            self.quick_deaths = 0
                        elif time.monotonic() - self.spare_born < 1.0:
                            self.quick_deaths += 1
                        self.spare = 0
                    elif fd == self.containerd.fileno():
                        try:
                            if not self.containerd.recv(65536):
                                return 0
                        except OSError:
                            return 0
        finally:
            signal.set_wakeup_fd(-1)
            os.close(wake_r)
            os.close(wake_w)


def _server_main(path: str, containerd_ttrpc: str, address: str, inherited: list[socket.socket]) -> int:
    import logging
    import signal

    # Let go of everything of the cold daemon: its listener, its log FIFO, containerd's pipes.
    for s in inherited:
        s.detach()
    logging.getLogger("hcsshim").handlers.clear()
    os.closerange(3, 65536)
    os.chdir("/")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_comm("runhcs-forksrv")
    _preload()
    server = _Server(path, containerd_ttrpc, address)
    try:
        if not server.bind():
            return 0
        return server.serve()
    except OSError:
        return 1
    finally:
        server.close()


def _spare_main(server: _Server, took_w: int) -> int:
    """P: waits for one request, then becomes its daemon (or exits on a bad one; S forks another spare)."""
    import asyncio
    import signal

    os.setsid()
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    _parent_death_signal(signal.SIGKILL)  # a spare must not outlive its server (it holds the server socket)
    if os.getppid() != server.pid:
        return 0
    _set_comm("containerd-shim-runhcs-v1")
    _title(["-address", server.address, "forkserver", "spare"])
    loop = asyncio.new_event_loop()  # made now, off the critical path
    conn, _ = server.server.accept()
    stale = _stale(server.stamps)
    try:
        os.write(took_w, b"s" if stale else b"t")
    except OSError:
        pass
    os.close(took_w)
    _parent_death_signal(0)  # from here on it is a daemon: it outlives the server
    server.containerd.close()
    server.server.close()
    os.close(server.lock_fd)
    if server.spare_r >= 0:
        os.close(server.spare_r)
    with conn:
        conn.settimeout(CLIENT_TIMEOUT)
        if stale:
            _reply_error(conn, "the shim's code changed on disk: this fork server is stale")
            return 0
        if not _peer_is_root(conn):
            _reply_error(conn, "permission denied")
            return 0
        try:
            request, fds = _recv_frame(conn, with_fds=True)
        except (OSError, ForkServerError) as exc:
            _reply_error(conn, str(exc))
            return 0
        if request.get("v") != VERSION or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            _reply_error(conn, f"protocol version {request.get('v')!r} with {len(fds)} descriptors is not "
                               f"version {VERSION} with one")
            return 0
        return _become_daemon(conn, fds[0], request, loop)


def _parent_death_signal(sig: int) -> None:
    from hcsshim.libc import libc

    libc().prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _reply_error(conn: socket.socket, message: str) -> None:
    try:
        _send_frame(conn, {"error": message})
    except OSError:
        pass


def _peer_is_root(conn: socket.socket) -> bool:
    import socket
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.geteuid()


def _become_daemon(conn: socket.socket, listener_fd: int, request: dict, loop: object) -> int:
    """Become the shim of the request, as a cold daemon would be, then serve."""
    import socket

    from hcsshim.shim import daemon
    from hcsshim.shim.flags import parse

    listener = socket.socket(fileno=listener_fd)
    os.environ.clear()
    os.environ.update(request["env"])
    bundle = request["bundle"]
    os.chdir(bundle)
    flags = parse(list(request["argv"]))
    # As the Go shim's daemon shows itself: its flags without the action.
    _title(["-namespace", flags.namespace, "-id", flags.id, "-address", flags.address]
           + (["-debug"] if flags.debug else []))
    _send_frame(conn, {"pid": os.getpid()})
    try:
        if _recv_exact(conn, len(GO)) != GO:
            return 0
    except (OSError, ForkServerError):
        return 0  # `start` gave up on us and made its own daemon
    conn.close()
    return daemon.run(listener, flags, bundle=bundle, socket_path=request["socket_path"],
                      socket_inode=request["socket_inode"], options=request["options"], loop=loop)
