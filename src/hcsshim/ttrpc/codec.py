"""The ttrpc wire format, sans I/O: 10-byte frame headers, Request/Response envelopes, the 4 MiB limit.

Frame header (big-endian): data length u32, stream id u32, message type u8, flags u8; then `length` bytes of
data. Bytes go into `FrameDecoder.receive_data`, frames come out of `next_frame`; `encode_*` turn messages into
bytes. Nothing here touches a socket, so it can be tested and fuzzed with bytes alone.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

from hcsshim.api.google.rpc.status_pb2 import Status
from hcsshim.api.ttrpc.request_pb2 import KeyValue, Request, Response
from hcsshim.ttrpc.errors import ProtocolError

HEADER_SIZE = 10
MAX_MESSAGE_SIZE = 4 << 20
TYPE_REQUEST = 1
TYPE_RESPONSE = 2
TYPE_DATA = 3

_HEADER = struct.Struct(">IIBB")


class Frame:
    """One frame: stream id, message type, flags and data."""

    __slots__ = ("data", "flags", "stream_id", "type")

    def __init__(self, stream_id: int, type: int, flags: int, data: bytes) -> None:
        self.stream_id, self.type, self.flags, self.data = stream_id, type, flags, data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Frame) and (self.stream_id, self.type, self.flags, self.data) == (
            other.stream_id, other.type, other.flags, other.data)

    def __hash__(self) -> int:
        return hash((self.stream_id, self.type, self.flags, self.data))

    def __repr__(self) -> str:
        return f"Frame(stream_id={self.stream_id}, type={self.type}, flags={self.flags}, data={len(self.data)}B)"


def encode_frame(stream_id: int, type_: int, data: bytes, flags: int = 0) -> bytes:
    if len(data) > MAX_MESSAGE_SIZE:
        raise ProtocolError(f"ttrpc: message of {len(data)} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit")
    return _HEADER.pack(len(data), stream_id, type_, flags) + data


class FrameDecoder:
    """Turns a byte stream into frames. After a ProtocolError it stays broken (the connection must close).

    States: OPEN -> (receive_data(b"")) EOF -> CLOSED once the buffer is empty; any -> BROKEN on bad input."""

    __slots__ = ("_buf", "_eof", "_error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._eof = False
        self._error: ProtocolError | None = None

    def receive_data(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if not data:
            self._eof = True
        else:
            if self._eof:
                raise ProtocolError("ttrpc: data after end of stream")
            self._buf += data

    def next_frame(self) -> Frame | None:
        if self._error is not None:
            raise self._error
        buf = self._buf
        if len(buf) >= HEADER_SIZE:
            length, stream_id, type_, flags = _HEADER.unpack_from(buf)
            if length > MAX_MESSAGE_SIZE:
                self._error = ProtocolError(
                    f"ttrpc: frame of {length} bytes on stream {stream_id} exceeds the {MAX_MESSAGE_SIZE}-byte limit")
                raise self._error
            end = HEADER_SIZE + length
            if len(buf) >= end:
                data = bytes(buf[HEADER_SIZE:end])
                del buf[:end]
                return Frame(stream_id, type_, flags, data)
        if self._eof and buf:
            self._error = ProtocolError(f"ttrpc: connection closed in the middle of a frame ({len(buf)} bytes)")
            raise self._error
        return None

    @property
    def closed(self) -> bool:
        return self._eof and not self._buf


def metadata_pairs(metadata: Mapping[str, str | Sequence[str]] | None) -> Iterable[KeyValue]:
    for key, value in (metadata or {}).items():
        for v in [value] if isinstance(value, str) else value:
            yield KeyValue(key=key.lower(), value=v)


def encode_request(stream_id: int, service: str, method: str, payload: bytes, *, timeout_nano: int = 0,
                   metadata: Mapping[str, str | Sequence[str]] | None = None) -> bytes:
    req = Request(service=service, method=method, payload=payload, timeout_nano=timeout_nano,
                  metadata=list(metadata_pairs(metadata)))
    return encode_frame(stream_id, TYPE_REQUEST, req.SerializeToString())


def encode_response(stream_id: int, payload: bytes = b"", status: Status | None = None) -> bytes:
    """An OK response omits the status entirely, as the Go server does."""
    resp = Response(payload=payload)
    if status is not None and status.code != 0:
        resp.status.CopyFrom(status)
    return encode_frame(stream_id, TYPE_RESPONSE, resp.SerializeToString())


def decode_request(frame: Frame) -> Request:
    try:
        return Request.FromString(frame.data)
    except Exception as exc:
        raise ProtocolError(f"ttrpc: invalid request envelope on stream {frame.stream_id}: {exc}") from None


def decode_response(frame: Frame) -> Response:
    try:
        return Response.FromString(frame.data)
    except Exception as exc:
        raise ProtocolError(f"ttrpc: invalid response envelope on stream {frame.stream_id}: {exc}") from None
