"""Raw socket exchanges for tests that play a misbehaving peer (malformed frames, early EOF)."""

from __future__ import annotations

import socket


def unix_exchange(path: str, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Connects to a unix socket, sends data, half-closes, and returns everything the peer sends back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
        return b"".join(chunks)
