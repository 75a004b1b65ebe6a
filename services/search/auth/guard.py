"""The check every route of the search service makes before it reads a body: who is calling, may they, how often.

Order, for a route that needs a scope: read the key from `Authorization: Bearer` or `X-API-Key` -> no key: the
anonymous scopes (rate-limited per client address) or 401 -> an address that failed too often: 429 before the key
is looked up, unless that key has been accepted here before -> the key's record (cache, else MongoDB: 503 naming
it when down) -> its secret, state, scope and corpora -> its rate limit -> through, with the key id for logs,
metrics and exposures.

Errors never carry the key or any part of it, and nothing the caller sent becomes a log field or a metric label:
only the id of a key that exists, once its secret matched.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from mmsearch.api_keys import ApiKey, KeyFormatError
from mmsearch.settings import SCOPES, AuthSettings, Scope
from services.search.auth.keys import ALL_CORPORA, KeyRecord, corpus_allowed, holds
from services.search.auth.limits import TokenBuckets, retry_after
from services.search.errors import DependencyUnavailableError, SearchError
from services.search.metrics import SearchMetrics

log = logging.getLogger(__name__)

BEARER_CHALLENGE = 'Bearer realm="mmsearch"'
MAX_HEADER_CHARS = 256  # a key is 86 characters; anything far longer is refused unread
ANONYMOUS = "anonymous"
MAX_PROVEN_KEYS = 10_000  # key ids remembered as accepted (a lock-out does not stop them); far more than keys in use


# ---- what a route needs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """What a route asks of its caller. `scope` None: open to all; `read_key` False: a key sent is not even read
    (/health: a liveness probe must never depend on MongoDB). A route reaching corpora names how to find them:
    a fixed scene, the path parameter holding the scene, or the one holding the corpus."""

    scope: Scope | None
    read_key: bool = True
    scene: str | None = None
    scene_param: str | None = None
    corpus_param: str | None = None

    def describe(self) -> str:
        return "open" if self.scope is None else self.scope


@dataclass(frozen=True)
class Principal:
    """Who a request runs as: a key (its id), or nobody (anonymous, or auth off)."""

    key_id: str | None
    scopes: frozenset[Scope]
    corpora: str = ALL_CORPORA

    def allows(self, scope: Scope) -> bool:
        return holds(self.scopes, scope)


OPEN = Principal(key_id=None, scopes=frozenset(SCOPES))


# ---- the errors, in the one error shape ---------------------------------------------------------------------


class AuthError(SearchError):
    status_code = 401
    kind = "unauthenticated"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers=headers if headers is not None else {"WWW-Authenticate": BEARER_CHALLENGE})


class MissingKeyError(AuthError):
    kind = "missing_key"


class InvalidKeyError(AuthError):
    kind = "invalid_key"


class KeyExpiredError(AuthError):
    kind = "key_expired"


class KeyRevokedError(AuthError):
    kind = "key_revoked"


class KeyRotatedError(AuthError):
    kind = "key_rotated"


class ForbiddenError(SearchError):
    status_code = 403
    kind = "forbidden"


class RateLimitedError(SearchError):
    status_code = 429
    kind = "rate_limited"


class TooManyFailuresError(SearchError):
    status_code = 429
    kind = "too_many_failed_authentications"


def _needs(access: Access) -> str:
    return f"this route needs a key with scope {access.scope!r} (or 'admin')"


# ---- reading the key from the headers -----------------------------------------------------------------------


def read_key(headers: Mapping[str, str], access: Access) -> ApiKey | None:
    """The key a request carries, None when it carries none. Raises InvalidKeyError for a header that is not one
    key of ours (the message says what to send and never repeats what was sent)."""
    auth = headers.get("authorization")
    api_key = headers.get("x-api-key")
    if auth is None and api_key is None:
        return None
    token: str | None = None
    if auth is not None:
        if len(auth) > MAX_HEADER_CHARS:
            raise InvalidKeyError(f"the Authorization header is too long to hold a key; {_needs(access)}")
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise InvalidKeyError(
                f"send the key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'; {_needs(access)}"
            )
        token = value.strip()
    if api_key is not None:
        if len(api_key) > MAX_HEADER_CHARS:
            raise InvalidKeyError(f"the X-API-Key header is too long to hold a key; {_needs(access)}")
        if token is not None and token != api_key.strip():
            raise InvalidKeyError("Authorization and X-API-Key hold different keys: send one")
        token = api_key.strip()
    assert token is not None
    try:
        return ApiKey.parse(token)
    except KeyFormatError as exc:
        raise InvalidKeyError(f"{exc}; {_needs(access)}") from exc


# ---- the key cache ------------------------------------------------------------------------------------------


@dataclass
class _Cached:
    record: KeyRecord | None  # None: MongoDB has no such key (also cached, so made-up ids cost one look-up each)
    fetched: float


class KeyCache:
    """Key records by key id, each trusted for `ttl` seconds after it was read. One look-up per key id at a time:
    a burst of requests with an uncached key waits for the same MongoDB read."""

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[KeyRecord | None]],
        ttl: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, _Cached] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[KeyRecord | None]] = {}

    async def get(self, key_id: str) -> KeyRecord | None:
        entry = self._entries.get(key_id)
        if entry is not None and self.clock() - entry.fetched < self.ttl:
            return entry.record
        pending = self._inflight.get(key_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyRecord | None] = asyncio.get_running_loop().create_future()
        self._inflight[key_id] = future
        try:
            record = await self.lookup(key_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, and a lone future does not warn
            raise
        finally:
            self._inflight.pop(key_id, None)
        future.set_result(record)
        self._entries[key_id] = _Cached(record, self.clock())
        self._entries.move_to_end(key_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return record

    def __len__(self) -> int:
        return len(self._entries)


# ---- the guard ----------------------------------------------------------------------------------------------


def bootstrap_record(key: ApiKey, now: dt.datetime) -> KeyRecord:
    """The bootstrap admin key as a record held in memory only (from a secret; never written to MongoDB)."""
    return KeyRecord.issue(key, name="bootstrap", scopes=("admin",), now=now)


class Guard:
    def __init__(
        self,
        settings: AuthSettings,
        lookup: Callable[[str], Awaitable[KeyRecord | None]],
        metrics: SearchMetrics,
        *,
        corpora_of_scene: Callable[[str], set[str]] = lambda scene: set(),
        bootstrap: KeyRecord | None = None,
        touch: Callable[[Mapping[str, dt.datetime]], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.corpora_of_scene = corpora_of_scene
        self.bootstrap = bootstrap
        self.touch = touch
        self.wall = wall
        self.cache = KeyCache(lookup, settings.key_cache_seconds, clock=clock)
        self.rates = TokenBuckets(settings.max_tracked_addresses, clock)
        self.failures = TokenBuckets(settings.max_tracked_addresses, clock)
        self._failure_rate = 1.0 / settings.failed_auth_refill_seconds
        self._proven: OrderedDict[str, None] = OrderedDict()  # key ids whose secret was accepted here (LRU)
        self.anonymous_scopes = frozenset(settings.anonymous_scopes)
        self._used: dict[str, dt.datetime] = {}

    @property
    def enabled(self) -> bool:
        return self.settings.mode == "keys"

    async def authorize(
        self, access: Access, headers: Mapping[str, str], address: str, path_params: Mapping[str, str]
    ) -> Principal:
        if not self.enabled or not access.read_key:
            self.metrics.auth_requests.labels("open").inc()
            return OPEN
        try:
            principal = await self._authorize(access, headers, address, path_params)
        except AuthError as exc:
            self._failed(address, exc)
            raise
        except (ForbiddenError, RateLimitedError, TooManyFailuresError, DependencyUnavailableError) as exc:
            result = {
                ForbiddenError: "forbidden",
                RateLimitedError: "rate_limited",
                TooManyFailuresError: "locked_out",
            }.get(type(exc), "unavailable")
            self.metrics.auth_requests.labels(result).inc()
            raise
        self.metrics.auth_requests.labels("ok" if principal.key_id else ANONYMOUS).inc()
        return principal

    async def _authorize(
        self, access: Access, headers: Mapping[str, str], address: str, path_params: Mapping[str, str]
    ) -> Principal:
        try:
            key = read_key(headers, access)
        except InvalidKeyError:
            self._refuse_if_locked_out(address)
            raise
        if key is None:
            return self._anonymous(access, address)
        if key.key_id not in self._proven:
            # A lock-out stops guesses costing store look-ups; a key that has worked here is still checked, so
            # callers sharing the address (a NAT, a proxy, the local stack's loopback) keep their working keys.
            self._refuse_if_locked_out(address)
        record = await self._record(key.key_id)
        now = self.wall()
        status = record.check(key.secret, now) if record is not None else "invalid"
        if status != "ok" or record is None:
            raise _refusal(status, access)
        self._proven[key.key_id] = None
        self._proven.move_to_end(key.key_id)
        if len(self._proven) > MAX_PROVEN_KEYS:
            self._proven.popitem(last=False)
        principal = Principal(record.key_id, frozenset(record.scopes), record.corpora)
        if access.scope is not None:
            if not principal.allows(access.scope):
                raise ForbiddenError(f"{_needs(access)}; this key has {', '.join(record.scopes)}")
            self._check_corpora(principal, access, path_params)
            rate = record.rate or self.settings.default_rate
            burst = record.burst or self.settings.default_burst
            wait = self.rates.take(f"key:{record.key_id}", rate, burst)
            if wait > 0:
                self.metrics.auth_rate_limited.labels(record.key_id).inc()
                raise RateLimitedError(
                    f"this key's rate limit ({rate:g} requests/s, burst {burst}) is spent: retry after the "
                    "Retry-After header's seconds",
                    headers={"Retry-After": retry_after(wait)},
                )
            self.metrics.auth_key_requests.labels(record.key_id, access.scope).inc()
        self._used[record.key_id] = now
        return principal

    def _anonymous(self, access: Access, address: str) -> Principal:
        if access.scope is not None and access.scope not in self.anonymous_scopes:
            raise MissingKeyError(
                f"{_needs(access)}: send it as 'Authorization: Bearer <key>' (create one with `mmsearch keys create`)"
            )
        wait = self.rates.take(f"addr:{address}", self.settings.anonymous_rate, self.settings.anonymous_burst)
        if wait > 0:
            self.metrics.auth_rate_limited.labels(ANONYMOUS).inc()
            raise RateLimitedError(
                f"requests without a key are limited to {self.settings.anonymous_rate:g}/s per client address "
                f"(burst {self.settings.anonymous_burst}): retry after the Retry-After header's seconds, or send a key",
                headers={"Retry-After": retry_after(wait)},
            )
        return Principal(key_id=None, scopes=self.anonymous_scopes)

    async def _record(self, key_id: str) -> KeyRecord | None:
        if self.bootstrap is not None and key_id == self.bootstrap.key_id:
            return self.bootstrap
        record = await self.cache.get(key_id)
        self.metrics.auth_cached_keys.set(len(self.cache))
        return record

    def _check_corpora(self, principal: Principal, access: Access, path_params: Mapping[str, str]) -> None:
        if principal.corpora == ALL_CORPORA:
            return
        if access.corpus_param is not None:
            corpora = {path_params.get(access.corpus_param, "")}
            where = ""
        else:
            scene = access.scene or (path_params.get(access.scene_param, "") if access.scene_param else "")
            if not scene:
                return
            corpora = self.corpora_of_scene(scene)
            where = f" (scene {scene})"
        refused = sorted(c for c in corpora if not corpus_allowed(principal.corpora, c))
        if refused:
            raise ForbiddenError(
                f"this key may not reach corpus {', '.join(refused)}{where}: use a key whose corpora cover it"
            )

    def _failed(self, address: str, exc: AuthError) -> None:
        result = exc.kind.removeprefix("key_").removesuffix("_key")
        self.metrics.auth_requests.labels(result).inc()
        if isinstance(exc, MissingKeyError):
            return  # not a guess
        self.failures.take(f"fail:{address}", self._failure_rate, self.settings.failed_auth_burst)
        if self.locked_out(address) > 0:
            log.warning("address %s is locked out after repeated failed authentications", address)

    def _refuse_if_locked_out(self, address: str) -> None:
        wait = self.locked_out(address)
        if wait > 0:
            raise TooManyFailuresError(
                "too many failed authentications from this address: retry after the Retry-After header's seconds",
                headers={"Retry-After": retry_after(wait)},
            )

    def locked_out(self, address: str) -> float:
        """Seconds until `address` may try a key again (0: it may now)."""
        return self.failures.wait(f"fail:{address}", self._failure_rate, self.settings.failed_auth_burst)

    # ---- last used ------------------------------------------------------------------------------------------

    async def flush_last_used(self) -> None:
        """Write the keys' last-used times (one write per key used since the last flush)."""
        if self.touch is None or not self._used:
            return
        used, self._used = self._used, {}
        if self.bootstrap is not None:
            used.pop(self.bootstrap.key_id, None)
        try:
            await self.touch(used)
        except DependencyUnavailableError as exc:
            log.warning("keys' last-used times not written (kept for the next try): %s", exc.reason)
            for key_id, at in used.items():
                self._used[key_id] = max(at, self._used.get(key_id, at))

    async def run_flusher(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.settings.last_used_flush_seconds)
                await self.flush_last_used()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush_last_used())


def _refusal(status: str, access: Access) -> AuthError:
    if status == "revoked":
        return KeyRevokedError(f"this key was revoked; {_needs(access)}")
    if status == "expired":
        return KeyExpiredError(f"this key has expired; {_needs(access)}")
    if status == "rotated":
        return KeyRotatedError("this secret was replaced by a rotation and its grace period is over: use the new one")
    return InvalidKeyError(f"this key is not known; {_needs(access)}")
