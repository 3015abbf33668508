"""Port-addressed connections between host and guest: vsock, unix sockets in a directory, and a port
multiplexer over one byte stream (docs/transport-mux.md). Standard library only (the guest uses it).
"""

from hcsshim.transport.base import (
    Conn,
    FdConn,
    Listener,
    SocketConn,
    Transport,
    UnixTransport,
    VsockTransport,
    open_transport,
)

__all__ = ["Conn", "FdConn", "Listener", "SocketConn", "Transport", "UnixTransport", "VsockTransport", "open_transport"]
