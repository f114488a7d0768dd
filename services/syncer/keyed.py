"""A work queue that keeps order per key and hands any ready key to any free worker.

Like client-go's workqueue: one key is never in two workers' hands at once, so the changes of one
object apply in order, while a free worker always takes the next key that has work. (Hashing keys
to fixed per-worker queues keeps order too, but leaves workers idle while others hold a backlog,
and one slow object delays every object hashed with it.)"""

from __future__ import annotations

import asyncio
import collections
from typing import Generic, TypeVar

T = TypeVar("T")


class KeyedQueue(Generic[T]):
    def __init__(self) -> None:
        self._items: dict[str, collections.deque[T]] = {}
        self._ready: asyncio.Queue[str] = asyncio.Queue()

    def __len__(self) -> int:
        """Items queued or in a worker's hands."""
        return sum(len(items) for items in self._items.values())

    def put(self, key: str, item: T) -> None:
        items = self._items.get(key)
        if items is None:
            self._items[key] = collections.deque((item,))
            self._ready.put_nowait(key)
        else:
            items.append(item)  # behind the one in flight (or already ready) for this key

    async def get(self) -> tuple[str, T]:
        """The oldest item of the next ready key; call :meth:`done` with the key when finished."""
        key = await self._ready.get()
        return key, self._items[key][0]

    def done(self, key: str) -> None:
        items = self._items[key]
        items.popleft()
        if items:
            self._ready.put_nowait(key)
        else:
            del self._items[key]
