"""The engine's event bus: what happened to containers and images, Docker-shaped.

The engine emits one event per lifecycle step (container create, start,
kill, oom, die, destroy, commit; image tag, untag, delete) with a one-line
call; ``GET /events`` and ``docker events`` read them through a
`Subscription`. Every event is also kept in a short history, so that
``since=`` can replay what happened just before a client asked.

The bus never blocks the engine: emitting is a dict and a few appends, and a
subscriber that does not keep up loses events (counted in ``dropped``)
rather than holding anything back. Everything happens in one thread (the
daemon's event loop), so there is no locking.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from sandbox.store.containers import ContainerRecord
from sandbox.store.images import Image

Event = dict[str, Any]
#: An event and the uid that owns what it is about (the daemon shows a user
#: only the events of their own containers and images).
Owned = tuple[int, Event]

#: Events kept for ``since=`` (Docker keeps 256; a notebook session makes a
#: few per cell).
HISTORY = 1024
#: Events a subscriber may have unread before new ones are dropped for it.
QUEUE_SIZE = 4096


class Subscription:
    """One reader of the bus: a bounded queue of the events emitted since it began.

    Use as a context manager (or call `close`) so the bus forgets it.
    """

    def __init__(self, bus: EventBus, size: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Owned] = asyncio.Queue(size)
        #: Events lost because the queue was full.
        self.dropped = 0

    def put(self, item: Owned) -> None:
        """Queue an event; drop it if the reader is too far behind."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    async def get(self) -> Owned:
        """The next event and its owner (waits for one)."""
        return await self._queue.get()

    def close(self) -> None:
        self._bus._subscribers.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Fans the engine's events out to subscribers and keeps a short history."""

    def __init__(self, history: int = HISTORY) -> None:
        self._subscribers: set[Subscription] = set()
        self._history: deque[Owned] = deque(maxlen=history)

    def subscribe(self, size: int = QUEUE_SIZE) -> Subscription:
        """A subscription to every event emitted from now on.

        Take it in the same step as `history` (no ``await`` in between) to
        replay the past and follow the present with no gap and no overlap.
        """
        sub = Subscription(self, size)
        self._subscribers.add(sub)
        return sub

    def history(self) -> Iterator[Owned]:
        """The recent events and their owners, oldest first (at most `HISTORY`)."""
        return iter(list(self._history))

    def emit(self, kind: str, action: str, actor: str, attributes: dict[str, str],
             legacy: dict[str, str] | None = None, owner: int = 0) -> Event:  # fmt: skip
        """Record an event and hand it to every subscriber; returns it.

        Args:
            kind: ``container`` or ``image`` (Docker's ``Type``).
            action: what happened (``create``, ``die``...).
            actor: the container ID, or the image ID or name.
            attributes: string values only (clients decode a map of strings).
            legacy: the pre-1.22 fields (``status``, ``id``, ``from``).
            owner: the uid that owns the container or image.
        """
        now = time.time_ns()
        event: Event = {
            **(legacy or {}),
            "Type": kind,
            "Action": action,
            "Actor": {"ID": actor, "Attributes": attributes},
            "scope": "local",
            "time": now // 1_000_000_000,
            "timeNano": now,
        }
        item = (owner, event)
        self._history.append(item)
        for sub in list(self._subscribers):
            sub.put(item)
        return event

    def container(self, action: str, record: ContainerRecord, **extra: str) -> Event:
        """A container event; its attributes are its labels, name, image and ``extra``."""
        attributes = {**record.labels, "image": record.image, "name": record.name, **extra}
        legacy = {"status": action, "id": record.id, "from": record.image}
        return self.emit("container", action, record.id, attributes, legacy, record.owner)

    def image(self, action: str, image: Image, name: str) -> Event:
        """An image event; ``name`` is the tag (or the reference used)."""
        actor = f"sha256:{image.id}"
        return self.emit("image", action, actor, {"name": name},
                         {"status": action, "id": name or actor}, image.owner)  # fmt: skip

    def network(self, action: str, network: Any, container: ContainerRecord | None = None) -> Event:
        """A network event (``create``, ``destroy``, ``connect``, ``disconnect``)."""
        attributes = {"name": network.name, "type": network.driver}
        if container is not None:
            attributes["container"] = container.id
        owner = container.owner if container is not None else getattr(network, "owner", 0)
        return self.emit("network", action, network.id, attributes, owner=owner)


__all__ = ["HISTORY", "QUEUE_SIZE", "Event", "EventBus", "Owned", "Subscription"]
