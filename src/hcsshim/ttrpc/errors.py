"""The ttrpc error model: google.rpc status codes and the one exception of this wire, `TtrpcError`.

A handler raises `TtrpcError(code, message)`; the server sends it as a `google.rpc.Status`; the client raises
it again from the status. Messages follow containerd's errdefs convention so that containerd maps them back to
its error classes: `not_found("task c1")` carries NOT_FOUND and the message `"task c1: not found"`.
`ProtocolError` is not an RPC status: the bytes on the wire are malformed and the connection must end.
"""

from __future__ import annotations

import enum

from hcsshim.api.google.rpc.status_pb2 import Status


class Code(enum.IntEnum):
    """google.rpc.Code, as carried in `Status.code`."""

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
    """An RPC failed with a status code and a message; str() is the message.

    `code` is a `Code`; a code outside google.rpc's range received from a peer is kept as a plain int.
    """

    def __init__(self, code: Code | int, message: str) -> None:
        super().__init__(message)
        try:
            self.code: Code = Code(code)
        except ValueError:
            self.code = code  # type: ignore[assignment]
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        name = self.code.name if isinstance(self.code, Code) else str(self.code)
        return f"{type(self).__name__}({name}, {self.message!r})"

    def __reduce__(self) -> tuple[object, ...]:
        return TtrpcError, (int(self.code), self.message)

    def to_status(self) -> Status:
        return Status(code=int(self.code), message=self.message)

    @classmethod
    def from_status(cls, st: Status) -> TtrpcError:
        return cls(st.code, st.message)


class ConnectionClosed(TtrpcError):
    """The connection ended before the call was answered, or the client is closed (code UNAVAILABLE)."""

    def __init__(self, message: str = "ttrpc: closed") -> None:
        super().__init__(Code.UNAVAILABLE, message)

    def __reduce__(self) -> tuple[object, ...]:
        return ConnectionClosed, (self.message,)


class ProtocolError(Exception):
    """Malformed input on the wire (framing or envelope): the connection cannot continue."""


# containerd errdefs: the text each error class appends, and strips again in errdefs.FromGRPC.
CLASS_TEXT: dict[Code, str] = {
    Code.UNKNOWN: "unknown",
    Code.INVALID_ARGUMENT: "invalid argument",
    Code.NOT_FOUND: "not found",
    Code.ALREADY_EXISTS: "already exists",
    Code.FAILED_PRECONDITION: "failed precondition",
    Code.UNIMPLEMENTED: "not implemented",
    Code.UNAVAILABLE: "unavailable",
}


def with_class(code: Code, message: str) -> TtrpcError:
    """A TtrpcError whose message ends with containerd's class text for `code` (added unless present)."""
    text = CLASS_TEXT.get(code)
    if text and message != text and not message.endswith(": " + text):
        message = f"{message}: {text}" if message else text
    return TtrpcError(code, message)


def not_found(message: str) -> TtrpcError:
    return with_class(Code.NOT_FOUND, message)


def already_exists(message: str) -> TtrpcError:
    return with_class(Code.ALREADY_EXISTS, message)


def failed_precondition(message: str) -> TtrpcError:
    return with_class(Code.FAILED_PRECONDITION, message)


def invalid_argument(message: str) -> TtrpcError:
    return with_class(Code.INVALID_ARGUMENT, message)


def unimplemented(message: str) -> TtrpcError:
    return with_class(Code.UNIMPLEMENTED, message)


def unavailable(message: str) -> TtrpcError:
    return with_class(Code.UNAVAILABLE, message)


def internal(message: str) -> TtrpcError:
    """INTERNAL has no errdefs class text (containerd maps it to ErrUnknown): the message is kept as is."""
    return TtrpcError(Code.INTERNAL, message)
