"""The guard without a network: headers, key states, scopes, corpora, rate limits, lock-out, the key cache (with a
fake clock: how long a revocation takes to be seen, and what happens while MongoDB is down) and last-used writes."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping

import pytest

from mmsearch.api_keys import ApiKey
from mmsearch.settings import AuthSettings
from services.search.auth.guard import (
    Access,
    ForbiddenError,
    Guard,
    InvalidKeyError,
    KeyCache,
    KeyExpiredError,
    KeyRevokedError,
    MissingKeyError,
    RateLimitedError,
    TooManyFailuresError,
    bootstrap_record,
)
from services.search.auth.keys import KeyRecord, StoredSecret
from services.search.auth.limits import TokenBuckets, retry_after
from services.search.errors import DependencyUnavailableError
from services.search.metrics import SearchMetrics

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
SEARCH = Access("search", scene="questionAnswer")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Keys:
    """An in-memory keys collection that can be taken down, counting look-ups."""

    def __init__(self) -> None:
        self.records: dict[str, KeyRecord] = {}
        self.down = False
        self.lookups = 0
        self.touched: dict[str, dt.datetime] = {}

    def add(self, *, scopes: tuple[str, ...] = ("search",), **fields: object) -> ApiKey:
        key = ApiKey.generate()
        self.records[key.key_id] = KeyRecord.model_validate(
            {
                "key_id": key.key_id,
                "name": "t",
                "scopes": scopes,
                "secrets": (StoredSecret.of(key.secret, NOW),),
                "created_at": NOW,
                **fields,
            },
            by_name=True,
        )
        return key

    async def find(self, key_id: str) -> KeyRecord | None:
        self.lookups += 1
        await asyncio.sleep(0)
        if self.down:
            raise DependencyUnavailableError("mongodb", "connection refused")
        return self.records.get(key_id)

    async def touch(self, used: Mapping[str, dt.datetime]) -> None:
        if self.down:
            raise DependencyUnavailableError("mongodb", "connection refused")
        self.touched.update(used)


def _guard(keys: Keys, clock: Clock, **auth: object) -> tuple[Guard, SearchMetrics]:
    metrics = SearchMetrics()
    settings = AuthSettings.model_validate({"mode": "keys", "key_cache_seconds": 5.0, **auth})
    guard = Guard(
        settings,
        keys.find,
        metrics,
        corpora_of_scene=lambda scene: {"faq_qa"} if scene == "questionAnswer" else set(),
        touch=keys.touch,
        clock=clock,
        wall=lambda: NOW,
    )
    return guard, metrics


def _bearer(key: ApiKey | str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _run(guard: Guard, headers: Mapping[str, str], access: Access = SEARCH, address: str = "10.0.0.1") -> object:
    return asyncio.run(guard.authorize(access, headers, address, {}))


def _count(metrics: SearchMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def test_a_right_key_passes_in_either_header_and_is_counted_by_key_id() -> None:
    keys, clock = Keys(), Clock()
    guard, metrics = _guard(keys, clock)
    key = keys.add()
    principal = _run(guard, _bearer(key))
    assert getattr(principal, "key_id", None) == key.key_id
    assert getattr(_run(guard, {"x-api-key": str(key)}), "key_id", None) == key.key_id
    assert getattr(_run(guard, {"authorization": f"bearer {key}", "x-api-key": str(key)}), "key_id", None)
    assert _count(metrics, "mmsearch_auth_key_requests_total", key_id=key.key_id, scope="search") == 3


@pytest.mark.parametrize(
    ("headers", "error", "message"),
    [
        ({}, MissingKeyError, "needs a key with scope 'search'"),
        ({"authorization": "Basic dXNlcjpwYXNz"}, InvalidKeyError, "Authorization: Bearer <key>"),
        ({"authorization": "Bearer"}, InvalidKeyError, "Authorization: Bearer <key>"),
        ({"authorization": "Bearer mms_nothex_x"}, InvalidKeyError, "mms_<16 hex digits>_<64 hex digits>"),
        ({"authorization": "Bearer " + "A" * 100_000}, InvalidKeyError, "too long"),
        ({"x-api-key": "z" * 300}, InvalidKeyError, "too long"),
        ({"authorization": f"Bearer {ApiKey.generate()}"}, InvalidKeyError, "not known"),
    ],
)
def test_missing_malformed_and_unknown_keys_are_401s_that_never_repeat_the_header(
    headers: dict[str, str], error: type[Exception], message: str
) -> None:
    guard, _ = _guard(Keys(), Clock())
    with pytest.raises(error) as err:
        _run(guard, headers)
    exc = err.value
    assert message in str(exc)
    assert getattr(exc, "status_code", None) == 401
    assert getattr(exc, "headers", {}).get("WWW-Authenticate", "").startswith("Bearer")
    for value in headers.values():
        token = value.removeprefix("Bearer ").strip()
        if len(token) > 6:
            assert token not in str(exc)


def test_two_different_keys_in_the_two_headers_are_refused() -> None:
    keys = Keys()
    guard, _ = _guard(keys, Clock())
    a, b = keys.add(), keys.add()
    with pytest.raises(InvalidKeyError, match="different keys"):
        _run(guard, {"authorization": f"Bearer {a}", "x-api-key": str(b)})


def test_expired_revoked_scope_and_corpus() -> None:
    keys = Keys()
    guard, _ = _guard(keys, Clock())
    with pytest.raises(KeyExpiredError):
        _run(guard, _bearer(keys.add(expires_at=NOW)))
    with pytest.raises(KeyRevokedError):
        _run(guard, _bearer(keys.add(revoked_at=NOW)))
    with pytest.raises(ForbiddenError, match=r"scope 'search'.*this key has feedback") as err:
        _run(guard, _bearer(keys.add(scopes=("feedback",))))
    assert err.value.status_code == 403
    with pytest.raises(ForbiddenError, match="may not reach corpus faq_qa \\(scene questionAnswer\\)"):
        _run(guard, _bearer(keys.add(corpora="photos*")))
    assert _run(guard, _bearer(keys.add(corpora="faq_*"))) is not None
    assert _run(guard, _bearer(keys.add(scopes=("admin",), corpora="faq_*"))) is not None
    # A route naming its corpus in the path checks that one.
    docs = Access("documents", corpus_param="corpus")
    writer = keys.add(scopes=("documents",), corpora="faq_*")
    asyncio.run(guard.authorize(docs, _bearer(writer), "10.0.0.1", {"corpus": "faq_qa"}))
    with pytest.raises(ForbiddenError, match="may not reach corpus photos"):
        asyncio.run(guard.authorize(docs, _bearer(writer), "10.0.0.1", {"corpus": "photos"}))


def test_open_routes_anonymous_scopes_and_auth_off() -> None:
    keys = Keys()
    guard, _ = _guard(keys, Clock(), anonymous_scopes=["search"])
    anonymous = _run(guard, {})
    assert getattr(anonymous, "key_id", "x") is None
    with pytest.raises(MissingKeyError, match="scope 'feedback'"):
        _run(guard, {}, Access("feedback"))
    # /health does not even read a key; /ready reads one when sent, and a bad one is still refused.
    assert _run(guard, {"authorization": "garbage"}, Access(None, read_key=False)) is not None
    with pytest.raises(InvalidKeyError):
        _run(guard, {"authorization": "garbage"}, Access(None))
    off, _ = _guard(keys, Clock(), mode="off")
    principal = _run(off, {"authorization": "garbage"}, Access("admin"))
    assert getattr(principal, "scopes", frozenset()) >= {"admin", "documents"}
    assert keys.lookups == 0


def test_a_keys_rate_limit_answers_429_with_retry_after_and_recovers() -> None:
    keys, clock = Keys(), Clock()
    guard, metrics = _guard(keys, clock)
    key = keys.add(rate=2.0, burst=3)
    for _ in range(3):
        _run(guard, _bearer(key))
    with pytest.raises(RateLimitedError) as err:
        _run(guard, _bearer(key))
    assert err.value.status_code == 429
    assert err.value.headers["Retry-After"] == "1"  # 0.5 s to the next token, rounded up
    assert _count(metrics, "mmsearch_auth_rate_limited_total", key_id=key.key_id) == 1
    clock.t += 0.5
    _run(guard, _bearer(key))
    # Other keys and addresses have their own buckets.
    _run(guard, _bearer(keys.add(rate=2.0, burst=3)))


def test_anonymous_requests_are_limited_per_client_address() -> None:
    guard, metrics = _guard(Keys(), Clock(), anonymous_scopes=["search"], anonymous_rate=1.0, anonymous_burst=2)
    _run(guard, {}, address="10.0.0.1")
    _run(guard, {}, address="10.0.0.1")
    with pytest.raises(RateLimitedError, match="per client address"):
        _run(guard, {}, address="10.0.0.1")
    _run(guard, {}, address="10.0.0.2")
    assert _count(metrics, "mmsearch_auth_rate_limited_total", key_id="anonymous") == 1


def test_repeated_failures_lock_an_address_out_before_its_keys_are_looked_up() -> None:
    keys, clock = Keys(), Clock()
    guard, metrics = _guard(keys, clock, failed_auth_burst=3, failed_auth_refill_seconds=10.0)
    new = keys.add()
    for _ in range(3):
        with pytest.raises(InvalidKeyError):
            _run(guard, _bearer(ApiKey.generate()), address="10.0.0.9")
    looked_up = keys.lookups
    with pytest.raises(TooManyFailuresError) as err:
        _run(guard, _bearer(ApiKey.generate()), address="10.0.0.9")
    assert err.value.headers["Retry-After"] == "10"
    with pytest.raises(TooManyFailuresError):  # a malformed header too
        _run(guard, {"authorization": "Basic x"}, address="10.0.0.9")
    with pytest.raises(TooManyFailuresError):  # and a right key this guard has never accepted: not looked up
        _run(guard, _bearer(new), address="10.0.0.9")
    assert keys.lookups == looked_up
    _run(guard, _bearer(new), address="10.0.0.10")  # other addresses are not locked out
    clock.t += 10.0
    _run(guard, _bearer(new), address="10.0.0.9")
    assert _count(metrics, "mmsearch_auth_requests_total", result="locked_out") == 3
    assert _count(metrics, "mmsearch_auth_requests_total", result="invalid") == 3


def test_a_lock_out_spares_keys_already_accepted_so_callers_sharing_an_address_keep_working() -> None:
    keys, clock = Keys(), Clock()
    guard, _ = _guard(keys, clock, failed_auth_burst=3, failed_auth_refill_seconds=10.0)
    working, guessed = keys.add(), keys.add()
    _run(guard, _bearer(working), address="10.0.0.9")  # e.g. the web UI, behind the same address
    for _ in range(3):  # someone else at that address guesses
        with pytest.raises(InvalidKeyError):
            _run(guard, _bearer(ApiKey.generate()), address="10.0.0.9")
    with pytest.raises(TooManyFailuresError):
        _run(guard, _bearer(ApiKey.generate()), address="10.0.0.9")
    clock.t += 6.0  # past the 5 s cache, within the lock-out: the accepted key is looked up again, and served
    looked_up = keys.lookups
    _run(guard, _bearer(working), address="10.0.0.9")
    assert keys.lookups == looked_up + 1
    wrong_secret = ApiKey(working.key_id, ApiKey.generate().secret)
    with pytest.raises(InvalidKeyError):  # its id does not open the door to guessing its secret unchecked
        _run(guard, _bearer(wrong_secret), address="10.0.0.9")
    with pytest.raises(TooManyFailuresError):
        _run(guard, _bearer(guessed), address="10.0.0.9")


def test_a_revocation_is_seen_once_the_cached_record_is_older_than_key_cache_seconds() -> None:
    keys, clock = Keys(), Clock()
    guard, _ = _guard(keys, clock)
    key = keys.add()
    _run(guard, _bearer(key))
    keys.records[key.key_id] = keys.records[key.key_id].model_copy(update={"revoked_at": NOW})
    clock.t += 4.9
    _run(guard, _bearer(key))  # still cached: the bound is key_cache_seconds (5 s here)
    clock.t += 0.1
    with pytest.raises(KeyRevokedError):
        _run(guard, _bearer(key))


def test_while_mongodb_is_down_cached_keys_work_for_their_lifetime_and_unknown_ones_get_503() -> None:
    keys, clock = Keys(), Clock()
    guard, metrics = _guard(keys, clock)
    key = keys.add()
    _run(guard, _bearer(key))
    keys.down = True
    clock.t += 4.0
    _run(guard, _bearer(key))
    with pytest.raises(DependencyUnavailableError) as err:
        _run(guard, _bearer(keys.add()))
    assert err.value.dependency == "mongodb"
    assert err.value.status_code == 503
    clock.t += 1.0
    with pytest.raises(DependencyUnavailableError):
        _run(guard, _bearer(key))
    keys.down = False
    _run(guard, _bearer(key))
    assert _count(metrics, "mmsearch_auth_requests_total", result="unavailable") == 2


def test_a_burst_with_one_uncached_key_costs_one_lookup() -> None:
    keys = Keys()
    cache = KeyCache(keys.find, ttl=5.0, clock=Clock())
    key = keys.add()

    async def burst() -> list[KeyRecord | None]:
        return list(await asyncio.gather(*(cache.get(key.key_id) for _ in range(20))))

    records = asyncio.run(burst())
    assert keys.lookups == 1
    assert all(r is not None and r.key_id == key.key_id for r in records)


def test_the_bootstrap_key_is_held_in_memory_and_never_looked_up() -> None:
    keys = Keys()
    text = str(ApiKey.generate())
    record = bootstrap_record(ApiKey.parse(text), NOW)
    assert record.scopes == ("admin",)
    metrics = SearchMetrics()
    guard = Guard(AuthSettings(mode="keys"), keys.find, metrics, bootstrap=record, wall=lambda: NOW)
    keys.down = True
    asyncio.run(guard.authorize(Access("metrics"), {"authorization": f"Bearer {text}"}, "10.0.0.1", {}))
    assert keys.lookups == 0


def test_last_used_times_are_written_once_per_key_and_kept_while_mongodb_is_down() -> None:
    keys, clock = Keys(), Clock()
    guard, _ = _guard(keys, clock)
    a, b = keys.add(), keys.add()
    for key in (a, a, b):
        _run(guard, _bearer(key))
    keys.down = True
    asyncio.run(guard.flush_last_used())
    assert keys.touched == {}
    keys.down = False
    asyncio.run(guard.flush_last_used())
    assert keys.touched == {a.key_id: NOW, b.key_id: NOW}


def test_token_buckets_stay_bounded() -> None:
    clock = Clock()
    buckets = TokenBuckets(max_entries=100, clock=clock)
    for i in range(1000):
        buckets.take(f"addr:{i}", 1.0, 1)
    assert len(buckets) == 100
    assert retry_after(0.01) == "1"
    assert retry_after(2.2) == "3"
