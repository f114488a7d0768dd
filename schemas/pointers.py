"""JSON Pointer (RFC 6901) helpers for building patch paths."""

from __future__ import annotations


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def path(*tokens: str | int) -> str:
    return "".join("/" + escape(str(t)) for t in tokens)


def tokens(pointer: str) -> list[str]:
    """The reference tokens of a JSON Pointer, unescaped (``""``, the whole document: none)."""
    if pointer and not pointer.startswith("/"):
        raise ValueError(f"not a JSON Pointer: {pointer!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]
