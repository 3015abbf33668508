"""Publishing task events to containerd: `containerd.services.events.ttrpc.v1.Events/Forward` on TTRPC_ADDRESS.

`Publisher` keeps events in publication order in a queue drained by one task it owns. The connection is made
lazily and remade after a failure; each event is tried with a 5 s deadline and requeued up to 5 times with
back-off, as containerd's own shim publisher does, so that a containerd restart loses nothing short-lived.
Publishing never blocks the caller. `close()` waits (bounded) until the queue is empty, so the last events
(`/tasks/exit`, `/tasks/delete`) reach containerd before the shim exits.
"""

from __future__ import annotations

import asyncio
import logging
import time

from google.protobuf.any_pb2 import Any
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from hcsshim.api.containerd.services.events.ttrpc.v1.events_pb2 import Envelope, ForwardRequest
from hcsshim.ttrpc import Client, TtrpcError

log = logging.getLogger("hcsshim.shim.events")

EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events"
NAMESPACE_METADATA = "containerd-namespace-ttrpc"
ATTEMPT_TIMEOUT = 5.0
MAX_ATTEMPTS = 5

TOPICS = {
    "TaskCreate": "/tasks/create",
    "TaskStart": "/tasks/start",
    "TaskExit": "/tasks/exit",
    "TaskDelete": "/tasks/delete",
    "TaskExecAdded": "/tasks/exec-added",
    "TaskExecStarted": "/tasks/exec-started",
    "TaskPaused": "/tasks/paused",
    "TaskResumed": "/tasks/resumed",
    "TaskOOM": "/tasks/oom",
    "TaskCheckpointed": "/tasks/checkpointed",
}


def now_timestamp() -> Timestamp:
    ns = time.time_ns()
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def pack_any(msg: Message) -> Any:
    """An Any with containerd's bare type URL (the message's full name, no type.googleapis.com/ prefix)."""
    return Any(type_url=msg.DESCRIPTOR.full_name, value=msg.SerializeToString())


class Publisher:
    """Ordered, retried, non-blocking event forwarding (states: RUNNING -> CLOSING -> CLOSED)."""

    def __init__(self, address: str, namespace: str) -> None:
        self.address = address
        self.namespace = namespace
        self.state = "RUNNING"
        self._queue: asyncio.Queue[tuple[str, Message] | None] = asyncio.Queue()
        self._client: Client | None = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="event-publisher")
        self.published = 0

    def publish(self, event: Message) -> None:
        """Queues an event; its topic follows from its type."""
        if self.state != "RUNNING":
            log.warning("event %s dropped: publisher is %s", event.DESCRIPTOR.name, self.state)
            return
        self._queue.put_nowait((TOPICS[event.DESCRIPTOR.name], event))

    async def _connect(self) -> Client:
        if self._client is None or self._client.closed:
            self._client = await Client.connect(self.address, timeout=ATTEMPT_TIMEOUT)
        return self._client

    async def _send(self, topic: str, event: Message) -> None:
        envelope = Envelope(timestamp=now_timestamp(), namespace=self.namespace, topic=topic,
                            event=pack_any(event))
        request = ForwardRequest(envelope=envelope)
        delay = 0.05
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                client = await self._connect()
                await client.call(EVENTS_SERVICE, "Forward", request, Empty,
                                  timeout=ATTEMPT_TIMEOUT, metadata={NAMESPACE_METADATA: self.namespace})
                self.published += 1
                return
            except (TimeoutError, OSError, TtrpcError) as exc:
                log.warning("publish %s (attempt %d/%d): %s", topic, attempt, MAX_ATTEMPTS, exc)
                if self._client is not None:
                    await self._client.close()
                    self._client = None
                if attempt < MAX_ATTEMPTS:
                    await asyncio.sleep(delay)
                    delay = min(delay * 4, 2.0)
        log.error("publish %s: giving up after %d attempts", topic, MAX_ATTEMPTS)

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if not self.address:
                continue
            await self._send(*item)

    async def close(self, timeout: float = 10.0) -> None:
        """Delivers what is queued (for at most `timeout` seconds), then stops and disconnects."""
        if self.state == "CLOSED":
            return
        self.state = "CLOSING"
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            log.error("event publisher: %d events not delivered within %.0fs", self._queue.qsize(), timeout)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._client is not None:
            await self._client.close()
            self._client = None
        self.state = "CLOSED"

