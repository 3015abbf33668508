"""Notifications of an open compute system or process as awaitable streams: one `EventFeed` per object, any number
of `EventStream` subscribers.

A feed publishes each backend `Event` to every stream subscribed at that moment, in order, and ends every stream
once (after the object's terminal event, or when the object is closed): a stream then yields what it still holds
and stops. A stream subscribed after the end is empty. Streams buffer without bound (HCS sends a handful of
events per object); a subscriber that stops reading should `close()` its stream, or use it as a context manager::

    async with system.events() as events:
        async for event in events:
            ...

Everything here runs on the event loop's thread (the backend delivers events there), so there is no locking.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Final

from hcsshim.hcs.backend import Event

__all__ = ["EventFeed", "EventStream"]


class _End:
    """The marker that ends a stream."""


_END: Final = _End()


class EventStream:
    """One subscriber's events, from subscription to the feed's end: an async iterator of `Event`."""

    def __init__(self, feed: EventFeed) -> None:
        self._feed = feed
        self._queue: asyncio.Queue[Event | _End] = asyncio.Queue()
        self._done = False
        if feed.ended:
            self._queue.put_nowait(_END)
        else:
            feed._streams.add(self)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, _End):
            self.close()
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        """Stop receiving (what is already queued is dropped); iteration ends."""
        self._done = True
        self._feed._streams.discard(self)

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()


class EventFeed:
    """The events of one object, fanned out to its streams."""

    def __init__(self) -> None:
        self._streams: set[EventStream] = set()
        self.ended = False

    def subscribe(self) -> EventStream:
        """A new stream of the events published from now on."""
        return EventStream(self)

    def publish(self, event: Event) -> None:
        """Hand `event` to every current stream (nothing after the end)."""
        if self.ended:
            return
        for stream in self._streams:
            stream._queue.put_nowait(event)

    def end(self) -> None:
        """End every stream (once); later publications are dropped."""
        if self.ended:
            return
        self.ended = True
        for stream in self._streams:
            stream._queue.put_nowait(_END)
        self._streams.clear()
