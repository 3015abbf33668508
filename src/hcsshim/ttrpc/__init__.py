"""ttrpc for Python: containerd's lightweight RPC protocol (sans-I/O codec, asyncio client and server)."""

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
from hcsshim.ttrpc.errors import Code, ConnectionClosed, ProtocolError, TtrpcError
from hcsshim.ttrpc.server import RequestContext, Server

__all__ = [
    "HEADER_SIZE", "MAX_MESSAGE_SIZE", "TYPE_DATA", "TYPE_REQUEST", "TYPE_RESPONSE", "Client", "Code",
    "ConnectionClosed", "Frame", "FrameDecoder", "ProtocolError", "RequestContext", "Server", "TtrpcError",
    "decode_request", "decode_response", "encode_frame", "encode_request", "encode_response",
]
