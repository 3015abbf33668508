"""The bridge's wire format, sans-I/O: 16-byte headers, type codes, the decoder, JSON conventions, HRESULTs.

Owns everything both ends must agree on byte for byte (specs/gcs-bridge.md sections 1.4-1.7 and 3):

* a message is a 16-byte little-endian header ``Type u32 | Size u32 (total, header included) | ID u64``
  followed by a UTF-8 JSON body; `encode` builds one, `Decoder` cuts a byte stream into `Message` objects
  and raises `ProtocolError` for a size below 16 or above its limit (the host's is 64 KiB, `MAX_MESSAGE_SIZE`);
* type codes: kind (request/response/notification) | category | number << 8 | version 1;
* JSON as each Go end writes it: the host's encoder (compact, no HTML escaping, trailing newline) and the
  guest's json.Marshal (compact, ``<>&`` escaped, no newline); decoding accepts both, matches keys
  case-insensitively, ignores unknown keys and defaults missing ones (`field`);
* fields that carry a JSON document inside a JSON string (`json_string`, `inner_json`);
* HRESULTs (negative int32 on the wire) and the error body with ErrorRecords (`error_body`, `HResultError`).

Standard library only: the guest agent imports this module.
"""

from __future__ import annotations

import json
import struct
from typing import Any

__all__ = [
    "ERROR_NOT_FOUND",
    "E_FAIL",
    "E_INVALIDARG",
    "E_NOTIMPL",
    "HEADER_SIZE",
    "KIND_MASK",
    "KIND_NOTIFICATION",
    "KIND_REQUEST",
    "KIND_RESPONSE",
    "MAX_MESSAGE_SIZE",
    "NOTIFY_CONTAINER",
    "NULL_GUID",
    "VMCOMPUTE_INVALID_JSON",
    "VMCOMPUTE_INVALID_STATE",
    "VMCOMPUTE_SYSTEM_ALREADY_EXISTS",
    "VMCOMPUTE_SYSTEM_ALREADY_STOPPED",
    "VMCOMPUTE_SYSTEM_NOT_FOUND",
    "VMCOMPUTE_TIMEOUT",
    "VMCOMPUTE_UNKNOWN_MESSAGE",
    "VMCOMPUTE_UNSUPPORTED_PROTOCOL_VERSION",
    "Decoder",
    "HResultError",
    "Message",
    "ProtocolError",
    "Rpc",
    "dumps_guest",
    "dumps_host",
    "encode",
    "error_body",
    "field",
    "hresult_name",
    "inner_json",
    "int32",
    "json_string",
    "kind_of",
    "loads",
    "request_type",
    "response_type",
    "type_name",
    "uint32",
]

HEADER_SIZE = 16
MAX_MESSAGE_SIZE = 0x10000  # the host's inclusive maximum for a whole message (header + body)
_HEADER = struct.Struct("<IIQ")

KIND_MASK = 0xF0000000
KIND_REQUEST = 0x10000000
KIND_RESPONSE = 0x20000000
KIND_NOTIFICATION = 0x30000000
_CATEGORY_SYSTEM = 0x00100000
_CATEGORY_SERVICE = 0x00200000

NULL_GUID = "00000000-0000-0000-0000-000000000000"


class Rpc:
    """RPC codes (category | n << 8 | version 1) without the kind bits; `request_type(Rpc.X)` adds them."""

    CREATE = _CATEGORY_SYSTEM | 0x0101
    START = _CATEGORY_SYSTEM | 0x0201
    SHUTDOWN_GRACEFUL = _CATEGORY_SYSTEM | 0x0301
    SHUTDOWN_FORCED = _CATEGORY_SYSTEM | 0x0401
    EXECUTE_PROCESS = _CATEGORY_SYSTEM | 0x0501
    WAIT_FOR_PROCESS = _CATEGORY_SYSTEM | 0x0601
    SIGNAL_PROCESS = _CATEGORY_SYSTEM | 0x0701
    RESIZE_CONSOLE = _CATEGORY_SYSTEM | 0x0801
    GET_PROPERTIES = _CATEGORY_SYSTEM | 0x0901
    MODIFY_SETTINGS = _CATEGORY_SYSTEM | 0x0A01
    NEGOTIATE_PROTOCOL = _CATEGORY_SYSTEM | 0x0B01
    DUMP_STACKS = _CATEGORY_SYSTEM | 0x0C01
    DELETE_CONTAINER_STATE = _CATEGORY_SYSTEM | 0x0D01
    UPDATE_CONTAINER = _CATEGORY_SYSTEM | 0x0E01
    LIFECYCLE_NOTIFICATION = _CATEGORY_SYSTEM | 0x0F01
    MODIFY_SERVICE_SETTINGS = _CATEGORY_SERVICE | 0x0101


_RPC_NAMES = {v: k for k, v in vars(Rpc).items() if k.isupper()}
NOTIFY_CONTAINER = KIND_NOTIFICATION | _CATEGORY_SYSTEM | 0x0101


def request_type(rpc: int) -> int:
    return KIND_REQUEST | rpc


def response_type(type: int) -> int:
    """The response type for a request type (the guest does this even for unknown types)."""
    return KIND_RESPONSE | (type & 0x0FFFFFFF)


def kind_of(type: int) -> int:
    return type & KIND_MASK


def type_name(type: int) -> str:
    """A readable name for logs and errors: "ExecuteProcess request", "0x10100f02"."""
    kind = {KIND_REQUEST: "request", KIND_RESPONSE: "response", KIND_NOTIFICATION: "notification"}.get(
        kind_of(type))
    if type == NOTIFY_CONTAINER:
        return "container notification"
    name = _RPC_NAMES.get(type & 0x0FFFFFFF)
    if name is None or kind is None:
        return f"{type:#010x}"
    return "".join(p.capitalize() for p in name.split("_")) + " " + kind


# --- HRESULTs -------------------------------------------------------------------------------------------

E_NOTIMPL = 0x80004001
E_FAIL = 0x80004005
ERROR_NOT_FOUND = 0x80070490
E_INVALIDARG = 0x80070057
VMCOMPUTE_TIMEOUT = 0xC0370109
VMCOMPUTE_UNKNOWN_MESSAGE = 0xC037010B
VMCOMPUTE_UNSUPPORTED_PROTOCOL_VERSION = 0xC037010C
VMCOMPUTE_INVALID_JSON = 0xC037010D
VMCOMPUTE_SYSTEM_NOT_FOUND = 0xC037010E
VMCOMPUTE_SYSTEM_ALREADY_EXISTS = 0xC037010F
VMCOMPUTE_SYSTEM_ALREADY_STOPPED = 0xC0370110
VMCOMPUTE_INVALID_STATE = 0x80370105

_HRESULT_NAMES = {
    E_NOTIMPL: "not implemented", E_FAIL: "unspecified failure", ERROR_NOT_FOUND: "element not found",
    E_INVALIDARG: "invalid argument", VMCOMPUTE_TIMEOUT: "operation timed out",
    VMCOMPUTE_UNKNOWN_MESSAGE: "unknown message", VMCOMPUTE_UNSUPPORTED_PROTOCOL_VERSION:
    "unsupported protocol version", VMCOMPUTE_INVALID_JSON: "invalid JSON",
    VMCOMPUTE_SYSTEM_NOT_FOUND: "system not found", VMCOMPUTE_SYSTEM_ALREADY_EXISTS: "system already exists",
    VMCOMPUTE_SYSTEM_ALREADY_STOPPED: "system already stopped", VMCOMPUTE_INVALID_STATE: "invalid state",
}


def int32(value: int) -> int:
    """An HRESULT (or any 32-bit pattern) as the signed int32 the wire carries: 0xC037010E -> -1070137074."""
    value &= 0xFFFFFFFF
    return value - 0x100000000 if value & 0x80000000 else value


def uint32(value: int) -> int:
    """A 32-bit pattern as an unsigned value (exit codes, pids): -1 -> 4294967295."""
    return value & 0xFFFFFFFF


def hresult_name(hr: int) -> str:
    hr = uint32(hr)
    name = _HRESULT_NAMES.get(hr)
    return f"HRESULT {hr:#010x} ({name})" if name else f"HRESULT {hr:#010x}"


class HResultError(Exception):
    """A failure that travels as an HRESULT: raised by guest handlers, and by the host for an error result.

    hresult is the unsigned 32-bit value (0xC037010E); message the human-readable text; records the
    ErrorRecords of a received error (list of dicts, empty when sent by us).
    """

    def __init__(self, hresult: int, message: str = "", records: list[dict[str, Any]] | None = None) -> None:
        self.hresult = uint32(hresult)
        self.message = message or hresult_name(hresult)
        self.records = records or []
        super().__init__(self.message if message else hresult_name(hresult))

    def __str__(self) -> str:
        if self.message == hresult_name(self.hresult):
            return self.message
        return f"{self.message} ({hresult_name(self.hresult)})"


class ProtocolError(Exception):
    """The byte stream broke the framing rules (bad size): the connection cannot continue."""


# --- framing --------------------------------------------------------------------------------------------


class Message:
    """One framed message: its type code, id and raw JSON body bytes."""

    __slots__ = ("body", "id", "type")

    def __init__(self, type: int, id: int, body: bytes) -> None:
        self.type = type
        self.id = id
        self.body = body

    @property
    def kind(self) -> int:
        return self.type & KIND_MASK

    def json(self) -> Any:
        return loads(self.body)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.type, self.id, self.body) == (other.type, other.id, other.body)

    def __hash__(self) -> int:
        return hash((self.type, self.id, self.body))

    def __repr__(self) -> str:
        return f"Message({type_name(self.type)}, id={self.id}, body={self.body[:200]!r})"


def encode(type: int, id: int, body: bytes, *, max_size: int | None = None) -> bytes:
    """Header + body as one bytes object; ValueError when the message would exceed max_size."""
    size = HEADER_SIZE + len(body)
    if max_size is not None and size > max_size:
        raise ValueError(f"encode {type_name(type)} id {id}: {size} bytes exceeds the limit of {max_size}")
    return _HEADER.pack(type & 0xFFFFFFFF, size, id & 0xFFFFFFFFFFFFFFFF) + body


class Decoder:
    """Cuts a byte stream into Messages: `feed(data)` then `next_message()` until it returns None.

    max_size: the largest total size accepted (None: no limit, like the Go guest). A header with a size
    below 16 or above max_size raises ProtocolError; the decoder is then broken and raises again.
    """

    __slots__ = ("_buf", "_error", "_pos", "max_size")

    def __init__(self, max_size: int | None = MAX_MESSAGE_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._pos = 0
        self._error: ProtocolError | None = None

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a message."""
        return len(self._buf) - self._pos

    def next_message(self) -> Message | None:
        if self._error is not None:
            raise self._error
        buf, pos = self._buf, self._pos
        if len(buf) - pos < HEADER_SIZE:
            return None
        type, size, id = _HEADER.unpack_from(buf, pos)
        if size < HEADER_SIZE or (self.max_size is not None and size > self.max_size):
            limit = "" if self.max_size is None else f" (limit {self.max_size})"
            self._error = ProtocolError(
                f"bridge message {type_name(type)} id {id}: invalid size {size}{limit}")
            raise self._error
        if len(buf) - pos < size:
            return None
        body = bytes(buf[pos + HEADER_SIZE:pos + size])
        self._pos = pos + size
        if self._pos > 1 << 20:  # compact now and then
            del buf[:self._pos]
            self._pos = 0
        return Message(type, id, body)


# --- JSON ------------------------------------------------------------------------------------------------

_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps_host(obj: Any) -> bytes:
    """As the Go host's json.Encoder writes it: compact, HTML characters as is, trailing newline."""
    return (_compact(obj) + "\n").encode()


def dumps_guest(obj: Any) -> bytes:
    """As the Go guest's json.Marshal writes it: compact, ``<>&`` and U+2028/9 escaped, no newline."""
    text = _compact(obj)
    if "<" in text or ">" in text or "&" in text or "\u2028" in text or "\u2029" in text:
        # These characters can only occur inside JSON strings, where the escape means the same character.
        text = (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
                .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return text.encode()


def loads(body: bytes | str) -> Any:
    """Decode a body (trailing newline allowed); HResultError(VMCOMPUTE_INVALID_JSON) when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise HResultError(VMCOMPUTE_INVALID_JSON, f"invalid JSON: {e}") from e


def json_string(obj: Any) -> str:
    """A JSON document to put into a JSON-in-a-string field (ContainerConfig, ProcessParameters, ...)."""
    return _compact(obj)


def inner_json(value: Any, name: str) -> Any:
    """Decode a JSON-in-a-string field; an absent/empty field is None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise HResultError(VMCOMPUTE_INVALID_JSON, f"field {name}: expected a string holding JSON")
    try:
        return json.loads(value)
    except ValueError as e:
        raise HResultError(VMCOMPUTE_INVALID_JSON, f"field {name}: invalid JSON: {e}") from e


_MISSING = object()
_RANGES = {"uint8": (0, 0xFF), "uint16": (0, 0xFFFF), "uint32": (0, 0xFFFFFFFF), "int32": (-(1 << 31), (1 << 31) - 1),
           "uint64": (0, (1 << 64) - 1), "int": (-(1 << 63), (1 << 63) - 1)}
_ZERO: dict[type | str, Any] = {str: "", bool: False, dict: None, list: None}


def field(obj: Any, name: str, kind: type | str = str, default: Any = _MISSING) -> Any:
    """Look up `name` in a decoded JSON object as Go does: exact key first, else case-insensitively.

    kind: str, bool, dict, list or an integer range name ("uint32", "int32", "uint8", ...). A missing
    or null key gives `default`, else the zero value (None for dict/list). A value of the wrong type or
    out of range raises HResultError(VMCOMPUTE_INVALID_JSON) naming the field.
    """
    if not isinstance(obj, dict):
        raise HResultError(VMCOMPUTE_INVALID_JSON, f"field {name}: parent is not a JSON object")
    value = obj.get(name, _MISSING)
    if value is _MISSING:
        folded = name.casefold()
        for key, v in obj.items():
            if key.casefold() == folded:
                value = v
                break
    if value is _MISSING or value is None:
        if default is not _MISSING:
            return default
        return 0 if isinstance(kind, str) else _ZERO[kind]
    if isinstance(kind, str):
        lo, hi = _RANGES[kind]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise HResultError(VMCOMPUTE_INVALID_JSON, f"field {name}: expected {kind}, got {value!r:.80}")
        return value
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise HResultError(VMCOMPUTE_INVALID_JSON,
                           f"field {name}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def error_body(hresult: int, message: str, activity_id: str = NULL_GUID, **extra: Any) -> dict[str, Any]:
    """A guest error response: Result, ActivityId, ErrorMessage and one ErrorRecord, like the Go GCS."""
    result = int32(hresult)
    body: dict[str, Any] = {"Result": result, "ActivityId": activity_id or NULL_GUID, "ErrorMessage": message,
                            "ErrorRecords": [{"Result": result, "Message": message, "ModuleName": "gcs",
                                              "FileName": "", "Line": 0xFFFFFFFF}]}
    body.update(extra)
    return body
