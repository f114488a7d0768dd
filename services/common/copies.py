"""Listing the copies of some plans in the destination: the one way the syncer, recovery and
``standby diff`` find them.

The API server selects by the plan label, so a stand-by holding many plans' copies sends only the
ones asked for; a second LIST finds the copies an earlier Standby wrote without that label. The
plan annotation, exact where a long plan's label is shortened, decides."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from typing import Any

from schemas import annotations as ann
from services.common.kube import KubeClient

Obj = dict[str, Any]


async def list_copies(client: KubeClient, collection: str, plan_keys: Collection[str], *,
                      accept: str | None = None, page_size: int = 500) -> list[Obj]:
    """The copies of ``plan_keys`` in ``collection`` (a LIST path), each once (``accept``: see
    :meth:`KubeClient.list_all`). Raises what the LISTs raise."""
    if not plan_keys:
        return []
    lists = await asyncio.gather(*(client.list_all(collection, label_selector=selector, accept=accept,
                                                   page_size=page_size)
                                   for selector in ann.copies_selectors(plan_keys)))
    return [obj for items, _ in lists for obj in _of(items, plan_keys)]


async def copy_pages(client: KubeClient, collection: str, selector: str, plan_keys: Collection[str], *,
                     accept: str | None = None, page_size: int = 500,
                     first_page_size: int | None = None) -> AsyncIterator[list[Obj]]:
    """The copies of ``plan_keys`` in ``collection`` that one of :func:`schemas.annotations.copies_selectors`
    selects, page by page as the API server sends them (a caller can act on the first page while the
    next is on its way; see :meth:`KubeClient.list_pages`). Raises what the LIST raises."""
    async for page, _ in client.list_pages(collection, label_selector=selector, accept=accept, page_size=page_size,
                                           first_page_size=first_page_size):
        yield _of(page, plan_keys)


def _of(items: list[Obj], plan_keys: Collection[str]) -> list[Obj]:
    """The plan annotation decides (a shortened label can select another plan's copies too)."""
    return [obj for obj in items if (obj["metadata"].get("annotations") or {}).get(ann.PLAN) in plan_keys]
