"""API keys as the search service stores them: salted hashes of their secrets, and the record MongoDB keeps of each
(the printed form, `mms_<key id>_<secret>`, is mmsearch/api_keys.py).

MongoDB keeps the key id and, per secret, a random salt and SHA-256(salt + secret), never the secret. A salted
fast hash is enough here: the secret is 256 random bits, so no offline guessing can reach it whatever the hash
costs (Elasticsearch stores its API keys the same way, "ssha256"); a slow hash (argon2, bcrypt) protects
low-entropy passwords and would cost each uncached check milliseconds. Comparison is constant-time
(hmac.compare_digest).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import hmac
import re
import secrets
from collections.abc import Collection, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mmsearch.api_keys import ApiKey
from mmsearch.settings import SCOPES, Scope

ALL_CORPORA = "*"

# What a presented secret is worth: "invalid" (no secret of the key matches), or the key's state for its holder.
KeyStatus = Literal["ok", "invalid", "revoked", "expired", "rotated"]


def _digest(salt: bytes, secret: str) -> str:
    return hashlib.sha256(salt + bytes.fromhex(secret)).hexdigest()


class StoredSecret(BaseModel):
    """One secret of a key as MongoDB keeps it. A key has one, or two during a rotation's grace period."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    salt: str
    hash: str
    created_at: dt.datetime = Field(alias="createdAt")
    # Set on the old secret by a rotation: it is refused from then on.
    expires_at: dt.datetime | None = Field(default=None, alias="expiresAt")

    @classmethod
    def of(cls, secret: str, now: dt.datetime) -> StoredSecret:
        salt = secrets.token_bytes(16)
        return cls(salt=salt.hex(), hash=_digest(salt, secret), created_at=now)

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(_digest(bytes.fromhex(self.salt), secret), self.hash)


class KeyRecord(BaseModel):
    """A key as the `keys` collection holds it (`_id` is the key id)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    key_id: str = Field(alias="_id")
    name: str
    scopes: tuple[Scope, ...]
    # Comma-separated shell patterns of the corpora (Milvus aliases, MongoDB collections) the key may reach.
    corpora: str = ALL_CORPORA
    secrets: tuple[StoredSecret, ...]
    created_at: dt.datetime = Field(alias="createdAt")
    expires_at: dt.datetime | None = Field(default=None, alias="expiresAt")
    revoked_at: dt.datetime | None = Field(default=None, alias="revokedAt")
    last_used_at: dt.datetime | None = Field(default=None, alias="lastUsedAt")
    # Requests per second and burst; None: the service's defaults (auth.default_rate / default_burst).
    rate: float | None = None
    burst: int | None = None
    version: int = 0  # bumped by every rotation (compare-and-set between concurrent rotations)

    @classmethod
    def issue(
        cls,
        key: ApiKey,
        *,
        name: str,
        scopes: Sequence[Scope],
        now: dt.datetime,
        corpora: str = ALL_CORPORA,
        expires_at: dt.datetime | None = None,
        rate: float | None = None,
        burst: int | None = None,
    ) -> KeyRecord:
        """The record of a new key: its one secret stored salted and hashed, created now."""
        return cls(
            key_id=key.key_id,
            name=name,
            scopes=tuple(scopes),
            corpora=corpora,
            secrets=(StoredSecret.of(key.secret, now),),
            created_at=now,
            expires_at=expires_at,
            rate=rate,
            burst=burst,
        )

    def document(self) -> dict[str, object]:
        return self.model_dump(by_alias=True, mode="python")

    def check(self, secret: str, now: dt.datetime) -> KeyStatus:
        """What this secret is worth now. A state is told only to a caller who holds one of the key's secrets."""
        match = next((s for s in self.secrets if s.matches(secret)), None)
        if match is None:
            return "invalid"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        if match.expires_at is not None and now >= match.expires_at:
            return "rotated"
        return "ok"

    def allows(self, scope: Scope) -> bool:
        return holds(self.scopes, scope)

    def state(self, now: dt.datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


def holds(scopes: Collection[Scope], scope: Scope) -> bool:
    """Whether a key with `scopes` may use a route needing `scope`: admin holds every scope."""
    return scope in scopes or "admin" in scopes


def corpus_allowed(patterns: str, corpus: str) -> bool:
    return any(fnmatch.fnmatchcase(corpus, p.strip()) for p in patterns.split(",") if p.strip())


def parse_scopes(text: str | Sequence[str]) -> tuple[Scope, ...]:
    """`search,feedback` -> ("search", "feedback"); an unknown scope is an error naming the known ones."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise ValueError(f"give at least one scope of {', '.join(SCOPES)}")
    unknown = [n for n in names if n not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {', '.join(unknown)}: the scopes are {', '.join(SCOPES)}")
    return tuple(dict.fromkeys(n for n in SCOPES if n in names))


_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> dt.timedelta:
    """`90d`, `12h`, `30m`, `45s`, `2w` -> a timedelta (a positive whole number and one unit)."""
    match = _DURATION.match(text.strip().lower())
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration: write a positive whole number and a unit, e.g. 90d, 12h, 30m")
    return dt.timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
