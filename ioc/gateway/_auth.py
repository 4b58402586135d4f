"""API keys of gateway publishers: generated at random, stored only as SHA-256.

SHA-256 rather than scrypt/argon2: the keys are 256-bit random tokens, so a slow hash
adds no protection against guessing (there is nothing to guess from a dictionary)
while costing tens of milliseconds of CPU per request. Lookup is by the hash: a timing
difference could only reveal bits of a SHA-256 digest, not of any key.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from ..config._gateway import PublisherSettings
from ..errors import AuthError

__all__ = ["KEY_PREFIX", "Caller", "KeyRing", "hash_key", "new_key"]

KEY_PREFIX = "iock_"


def new_key() -> str:
    """A fresh API key: ``iock_`` + 43 url-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The hex SHA-256 stored in ``gateway.publishers.<id>.key_sha256``.

    Any string hashes, also one with lone surrogates (header bytes that were not UTF-8).
    """
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Caller:
    """An authenticated publisher and the sources it may publish for."""

    publisher: str
    sources: frozenset[str]

    def may_publish(self, source: str) -> bool:
        return "*" in self.sources or source in self.sources

    @property
    def default_source(self) -> str | None:
        """The source to fill in when an event names none (only if unambiguous)."""
        if len(self.sources) == 1 and "*" not in self.sources:
            return next(iter(self.sources))
        return None


class KeyRing:
    """Publishers by key hash."""

    def __init__(self, publishers: Mapping[str, PublisherSettings]) -> None:
        self._by_hash = {p.key_sha256: (name, frozenset(p.sources))
                         for name, p in publishers.items()}

    def authenticate(self, key: str | None) -> Caller:
        """The caller owning ``key``.

        Raises:
            AuthError: no key, or a key no publisher has (the message never echoes it).
        """
        if not key:
            raise AuthError("no API key: send 'Authorization: Bearer <key>' or 'X-API-Key'")
        digest = hash_key(key)
        found = self._by_hash.get(digest)
        if found is None:
            raise AuthError("unknown API key")
        return Caller(found[0], found[1])
