"""Sealing of Secret bodies in the stream: AES-256-GCM under a named key from a keyring.

The stream is a durable copy of the source, kept for days; a Secret's values must not sit in it in
clear (DESIGN 7). The watcher seals the body of every Secret before publishing; the syncer and
``fromOriginal`` recovery open it. The associated data binds a sealed body to the object, version
and plan it was published for, so a body cannot be replayed under another object's message.

Keys are named (``kid``) so they can be rotated: a keyring seals with its ``active`` key and opens
with any key it holds. A body sealed under a key the reader does not hold raises
:class:`UnknownKeyError` (the reader's keyring may be behind: retry); one that does not
authenticate raises :class:`TamperedError` (never retried: it will not get better)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ID = re.compile(r"^[A-Za-z0-9][-._A-Za-z0-9]{0,62}$")  # also a valid Secret data key
ACTIVE = "active"  # the Secret data entry that names the key to seal with


class SealingError(ValueError):
    """A sealed body cannot be sealed or opened."""


class UnknownKeyError(SealingError):
    """Sealed under a key this keyring does not hold (yet)."""


class TamperedError(SealingError):
    """The sealed body does not authenticate: altered, or sealed for another object."""


def sealed_resource(group: str, resource: str) -> bool:
    """Whose bodies are sealed: core Secrets (their ``data`` and ``stringData`` are the secret)."""
    return group == "" and resource == "secrets"


@dataclass(frozen=True)
class Keyring:
    active: str
    keys: dict[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        for kid, key in self.keys.items():
            if not KEY_ID.match(kid) or kid == ACTIVE:
                raise SealingError(f"invalid key id {kid!r} (letters, digits, '-', '.', '_'; not {ACTIVE!r})")
            if len(key) != KEY_BYTES:
                raise SealingError(f"key {kid!r} has {len(key)} bytes; AES-256 needs {KEY_BYTES}")
        if self.active not in self.keys:
            raise SealingError(f"the active key {self.active!r} is not in the keyring")

    @classmethod
    def from_secret_data(cls, data: dict[str, bytes]) -> Keyring:
        """``data`` of the keys Secret, base64-decoded: ``active`` names a key; every other entry is one."""
        if ACTIVE not in data:
            raise SealingError(f"no {ACTIVE!r} entry naming the key to seal with")
        return cls(data[ACTIVE].decode("ascii", "replace").strip(),
                   {kid: key for kid, key in data.items() if kid != ACTIVE})

    def seal(self, plaintext: bytes, associated: bytes) -> dict[str, Any]:
        nonce = os.urandom(NONCE_BYTES)  # random 96-bit nonces: safe far beyond any stream's message count per key
        return {"k": self.active, "n": nonce,
                "c": AESGCM(self.keys[self.active]).encrypt(nonce, plaintext, associated)}

    def open(self, sealed: Any, associated: bytes) -> bytes:
        if not isinstance(sealed, dict) or not isinstance(sealed.get("n"), bytes) \
                or not isinstance(sealed.get("c"), bytes) or not isinstance(sealed.get("k"), str):
            raise TamperedError("malformed sealed body")
        key = self.keys.get(sealed["k"])
        if key is None:
            raise UnknownKeyError(f"sealed under key {sealed['k']!r}, which this keyring does not hold "
                                  f"(holds {sorted(self.keys)})")
        try:
            return AESGCM(key).decrypt(sealed["n"], sealed["c"], associated)
        except InvalidTag as exc:
            raise TamperedError(f"sealed body does not authenticate under key {sealed['k']!r}") from exc


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=8 * KEY_BYTES)
