"""ttrpc for Python: containerd's lightweight RPC protocol (v1.1, as containerd 1.6 speaks it).

`codec` is the sans-I/O wire format (frames, Request/Response envelopes), `errors` the status model
(`TtrpcError` with google.rpc codes and containerd's errdefs message convention), `server` and `client` the
asyncio adapters. Everything an integrator needs is re-exported here.
"""

from hcsshim.ttrpc.client import Client
from hcsshim.ttrpc.codec import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    TYPE_DATA,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    Frame,
    FrameDecoder,
    decode_request,
    decode_response,
    encode_frame,
    encode_request,
    encode_response,
)
from hcsshim.ttrpc.errors import (
    Code,
    ConnectionClosed,
    ProtocolError,
    TtrpcError,
    already_exists,
    failed_precondition,
    internal,
    invalid_argument,
    not_found,
    unavailable,
    unimplemented,
)
from hcsshim.ttrpc.server import Handler, RequestContext, Server

__all__ = [
    "HEADER_SIZE",
    "MAX_MESSAGE_SIZE",
    "TYPE_DATA",
    "TYPE_REQUEST",
    "TYPE_RESPONSE",
    "Client",
    "Code",
    "ConnectionClosed",
    "Frame",
    "FrameDecoder",
    "Handler",
    "ProtocolError",
    "RequestContext",
    "Server",
    "TtrpcError",
    "already_exists",
    "decode_request",
    "decode_response",
    "encode_frame",
    "encode_request",
    "encode_response",
    "failed_precondition",
    "internal",
    "invalid_argument",
    "not_found",
    "unavailable",
    "unimplemented",
]
