"""Access control through real processes: the search service with keys on, its keys made, revoked and rotated with
`mmsearch keys` in a real MongoDB wire-protocol server (SecantusDB).

Every route x {no key, malformed, unknown, expired, revoked, wrong scope, wrong corpus, right key} answers the
expected status in the one error shape; a revocation is seen by two services sharing the keys; a rotation under
load fails no request; rate limits answer 429 with Retry-After and recover; repeated failures lock an address out;
cached keys survive a MongoDB outage and unknown ones get 503 naming it; no secret reaches a log.

Each request names its own client address (X-Forwarded-For, which uvicorn trusts from loopback), so the
per-address limits of one case never spill into another.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mmsearch.api_keys import ApiKey
from mmsearch.model_repo import ModelRepository
from mmsearch.settings import MongoSettings
from mmsearch.stores import mongo_client
from services.search.auth import key_store
from services.search.auth.keys import KeyRecord, StoredSecret
from tests.browser.support import start_web_ui
from tests.doubles.consul_kv import ConsulKVDouble
from tests.fixtures.auth import MONGO_DATABASE, ROUTES, RouteCase, create_key, key_id, keys_cli
from tests.fixtures.ports import wait_until
from tests.fixtures.search import AB_CONFIG, FaqCorpus, RunningSearch, Stores, start_search

pytestmark = pytest.mark.integration

CONSUL_KEY = "config/test/auth"
PNG = (Path(__file__).resolve().parents[1] / "data").glob("*.png")
_addresses = itertools.count(1)
SECRETS: list[str] = []  # every key made here: none may appear in a log


def _address() -> str:
    n = next(_addresses)
    return f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


def _auth_env(**extra: str) -> dict[str, str]:
    return {
        "MMSEARCH_AUTH__MODE": "keys",
        "MMSEARCH_AUTH__KEY_CACHE_SECONDS": "1",
        "MMSEARCH_AUTH__LAST_USED_FLUSH_SECONDS": "1",
        **extra,
    }


class Service:
    def __init__(self, running: RunningSearch) -> None:
        self.running = running
        self.http = httpx.Client(base_url=running.url, timeout=30)

    def call(
        self, case: RouteCase, key: str | None = None, *, header: str = "bearer", address: str | None = None
    ) -> httpx.Response:
        headers = {"X-Forwarded-For": address or _address()}
        if key is not None:
            headers.update({"Authorization": f"Bearer {key}"} if header == "bearer" else {"X-API-Key": key})
        if case.method == "GET":
            return self.http.get(case.url, headers=headers)
        if case.method == "DELETE":
            return self.http.delete(case.url, headers=headers)
        if case.method == "PUT":
            return self.http.put(case.url, headers=headers, json={"question": "q?", "answer": "a."})
        if case.path.endswith("documents:batch"):
            item = {"op": "upsert", "id": "1", "document": {"question": "q?", "answer": "a."}}
            return self.http.post(case.url, headers=headers, json={"items": [item]})
        if case.path.startswith("/i2i/"):
            files = {"image": ("cat.png", _png(), "image/png")}
            return self.http.post(case.url, headers=headers, files=files, data={"topK": "3"})
        if case.path == "/feedback":
            body: dict[str, Any] = {"requestId": "0" * 32, "userId": "10", "itemId": "1", "event": "click"}
        else:
            body = {"query": "how do I apply for a building permit"}
        return self.http.post(case.url, headers=headers, json=body)


def _png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 120, 40)).save(out, format="PNG")
    return out.getvalue()


def _route(path: str) -> RouteCase:
    return next(r for r in ROUTES if r.path == path)


QA, METRICS, READY, HEALTH = _route("/qa/user/{user_id}"), _route("/metrics"), _route("/ready"), _route("/health")


def _mongo(stores: Stores) -> Any:
    return mongo_client(MongoSettings(uri=stores.mongo_uri, database=MONGO_DATABASE))


def _new(stores: Stores, name: str, scopes: str, *flags: str) -> str:
    key = create_key(stores.mongo_uri, name, scopes, *flags)
    SECRETS.append(key)
    return key


StartKeyed = Callable[..., contextlib.AbstractContextManager[RunningSearch]]


@pytest.fixture(scope="module")
def start_keyed(  # noqa: PLR0917 - pytest fixtures
    model_repo: ModelRepository,
    tokenizer_target: str,
    model_server_target: str,
    search_stores: Stores,
    faq_corpus: FaqCorpus,
    consul_kv: ConsulKVDouble,
) -> StartKeyed:
    """Start one more search service with keys on over the session's stores: start_keyed(work_dir, **env)."""
    consul_kv.put(CONSUL_KEY, AB_CONFIG.read_text(encoding="utf-8"))

    def start(work_dir: Path, **env: str) -> contextlib.AbstractContextManager[RunningSearch]:
        return start_search(
            repo=model_repo.root,
            tokenizer_target=tokenizer_target,
            model_server_target=model_server_target,
            milvus_uri=search_stores.milvus_uri,
            mongo_uri=search_stores.mongo_uri,
            consul=consul_kv,
            consul_key=CONSUL_KEY,
            work_dir=work_dir,
            extra_env=_auth_env(**env),
        )

    return start


@pytest.fixture(scope="module")
def services(start_keyed: StartKeyed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Service]]:
    """Two search services with keys on over the same stores (so, the same keys collection)."""

    def start(name: str) -> contextlib.AbstractContextManager[RunningSearch]:
        return start_keyed(tmp_path_factory.mktemp(name))

    with start("auth-a") as a, start("auth-b") as b:
        pair = Service(a), Service(b)
        try:
            yield pair
        finally:
            for service in pair:
                service.http.close()


@pytest.fixture(scope="module")
def keys(search_stores: Stores) -> dict[str, str]:
    """One key per case of the matrix, per scope: right, wrong scope, wrong corpus; plus expired and revoked."""
    out: dict[str, str] = {}
    for scope in ("search", "feedback", "metrics", "documents"):
        out[f"right:{scope}"] = _new(search_stores, f"right-{scope}", scope)
        out[f"wrong-scope:{scope}"] = _new(
            search_stores, f"wrong-{scope}", "feedback" if scope == "search" else "search"
        )
        out[f"wrong-corpus:{scope}"] = _new(search_stores, f"corpus-{scope}", scope, "--corpora", "other_*")
    out["revoked"] = _new(search_stores, "revoked", "admin")
    keys_cli(search_stores.mongo_uri, "revoke", key_id(out["revoked"]))
    # Expired: stored with its end already past (the service's clock is past it).
    expired = ApiKey.generate()
    now = key_store.now()
    client = _mongo(search_stores)
    try:
        key_store.insert(
            client[MONGO_DATABASE]["keys"],
            KeyRecord(
                key_id=expired.key_id,
                name="expired",
                scopes=("admin",),
                secrets=(StoredSecret.of(expired.secret, now - dt.timedelta(days=2)),),
                created_at=now - dt.timedelta(days=2),
                expires_at=now - dt.timedelta(seconds=1),
            ),
        )
    finally:
        client.close()
    out["expired"] = str(expired)
    SECRETS.append(out["expired"])
    return out


def _key_for(state: str, case: RouteCase, keys: dict[str, str]) -> str | None:
    scope = case.scope if case.scope != "open" else "search"
    return {
        "none": None,
        "malformed": "not-a-key",
        "unknown": str(ApiKey.generate()),
        "expired": keys["expired"],
        "revoked": keys["revoked"],
        "wrong scope": keys[f"wrong-scope:{scope}"],
        "wrong corpus": keys[f"wrong-corpus:{scope}"],
        "right": keys[f"right:{scope}"],
    }[state]


STATES = ("none", "malformed", "unknown", "expired", "revoked", "wrong scope", "wrong corpus", "right")
REFUSED = {"malformed": "invalid_key", "unknown": "invalid_key", "expired": "key_expired", "revoked": "key_revoked"}


def _expected(case: RouteCase, state: str) -> tuple[int, str] | None:
    """(status, error kind) the guard answers, or None when the request must reach the route itself."""
    if case.path == "/health":
        return None  # never reads a key
    if state in REFUSED:
        return 401, REFUSED[state]
    refusals = {"none": (401, "missing_key"), "wrong scope": (403, "forbidden")}
    if case.corpora:
        refusals["wrong corpus"] = (403, "forbidden")
    return None if case.scope == "open" else refusals.get(state)


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("case", ROUTES, ids=lambda c: f"{c.method} {c.path}")
def test_every_route_for_every_kind_of_key(
    services: tuple[Service, Service], keys: dict[str, str], case: RouteCase, state: str
) -> None:
    service, _ = services
    key = _key_for(state, case, keys)
    response = service.call(case, key)
    expected = _expected(case, state)
    if expected is None:
        assert response.status_code not in (401, 403, 429), (response.status_code, response.text)
        if case.path in ("/health", "/ready", "/experiments", "/metrics", "/qa/user/{user_id}"):
            assert response.status_code == 200, response.text
        if case.path == "/feedback":  # the route itself answered: no such search
            assert response.json()["error"] == "unknown_request", response.text
        if case.path.startswith("/corpora/"):  # the route itself answered: no such corpus, listed
            assert response.json()["error"] == "unknown_corpus", response.text
            assert "faq_qa" in response.json()["message"]
        return
    status, kind = expected
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "dependency"}
    assert body["error"] == kind
    assert body["dependency"] is None
    if state == "wrong corpus":
        assert "this key may not reach corpus" in body["message"]
    elif case.scope != "open" and state not in ("revoked", "expired"):
        assert f"scope {case.scope!r}" in body["message"], body
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if key is not None:
        assert key not in response.text
        assert key.rsplit("_", 1)[-1] not in response.text


def test_x_api_key_works_as_well(services: tuple[Service, Service], keys: dict[str, str]) -> None:
    service, _ = services
    assert service.call(QA, keys["right:search"], header="x-api-key").status_code == 200


def test_ready_gives_its_details_to_admin_only(services: tuple[Service, Service], search_stores: Stores) -> None:
    service, _ = services
    admin = _new(search_stores, "admin", "admin")
    bare = service.call(READY).json()
    assert bare == {"ready": True}
    assert service.call(READY, _new(search_stores, "searcher", "search")).json() == {"ready": True}
    details = service.call(READY, admin).json()
    assert details["ready"] is True
    assert details["checks"]["mongodb"] == "ok"
    assert "config" in details


def test_a_revocation_is_seen_by_every_service_sharing_the_keys(
    services: tuple[Service, Service], search_stores: Stores
) -> None:
    key = _new(search_stores, "shared", "search")
    for service in services:
        assert service.call(QA, key).status_code == 200
    out = keys_cli(search_stores.mongo_uri, "revoke", key_id(key))
    assert "refuse it within 5 s" in out.stderr  # the default auth.key_cache_seconds (these services use 1 s)
    for service in services:

        def refused(s: Service = service) -> bool:
            return s.call(QA, key).status_code == 401

        wait_until(refused, what="the revocation to be seen", timeout=30)
        assert service.call(QA, key).json()["error"] == "key_revoked"


def test_a_rotation_under_load_fails_no_request(services: tuple[Service, Service], search_stores: Stores) -> None:
    service, other = services
    key = _new(search_stores, "rotating", "search,metrics", "--rate", "1000", "--burst", "1000")
    current = {"key": key}
    failures: list[str] = []
    sent = 0
    stop = threading.Event()

    def client() -> None:
        nonlocal sent
        address = _address()
        while not stop.is_set():
            for svc in (service, other):
                r = svc.call(METRICS, current["key"], address=address)
                sent += 1
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")

    worker = threading.Thread(target=client)
    worker.start()
    try:
        time.sleep(1.0)
        new_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"rotated-{key_id(key)}.key"
        out = keys_cli(search_stores.mongo_uri, "rotate", key_id(key), "--grace", "1h", "--out", str(new_file))
        assert "old secret works until" in out.stderr
        assert out.stdout == ""  # written to the file, not printed
        assert stat.S_IMODE(new_file.stat().st_mode) == 0o600
        new = new_file.read_text(encoding="utf-8").strip()
        new_file.unlink()
        SECRETS.append(new)
        assert key_id(new) == key_id(key)
        assert new != key
        time.sleep(1.0)
        current["key"] = new  # the client moves to the new secret whenever it likes
        time.sleep(2.0)
    finally:
        stop.set()
        worker.join()
    assert sent > 20
    assert failures == []
    # Within the grace period both secrets work; a second rotation with a short grace retires the first two.
    assert service.call(METRICS, key).status_code == 200
    newest = keys_cli(search_stores.mongo_uri, "rotate", key_id(key), "--grace", "1s").stdout.strip()
    SECRETS.append(newest)
    wait_until(lambda: service.call(METRICS, key).status_code == 401, what="the old secret to retire", timeout=30)
    assert service.call(METRICS, key).json()["error"] == "key_rotated"
    assert service.call(METRICS, newest).status_code == 200


def test_a_keys_rate_limit_answers_429_with_retry_after_and_recovers(
    services: tuple[Service, Service], search_stores: Stores
) -> None:
    service, _ = services
    key = _new(search_stores, "limited", "metrics", "--rate", "1", "--burst", "3")
    statuses = [service.call(METRICS, key).status_code for _ in range(4)]
    assert statuses[:3] == [200, 200, 200]
    assert statuses[3] == 429
    refused = service.call(METRICS, key)
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    wait = int(refused.headers["Retry-After"])
    assert 1 <= wait <= 2
    time.sleep(wait)
    assert service.call(METRICS, key).status_code == 200
    metrics = service.call(METRICS, _new(search_stores, "scraper", "metrics")).text
    assert f'mmsearch_auth_rate_limited_total{{key_id="{key_id(key)}"}}' in metrics


def test_repeated_failed_authentications_lock_an_address_out(services: tuple[Service, Service]) -> None:
    service, _ = services
    address = _address()
    for _ in range(10):  # auth.failed_auth_burst
        assert service.call(METRICS, str(ApiKey.generate()), address=address).status_code == 401
    locked = service.call(METRICS, str(ApiKey.generate()), address=address)
    assert locked.status_code == 429
    assert locked.json()["error"] == "too_many_failed_authentications"
    assert int(locked.headers["Retry-After"]) >= 1
    assert service.call(METRICS, str(ApiKey.generate()), address=_address()).status_code == 401


def test_a_huge_or_odd_header_is_refused_without_harm(services: tuple[Service, Service]) -> None:
    service, _ = services
    for value in ("Bearer " + "a" * 20_000, "Bearer mms_" + "é" * 10, "Token abc", "Bearer"):
        # As bytes: a header that is not ASCII still goes out as the client wrote it.
        r = service.http.get(
            "/metrics", headers={b"Authorization": value.encode(), b"X-Forwarded-For": _address().encode()}
        )
        assert r.status_code in (400, 401, 431), r.status_code
        assert "aaaaaaaaaa" not in r.text
        assert "é" not in r.text
    assert service.call(HEALTH).status_code == 200


def test_keys_list_never_shows_a_secret_and_the_cli_explains_bad_input(
    services: tuple[Service, Service], search_stores: Stores, tmp_path: Path
) -> None:
    key = _new(search_stores, "listed", "search,feedback", "--corpora", "faq_*", "--expires", "90d")

    def listed() -> dict[str, Any]:
        rows = [json.loads(line) for line in keys_cli(search_stores.mongo_uri, "list", "--json").stdout.splitlines()]
        return next(r for r in rows if r["id"] == key_id(key))

    assert listed()["lastUsed"] is None
    assert services[0].call(QA, key).status_code == 200
    # The service writes last-used times every auth.last_used_flush_seconds (1 s here), not per request.
    wait_until(lambda: listed()["lastUsed"] is not None, what="the key's last use in `keys list`", timeout=30)
    listing = keys_cli(search_stores.mongo_uri, "list").stdout
    rows = [json.loads(line) for line in keys_cli(search_stores.mongo_uri, "list", "--json").stdout.splitlines()]
    row = next(r for r in rows if r["id"] == key_id(key))
    assert row["scopes"] == ["search", "feedback"]
    assert row["corpora"] == "faq_*"
    assert row["state"] == "active"
    assert row["expires"] is not None
    for secret in SECRETS:
        assert secret.rsplit("_", 1)[-1] not in listing
        assert all(secret.rsplit("_", 1)[-1] not in json.dumps(r) for r in rows)
    bad = keys_cli(search_stores.mongo_uri, "create", "--name", "x", "--scopes", "search,write", check=False)
    assert bad.returncode == 2
    assert "unknown scope write" in bad.stderr
    bad = keys_cli(
        search_stores.mongo_uri, "create", "--name", "x", "--scopes", "search", "--expires", "soon", check=False
    )
    assert "not a duration" in bad.stderr
    missing = keys_cli(search_stores.mongo_uri, "revoke", "0123456789abcdef", check=False)
    assert missing.returncode == 1
    assert "no key 0123456789abcdef" in missing.stderr
    # A deployment's key, made with `keys generate` and kept in a secret, is stored once with --if-missing.
    generated = keys_cli(search_stores.mongo_uri, "generate").stdout.strip()
    SECRETS.append(generated)
    secret_file = tmp_path / "web-ui.key"
    secret_file.write_text(generated + "\n", encoding="utf-8")
    args = ("create", "--name", "web-ui", "--scopes", "search", "--from-file", str(secret_file), "--if-missing")
    first, second = keys_cli(search_stores.mongo_uri, *args), keys_cli(search_stores.mongo_uri, *args)
    assert "stored key" in first.stderr
    assert "already stored (active); kept as is" in second.stderr
    assert first.stdout == second.stdout == ""


def test_while_mongodb_is_down_cached_keys_work_and_unknown_keys_get_503(
    start_keyed: StartKeyed, search_stores: Stores, tmp_path: Path
) -> None:
    known = _new(search_stores, "cached", "metrics")
    with start_keyed(tmp_path, MMSEARCH_AUTH__KEY_CACHE_SECONDS="600") as running:
        service = Service(running)
        assert service.call(METRICS, known).status_code == 200  # now cached
        search_stores.stop_mongo()
        try:
            assert service.call(METRICS, known).status_code == 200
            unknown = service.call(METRICS, str(ApiKey.generate()))
            assert unknown.status_code == 503
            assert unknown.json()["dependency"] == "mongodb"
        finally:
            search_stores.start_mongo()
            service.http.close()
        log = running.log_text()
    assert known.rsplit("_", 1)[-1] not in log


def test_the_web_ui_searches_and_sends_feedback_with_its_own_key(
    services: tuple[Service, Service], search_stores: Stores, tmp_path: Path
) -> None:
    service, _ = services
    key = _new(search_stores, "web-ui", "search,feedback")
    key_file = tmp_path / "web-ui.key"
    key_file.write_text(key + "\n", encoding="utf-8")
    env = {"MMSEARCH_WEB__API_KEY_FILE": str(key_file)}
    with start_web_ui(service.running.url, tmp_path / "ui", extra_env=env) as url, httpx.Client(base_url=url) as ui:
        status = ui.get("/api/status").json()
        assert status["search"] == {"reachable": True, "ready": True}
        assert status["scenes"]["qa"]["enabled"] is True  # from /experiments: /ready is bare for this key
        page = ui.post("/api/search/qa", json={"query": "how do I apply for a building permit", "userId": "u-7"})
        assert page.status_code == 200, page.text
        view = page.json()
        assert view["items"]
        fb = {"requestId": view["requestId"], "userId": "u-7", "itemId": view["items"][0]["id"], "event": "click"}
        assert ui.post("/api/feedback", json=fb).json() == {"recorded": True}
        for text in (page.text, json.dumps(status), ui.get("/").text, json.dumps(dict(page.headers))):
            assert key.rsplit("_", 1)[-1] not in text
    # Its searches are exposures of its key (written off the request path).
    client = _mongo(search_stores)
    try:
        exposures = client[MONGO_DATABASE]["exposures"]
        wait_until(
            lambda: exposures.find_one({"requestId": view["requestId"]}) is not None,
            what="the UI's search as an exposure",
            timeout=30,
        )
        stored = exposures.find_one({"requestId": view["requestId"]})
    finally:
        client.close()
    assert stored["keyId"] == key_id(key)


def test_a_web_ui_whose_key_is_refused_says_so_and_one_without_a_key_file_does_not_start(
    services: tuple[Service, Service], search_stores: Stores, tmp_path: Path
) -> None:
    service, _ = services
    key = _new(search_stores, "web-ui-revoked", "search,feedback")
    keys_cli(search_stores.mongo_uri, "revoke", key_id(key))
    key_file = tmp_path / "web-ui.key"
    key_file.write_text(key, encoding="utf-8")
    env = {"MMSEARCH_WEB__API_KEY_FILE": str(key_file)}
    with start_web_ui(service.running.url, tmp_path / "ui", extra_env=env) as url, httpx.Client(base_url=url) as ui:
        wait_until(
            lambda: ui.post("/api/search/qa", json={"query": "permit"}).status_code == 503,
            what="the revocation to reach the service's cache",
            timeout=30,
        )
        error = ui.post("/api/search/qa", json={"query": "permit"}).json()["error"]
        assert error["code"] == "not_authorized"
        assert "mmsearch keys create --name web-ui" in error["hint"]
    key_file.write_text("not a key", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "mmsearch.cli.main", "serve", "web", "--port", "0", "--api-key-file", str(key_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "does not hold an mmsearch API key" in result.stderr
    assert "not a key" not in result.stderr


def test_no_log_holds_a_secret(services: tuple[Service, Service], search_stores: Stores) -> None:
    """Last: every key made above has been used, refused and rotated by now."""
    logs = "".join(s.running.log_text() for s in services)
    assert logs, "the services logged"
    assert SECRETS
    for secret in SECRETS:
        assert secret.rsplit("_", 1)[-1] not in logs
    # Key ids do reach the logs: each answered search names its key.
    assert '"key_id": "' in logs
