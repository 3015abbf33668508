"""The host-side client of the guest agent (GCS): asyncio `GuestConnection`, `Container` and `Process` over
the bridge protocol (`hcsshim.bridge`) and a transport (`hcsshim.transport`)."""

from hcsshim.gcs.client import BridgeClosed, Container, GuestConnection, Process

__all__ = ["BridgeClosed", "Container", "GuestConnection", "Process"]
