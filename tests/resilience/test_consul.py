"""Consul, through the Consul KV test double (tests/doubles/consul_kv.py) and the real py-consul client inside the
search service: unreachable at start (starts from the saved last good config), unreachable while running (keeps
serving), invalid YAML pushed under load (rejected, last good kept, reason in logs, /ready and metrics), and a valid
change under load (applied within about a second, no failed request)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.doubles.consul_kv import ConsulKVDouble
from tests.fixtures.ports import free_port
from tests.fixtures.prometheus import metric_value, scrape
from tests.fixtures.resilience import FaultStack
from tests.fixtures.search import AB_CONFIG, RunningSearch, start_search
from tests.resilience.load import faq_bodies, load, summarize
from tests.resilience.report import record

pytestmark = pytest.mark.resilience

CLIENTS = 8
MAX_WAIT = 30.0  # bound on polling loops (not a speed requirement)


def _config(rank_experiment: str) -> str:
    """deploy/ab-config.yaml with every user of layer rank.qa on one experiment."""
    doc = yaml.safe_load(AB_CONFIG.read_text(encoding="utf-8"))
    rank = next(la for la in doc["scene-config"]["scenes"][0]["layers"] if la["name"] == "rank.qa")
    rank["normalLayerArgs"] = [{"experimentName": rank_experiment, "ratio": 1.0}]
    return yaml.safe_dump(doc, sort_keys=False)


def _ready_body(search: RunningSearch) -> dict[str, Any]:
    _, body = search.get("/ready")
    return body


def _config_state(search: RunningSearch) -> dict[str, Any]:
    config = _ready_body(search)["config"]
    assert isinstance(config, dict)
    return config


def _wait(what: str, check: Callable[[], bool]) -> float:
    """Seconds until check() holds, polled every 20 ms; fails after MAX_WAIT."""
    start = time.monotonic()
    while time.monotonic() - start < MAX_WAIT:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {MAX_WAIT:.0f}s")


def _metric(search: RunningSearch, name: str) -> float:
    return metric_value(scrape(search.url + "/metrics"), name)


def _rank_experiments(search: RunningSearch, n: int = 20) -> set[str]:
    seen = set()
    for u in range(n):
        status, body = search.post(f"/qa/user/probe{u}", {"query": "building permit", "topK": 2})
        assert status == 200, body
        seen.add(body["experiments"]["rank.qa"])  # type: ignore[index]
    return seen


@pytest.fixture
def consul_restored(fault_stack: FaultStack) -> Any:
    """Every Consul test leaves the shared stack as it found it: double up, deploy/ab-config.yaml applied."""
    yield fault_stack
    if fault_stack.consul._server is None:
        fault_stack.consul.start()
    fault_stack.consul.put(fault_stack.consul_key, AB_CONFIG.read_text(encoding="utf-8"))
    original = yaml.safe_load(AB_CONFIG.read_text(encoding="utf-8"))
    _wait("original config back", lambda: yaml.safe_load(_current_text(fault_stack)) == original)


def _current_text(stack: FaultStack) -> str:
    return stack.search.last_good.read_text(encoding="utf-8")


def test_valid_change_under_load_applies_within_about_a_second_without_failures(consul_restored: FaultStack) -> None:
    stack = consul_restored
    before = _config_state(stack.search)["digest"]
    with load(
        stack.search.url, clients=CLIENTS, seconds=60, body=faq_bodies(list(stack.corpus.questions.values()))
    ) as h:
        time.sleep(2.0)
        stack.consul.put(stack.consul_key, _config("rank.qa.mmr"))
        applied = _wait("new config applied", lambda: _config_state(stack.search)["digest"] != before)
        served = _rank_experiments(stack.search)
        time.sleep(2.0)
    samples = h.snapshot()
    figures = {"apply_seconds": round(applied, 3), "clients": CLIENTS, **summarize(samples)}
    record("consul.valid_change_under_load", figures)
    assert served == {"rank.qa.mmr"}, f"after the change users were served {served}"
    assert figures["errors"] == 0, f"requests failed across a config change: {figures}"


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("YAML syntax error", "scene-config:\n  scenes: [ {name: questionAnswer\n", "yaml"),
        ("unknown ranker", _config("rank.qa.mmr").replace("rankerName: mmr", "rankerName: xgboost"), "xgboost"),
        ("not a mapping", "- just\n- a list\n", "scene-config"),
    ],
    ids=["yaml-syntax-error", "unknown-ranker", "not-a-mapping"],
)
def test_invalid_config_under_load_is_rejected_and_last_good_keeps_serving(
    consul_restored: FaultStack, name: str, text: str, reason: str
) -> None:
    stack = consul_restored
    state = _config_state(stack.search)
    rejections = _metric(stack.search, "mmsearch_search_config_rejections_total")
    with load(
        stack.search.url, clients=CLIENTS, seconds=60, body=faq_bodies(list(stack.corpus.questions.values()))
    ) as h:
        time.sleep(1.0)
        stack.consul.put(stack.consul_key, text)
        seconds = _wait(
            "rejection counted", lambda: _metric(stack.search, "mmsearch_search_config_rejections_total") > rejections
        )
        after = _config_state(stack.search)
        time.sleep(1.0)
    samples = h.snapshot()
    figures = summarize(samples)
    record(f"consul.invalid.{name.replace(' ', '_')}", {"reject_seconds": round(seconds, 3), **figures})
    assert after["digest"] == state["digest"], "the rejected config replaced the one in force"
    assert after["lastError"], f"/ready does not say why the config was rejected: {after}"
    assert reason.lower() in after["lastError"].lower(), after["lastError"]
    assert "rejected" in stack.search.log_text().lower()
    assert figures["errors"] == 0, f"requests failed around a rejected config: {figures}"


def test_consul_unreachable_while_running_keeps_serving_and_resumes(consul_restored: FaultStack) -> None:
    stack = consul_restored
    with load(
        stack.search.url, clients=CLIENTS, seconds=60, body=faq_bodies(list(stack.corpus.questions.values()))
    ) as h:
        time.sleep(1.0)
        stack.consul.stop()
        down = _wait("source down seen", lambda: _metric(stack.search, "mmsearch_search_config_source_up") == 0)
        state = _config_state(stack.search)
        time.sleep(3.0)
        stack.consul.start()  # same port, same data
        stack.consul.put(stack.consul_key, _config("rank.qa.dummy"))
        resumed = _wait("change after Consul returned", lambda: _rank_experiments(stack.search, 5) == {"rank.qa.dummy"})
    samples = h.snapshot()
    figures = {"noticed_down_seconds": round(down, 2), "resumed_seconds": round(resumed, 2), **summarize(samples)}
    record("consul.unreachable_while_running", figures)
    assert "unreachable" in state["source"], state
    assert figures["errors"] == 0, f"requests failed while Consul was unreachable: {figures}"


def test_consul_unreachable_at_start_serves_the_last_good_config(fault_stack: FaultStack, tmp_path: Any) -> None:
    stack = fault_stack
    assert stack.search.last_good.is_file(), "the running service saved no last good config"
    work = tmp_path / "search"
    work.mkdir()
    shutil.copyfile(stack.search.last_good, work / "last-good-config.yaml")
    absent = ConsulKVDouble(port=free_port())  # nothing listens there until started below
    started = time.monotonic()
    with start_search(
        repo=stack.repo.root,
        tokenizer_target=stack.tokenizer_target,
        model_server_target=stack.model_server_target,
        milvus_uri=stack.milvus_uri,
        mongo_uri=stack.mongo_uri,
        consul=absent,
        consul_key=stack.consul_key,
        work_dir=work,
    ) as search:
        ready_seconds = time.monotonic() - started
        state = _config_state(search)
        status, body = search.post("/qa/user/10", {"query": "building permit"})
        assert status == 200, body
        assert state["origin"].startswith("last-good:"), state
        assert "unreachable" in state["source"], state
        # It keeps retrying: once Consul answers, its config is applied without a restart.
        absent.start()
        try:
            absent.put(stack.consul_key, _config("rank.qa.mmr"))
            applied = _wait(
                "Consul's config after it came up", lambda: _config_state(search)["origin"].startswith("consul:")
            )
            assert _rank_experiments(search, 5) == {"rank.qa.mmr"}
        finally:
            absent.stop()
    record(
        "consul.unreachable_at_start",
        {
            "ready_seconds": round(ready_seconds, 2),
            "origin": state["origin"],
            "applied_after_up_seconds": round(applied, 2),
        },
    )
