"""JSON Pointer (RFC 6901) helpers for building patch paths."""

from __future__ import annotations


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def path(*tokens: str | int) -> str:
    return "".join("/" + escape(str(t)) for t in tokens)
