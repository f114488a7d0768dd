"""Fast deep copies of JSON-shaped data (dicts, lists, scalars).

``copy.deepcopy`` spends most of its time on memo bookkeeping JSON never needs; a msgpack round
trip does the same job in C, about three times faster, and the transforms copy every object."""

from __future__ import annotations

from typing import Any, TypeVar

import msgpack

T = TypeVar("T")
_pack = msgpack.Packer(use_bin_type=True).pack


def clone(value: T) -> T:
    result: Any = msgpack.unpackb(_pack(value), raw=False, strict_map_key=False)
    return result  # type: ignore[no-any-return]
