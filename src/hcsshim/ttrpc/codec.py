"""The ttrpc wire format, sans I/O: 10-byte frame headers, Request/Response envelopes, the 4 MiB limit.

A frame is a big-endian header -- data length u32 (header excluded), stream id u32, message type u8, flags u8
-- followed by `length` bytes of data: a protobuf `ttrpc.Request` (type 1) or `ttrpc.Response` (type 2).
Bytes go into `FrameDecoder.receive_data`, frames come out of `next_frame`; `encode_*` turn messages into
bytes. Nothing here touches a socket or an event loop, so it is tested and fuzzed with bytes alone.

FrameDecoder states: OPEN --receive_data(b"")--> EOF (`closed` once every buffered frame is taken);
OPEN or EOF --bad input--> BROKEN, where every further call raises the same ProtocolError.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from hcsshim.api.ttrpc.request_pb2 import KeyValue, Request, Response
from hcsshim.ttrpc.errors import ProtocolError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    from hcsshim.api.google.rpc.status_pb2 import Status

    Metadata = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str] | KeyValue]

HEADER_SIZE = 10
MAX_MESSAGE_SIZE = 4 << 20
TYPE_REQUEST = 1
TYPE_RESPONSE = 2
TYPE_DATA = 3  # ttrpc >= 1.2 streaming only; containerd 1.6 never sends it
# The receive buffer the asyncio adapters allocate once per connection and reuse (asyncio's plain Protocol
# allocates 256 KiB per recv(), an mmap each time: that halved the round-trip rate).
READ_SIZE = 128 << 10

_HEADER = struct.Struct(">IIBB")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from


class Frame:
    """One frame: stream id, message type, flags and data (treat as immutable)."""

    __slots__ = ("data", "flags", "stream_id", "type")

    def __init__(self, stream_id: int, type: int, flags: int, data: bytes) -> None:
        self.stream_id = stream_id
        self.type = type
        self.flags = flags
        self.data = data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return (self.stream_id == other.stream_id and self.type == other.type and self.flags == other.flags
                and self.data == other.data)

    def __hash__(self) -> int:
        return hash((self.stream_id, self.type, self.flags, self.data))

    def __repr__(self) -> str:
        data = self.data if len(self.data) <= 32 else f"<{len(self.data)} bytes>"
        return f"Frame(stream_id={self.stream_id}, type={self.type}, flags={self.flags}, data={data!r})"

    def encode(self) -> bytes:
        return encode_frame(self.stream_id, self.type, self.data, self.flags)


def encode_frame(stream_id: int, type_: int, data: bytes, flags: int = 0) -> bytes:
    """Header + data. ProtocolError if the data exceeds MAX_MESSAGE_SIZE (nothing is produced)."""
    n = len(data)
    if n > MAX_MESSAGE_SIZE:
        raise ProtocolError(f"ttrpc: message of {n} bytes on stream {stream_id} exceeds the limit of "
                            f"{MAX_MESSAGE_SIZE} bytes")
    return _pack_header(n, stream_id, type_, flags) + data


class FrameDecoder:
    """Turns a byte stream into frames, however it is chopped.

    The length limit is checked as soon as a header is complete, before its body is waited for, so a peer
    declaring 4 GiB is rejected at once; callers take frames after every `receive_data`, so at most one
    received chunk of such a body is ever buffered.
    """

    __slots__ = ("_buf", "_eof", "_error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._eof = False
        self._error: ProtocolError | None = None

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer received bytes (copied); b"" means the peer closed its side (EOF)."""
        if self._error is not None:
            raise self._error
        if data:
            if self._eof:
                self._fail("ttrpc: data received after end of stream")
            self._buf += data
        else:
            self._eof = True

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None when more data is needed (or the stream ended cleanly)."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        have = len(buf)
        if have >= HEADER_SIZE:
            length, stream_id, type_, flags = _unpack_header(buf)
            if length > MAX_MESSAGE_SIZE:
                self._fail(f"ttrpc: frame on stream {stream_id} declares {length} bytes, which exceeds the "
                           f"limit of {MAX_MESSAGE_SIZE} bytes")
            end = HEADER_SIZE + length
            if have >= end:
                data = bytes(buf[HEADER_SIZE:end])
                del buf[:end]
                return Frame(stream_id, type_, flags, data)
        if self._eof and have:
            self._fail(f"ttrpc: end of stream in the middle of a frame ({have} bytes of it received)")
        return None

    def frames(self) -> Iterator[Frame]:
        """Every complete frame buffered so far."""
        while (frame := self.next_frame()) is not None:
            yield frame

    @property
    def closed(self) -> bool:
        """EOF seen and every buffered byte consumed."""
        return self._eof and not self._buf and self._error is None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _fail(self, message: str) -> None:
        self._error = ProtocolError(message)
        self._buf.clear()
        raise self._error


def metadata_pairs(metadata: Metadata | None) -> list[KeyValue]:
    """KeyValue pairs from a mapping (a value may be a list: the key repeats) or an iterable of pairs."""
    if not metadata:
        return []
    out: list[KeyValue] = []
    if hasattr(metadata, "items"):
        for key, value in metadata.items():  # type: ignore[union-attr]
            if isinstance(value, str):
                out.append(KeyValue(key=key, value=value))
            else:
                out.extend(KeyValue(key=key, value=v) for v in value)
    else:
        for item in metadata:
            out.append(item if isinstance(item, KeyValue) else KeyValue(key=item[0], value=item[1]))
    return out


def metadata_dict(pairs: Iterable[KeyValue]) -> dict[str, list[str]]:
    """Request.metadata as key -> values in arrival order."""
    md: dict[str, list[str]] = {}
    for kv in pairs:
        values = md.get(kv.key)
        if values is None:
            md[kv.key] = [kv.value]
        else:
            values.append(kv.value)
    return md


def encode_request(stream_id: int, service: str, method: str, payload: bytes, *, timeout_nano: int = 0,
                   metadata: Metadata | None = ()) -> bytes:
    """A Request frame. Metadata keys go as given (the Client lower-cases them, as Go's metadata does)."""
    req = Request(service=service, method=method, payload=payload, timeout_nano=timeout_nano)
    if metadata:
        req.metadata.extend(metadata_pairs(metadata))
    return encode_frame(stream_id, TYPE_REQUEST, req.SerializeToString())


def encode_response(stream_id: int, payload: bytes = b"", status: Status | None = None) -> bytes:
    """A Response frame. An OK status is omitted entirely, as the Go server does."""
    if status is not None and status.code != 0:
        resp = Response(status=status, payload=payload)
    elif payload:
        resp = Response(payload=payload)
    else:
        return _pack_header(0, stream_id, TYPE_RESPONSE, 0)
    return encode_frame(stream_id, TYPE_RESPONSE, resp.SerializeToString())


def decode_request(frame: Frame) -> Request:
    """The Request envelope of a frame; ProtocolError if the data is not one."""
    try:
        return Request.FromString(frame.data)
    except DecodeError as exc:
        raise ProtocolError(f"ttrpc: invalid request envelope on stream {frame.stream_id}: {exc}") from None


def decode_response(frame: Frame) -> Response:
    """The Response envelope of a frame; ProtocolError if the data is not one."""
    try:
        return Response.FromString(frame.data)
    except DecodeError as exc:
        raise ProtocolError(f"ttrpc: invalid response envelope on stream {frame.stream_id}: {exc}") from None
