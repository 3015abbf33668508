"""The ttrpc error model: google.rpc status codes and the one exception of this wire, `TtrpcError`.

Messages follow containerd's errdefs convention so that containerd maps them back to its error classes:
`"task c1 not found: not found"` carries NOT_FOUND and ends with the class text.
"""

from __future__ import annotations

import enum

from hcsshim.api.google.rpc.status_pb2 import Status


class Code(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class TtrpcError(Exception):
    """An RPC failed with a status code and message (str() is the message)."""

    def __init__(self, code: Code | int, message: str) -> None:
        super().__init__(message)
        self.code = Code(code) if code in Code._value2member_map_ else code
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        name = self.code.name if isinstance(self.code, Code) else str(self.code)
        return f"TtrpcError({name}, {self.message!r})"

    def to_status(self) -> Status:
        return Status(code=int(self.code), message=self.message)

    @classmethod
    def from_status(cls, status: Status) -> TtrpcError:
        return cls(status.code, status.message)


class ConnectionClosed(TtrpcError):
    """The connection ended before (or while) the call was answered."""

    def __init__(self, message: str = "ttrpc: closed") -> None:
        super().__init__(Code.UNAVAILABLE, message)


class ProtocolError(Exception):
    """Malformed input on the wire (framing or envelope); the connection cannot continue."""


_CLASS_TEXT = {
    Code.NOT_FOUND: "not found",
    Code.ALREADY_EXISTS: "already exists",
    Code.FAILED_PRECONDITION: "failed precondition",
    Code.INVALID_ARGUMENT: "invalid argument",
    Code.UNIMPLEMENTED: "not implemented",
    Code.UNAVAILABLE: "unavailable",
}


def _with_class(code: Code, message: str) -> TtrpcError:
    text = _CLASS_TEXT.get(code)
    if text and not message.endswith(": " + text):
        message = f"{message}: {text}"
    return TtrpcError(code, message)


def not_found(message: str) -> TtrpcError:
    return _with_class(Code.NOT_FOUND, message)


def already_exists(message: str) -> TtrpcError:
    return _with_class(Code.ALREADY_EXISTS, message)


def failed_precondition(message: str) -> TtrpcError:
    return _with_class(Code.FAILED_PRECONDITION, message)


def invalid_argument(message: str) -> TtrpcError:
    return _with_class(Code.INVALID_ARGUMENT, message)


def unimplemented(message: str) -> TtrpcError:
    return _with_class(Code.UNIMPLEMENTED, message)


def internal(message: str) -> TtrpcError:
    return TtrpcError(Code.INTERNAL, message)
