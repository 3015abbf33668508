"""A port multiplexer over one byte stream (a virtio-serial port, a pipe pair): many listen/dial connections
with the semantics of the socket transports. The wire format is specified in docs/transport-mux.md.

Two layers, like the bridge:

* sans-I/O: `encode_frame` and `FrameDecoder` (12-byte header ``magic | type | flags | stream | length``
  + payload; a bad magic, type or length raises `MuxProtocolError`);
* `MuxTransport`: the asyncio session over a read fd and a write fd. Streams dialled by the host have even
  ids, by the guest odd ids; a CONNECT to a port nobody listens on is answered with REFUSE (the dialer gets
  ConnectionRefusedError and retries like a socket dial). Each direction of each stream has a credit window
  (`WINDOW`); a sender never has more unacknowledged bytes in flight, so one slow stream never blocks the
  others or grows memory without bound.

Session states: new --start()--> open (HELLO sent) --EOF / protocol error / close()--> closed; a HELLO
received on an open session means the peer restarted: every stream is reset.
Stream (`MuxConn`) states: connecting --ACCEPT--> open --EOF both ways / CLOSE--> closed.

Standard library only: the guest agent uses it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import os
import struct

from hcsshim.transport.conn import DIAL_RETRIES, DIAL_RETRY_DELAY, RECV_SIZE, Conn, Listener, Transport, read_fd

__all__ = [
    "MAGIC",
    "MAX_PAYLOAD",
    "WINDOW",
    "FrameDecoder",
    "MuxConn",
    "MuxProtocolError",
    "MuxTransport",
    "encode_frame",
]

log = logging.getLogger(__name__)

MAGIC = 0xB7
VERSION = 1
HEADER = struct.Struct("<BBHII")
MAX_PAYLOAD = 65536
WINDOW = 256 * 1024

HELLO, CONNECT, ACCEPT, REFUSE, DATA, CREDIT, EOF, CLOSE = range(1, 9)
FRAME_NAMES = {HELLO: "HELLO", CONNECT: "CONNECT", ACCEPT: "ACCEPT", REFUSE: "REFUSE", DATA: "DATA",
               CREDIT: "CREDIT", EOF: "EOF", CLOSE: "CLOSE"}
_U32 = struct.Struct("<I")


class MuxProtocolError(Exception):
    """The byte stream broke the multiplexer's framing: the session cannot continue."""


def encode_frame(type: int, stream: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"mux frame {FRAME_NAMES.get(type, type)}: payload of {len(payload)} bytes exceeds "
                         f"{MAX_PAYLOAD}")
    return HEADER.pack(MAGIC, type, 0, stream, len(payload)) + payload


class FrameDecoder:
    """feed(bytes), then next_frame() -> (type, stream, payload) or None; MuxProtocolError on bad input."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def next_frame(self) -> tuple[int, int, bytes] | None:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < HEADER.size:
            return None
        magic, type, _flags, stream, length = HEADER.unpack_from(buf, pos)
        if magic != MAGIC:
            raise MuxProtocolError(f"mux: bad magic {magic:#04x} (stream out of sync)")
        if type not in FRAME_NAMES:
            raise MuxProtocolError(f"mux: unknown frame type {type}")
        if length > MAX_PAYLOAD:
            raise MuxProtocolError(f"mux: {FRAME_NAMES[type]} frame of {length} bytes exceeds {MAX_PAYLOAD}")
        end = pos + HEADER.size + length
        if len(buf) < end:
            return None
        payload = bytes(buf[pos + HEADER.size:end])
        self._pos = end
        if end > 1 << 20:
            del buf[:end]
            self._pos = 0
        return type, stream, payload


class MuxConn(Conn):
    """One multiplexed stream (see the module docstring for its states)."""

    def __init__(self, session: MuxTransport, stream: int, port: int) -> None:
        self.session = session
        self.stream = stream
        self.port = port
        self.state = "connecting"
        self._inbox: collections.deque[bytes] = collections.deque()
        self._eof = False  # the peer sent EOF or CLOSE
        self._reset: str | None = None
        self._readable = asyncio.Event()
        self._credit = WINDOW  # bytes we may still send
        self._credit_event = asyncio.Event()
        self._consumed = 0  # bytes read since the last CREDIT we granted
        self._wrote_eof = False
        self._connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"MuxConn(stream {self.stream}, port {self.port:#x}, {self.state})"

    # events from the session
    def _on_data(self, data: bytes) -> None:
        if self.state == "closed":
            return
        self._inbox.append(data)
        self._readable.set()

    def _on_eof(self) -> None:
        self._eof = True
        self._readable.set()

    def _on_credit(self, n: int) -> None:
        self._credit += n
        self._credit_event.set()

    def _on_reset(self, reason: str) -> None:
        self._reset = reason
        self._eof = True
        self._readable.set()
        self._credit_event.set()
        if not self._connected.done():
            self._connected.set_exception(ConnectionRefusedError(errno.ECONNREFUSED, reason))

    # the Conn interface
    async def recv(self, n: int = RECV_SIZE) -> bytes:
        while not self._inbox:
            if self._eof or self.state == "closed":
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = self._inbox.popleft()
        if len(data) > n:
            self._inbox.appendleft(data[n:])
            data = data[:n]
        self._consumed += len(data)
        if self._consumed >= WINDOW // 4 and not self._eof:
            self.session._send(CREDIT, self.stream, _U32.pack(self._consumed))
            self._consumed = 0
        return data

    async def sendall(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self.state == "closed" or self._reset is not None or self._wrote_eof:
                raise BrokenPipeError(errno.EPIPE, f"mux stream {self.stream}: {self._reset or 'closed'}")
            if self._credit <= 0:
                self._credit_event.clear()
                await self._credit_event.wait()
                continue
            n = min(len(view), self._credit, MAX_PAYLOAD)
            self._credit -= n
            self.session._send(DATA, self.stream, bytes(view[:n]))
            view = view[n:]
            await self.session._drain()

    def write_eof(self) -> None:
        if not self._wrote_eof and self.state == "open":
            self._wrote_eof = True
            self.session._send(EOF, self.stream)
            self.session._maybe_forget(self)

    def close(self) -> None:
        if self.state != "closed":
            if self._reset is None and self.state in ("open", "connecting"):
                self.session._send(CLOSE, self.stream)
            self.state = "closed"
            self._inbox.clear()
            self._readable.set()
            self._credit_event.set()
            self.session._streams.pop(self.stream, None)


class _MuxListener(Listener):
    def __init__(self, session: MuxTransport, port: int) -> None:
        self.session = session
        self.port = port
        self.queue: asyncio.Queue[MuxConn | None] = asyncio.Queue()
        self.closed = False

    async def accept(self) -> Conn:
        if self.closed:
            raise OSError(errno.EBADF, f"accept on port {self.port:#x}: listener closed")
        conn = await self.queue.get()
        if conn is None:
            raise OSError(errno.EBADF, f"accept on port {self.port:#x}: listener closed")
        return conn

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.session._listeners.get(self.port) is self:
            del self.session._listeners[self.port]
        while not self.queue.empty():  # connections nobody accepted
            conn = self.queue.get_nowait()
            if conn is not None:
                conn.close()
        self.queue.put_nowait(None)


class MuxTransport(Transport):
    """The multiplexer session over (read_fd, write_fd); role "host" or "guest" (see the module docstring)."""

    def __init__(self, read_fd: int, write_fd: int, *, role: str, owns_fds: bool = True) -> None:
        if role not in ("host", "guest"):
            raise ValueError(f"mux transport: role must be host or guest, not {role!r}")
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.role = role
        self.owns_fds = owns_fds
        self.state = "new"
        self.error: str | None = None
        self._next_stream = 2 if role == "host" else 1
        self._streams: dict[int, MuxConn] = {}
        self._listeners: dict[int, _MuxListener] = {}
        self._out = bytearray()
        self._writing = False
        self._drained = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._peer_hello = False

    async def start(self) -> None:
        if self.state != "new":
            return
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self._drained.set()
        self.state = "open"
        self._send(HELLO, 0, _U32.pack(VERSION))
        self._reader = asyncio.create_task(self._read_loop(), name=f"mux-{self.role}-reader")

    # --- output: one buffer, written whole frames at a time in call order ------------------------------

    def _send(self, type: int, stream: int, payload: bytes = b"") -> None:
        if self.state != "open":
            return
        self._out += encode_frame(type, stream, payload)
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._out:
            try:
                n = os.write(self.write_fd, self._out)
            except BlockingIOError:
                if not self._writing:
                    self._writing = True
                    self._drained.clear()
                    loop.add_writer(self.write_fd, self._flush)
                return
            except OSError as e:
                self._fail(f"write failed: {e}")
                return
            del self._out[:n]
        if self._writing:
            self._writing = False
            loop.remove_writer(self.write_fd)
        self._drained.set()

    async def _drain(self) -> None:
        if len(self._out) > 4 * MAX_PAYLOAD:
            await self._drained.wait()

    # --- input --------------------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        decoder = FrameDecoder()
        try:
            while True:
                data = await read_fd(self.read_fd, RECV_SIZE)
                if not data:
                    self._fail("the peer closed the multiplexed stream")
                    return
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    self._on_frame(*frame)
        except MuxProtocolError as e:
            log.error("mux: %s", e)
            self._fail(str(e))
        except OSError as e:
            self._fail(f"read failed: {e}")

    def _on_frame(self, type: int, stream: int, payload: bytes) -> None:
        if type == HELLO:
            if self._peer_hello:  # the peer restarted: its old streams are gone
                for conn in list(self._streams.values()):
                    conn._on_reset("the peer restarted")
                    conn.state = "closed"
                self._streams.clear()
            self._peer_hello = True
            return
        if type == CONNECT:
            port = _U32.unpack(payload)[0] if len(payload) == 4 else -1
            listener = self._listeners.get(port)
            if listener is None or stream in self._streams or stream % 2 == (0 if self.role == "host" else 1):
                self._send(REFUSE, stream)
                return
            conn = MuxConn(self, stream, port)
            conn.state = "open"
            conn._connected.set_result(None)
            self._streams[stream] = conn
            self._send(ACCEPT, stream)
            listener.queue.put_nowait(conn)
            return
        conn = self._streams.get(stream)
        if conn is None:
            return  # a late frame for a stream we closed
        if type == ACCEPT:
            conn.state = "open"
            if not conn._connected.done():
                conn._connected.set_result(None)
        elif type == REFUSE:
            self._streams.pop(stream, None)
            conn.state = "closed"
            conn._on_reset(f"connection refused on port {conn.port:#x}")
        elif type == DATA:
            conn._on_data(payload)
        elif type == CREDIT and len(payload) == 4:
            conn._on_credit(_U32.unpack(payload)[0])
        elif type == EOF:
            conn._on_eof()
            self._maybe_forget(conn)
        elif type == CLOSE:
            conn._on_reset("closed by the peer")
            self._streams.pop(stream, None)

    def _maybe_forget(self, conn: MuxConn) -> None:
        """A stream both sides have half-closed needs no more frames but stays readable until drained."""
        if conn._wrote_eof and conn._eof and conn._reset is None:
            self._streams.pop(conn.stream, None)

    def _fail(self, reason: str) -> None:
        if self.state == "closed":
            return
        self.error = reason
        self.state = "closed"
        for conn in list(self._streams.values()):
            conn._on_reset(reason)
        self._streams.clear()
        for listener in list(self._listeners.values()):
            listener.close()
        self._drained.set()
        if self._writing:
            self._writing = False
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_writer(self.write_fd)

    # --- the Transport interface -------------------------------------------------------------------------

    async def listen(self, port: int) -> Listener:
        await self.start()
        if self.state != "open":
            raise OSError(errno.ENOTCONN, f"listen on port {port:#x}: mux session closed ({self.error})")
        if port in self._listeners:
            raise OSError(errno.EADDRINUSE, f"listen on port {port:#x}: already listening")
        listener = _MuxListener(self, port)
        self._listeners[port] = listener
        return listener

    async def dial(self, port: int, *, retries: int = DIAL_RETRIES, delay: float = DIAL_RETRY_DELAY) -> Conn:
        await self.start()
        attempt = 0
        while True:
            if self.state != "open":
                raise OSError(errno.ENOTCONN, f"dial port {port:#x}: mux session closed ({self.error})")
            stream = self._next_stream
            self._next_stream += 2
            conn = MuxConn(self, stream, port)
            self._streams[stream] = conn
            self._send(CONNECT, stream, _U32.pack(port))
            try:
                await conn._connected
                return conn
            except ConnectionRefusedError:
                attempt += 1
                if attempt > retries:
                    raise ConnectionRefusedError(errno.ECONNREFUSED,
                                                 f"dial port {port:#x}: connection refused") from None
                await asyncio.sleep(delay)
            except BaseException:
                conn.close()
                raise

    async def close(self) -> None:
        self._fail("the session was closed")
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self.owns_fds:
            for fd in {self.read_fd, self.write_fd}:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.owns_fds = False
