"""Faults under load: kill (SIGKILL) and restart, one at a time, the tokenizer, the model server, Milvus (milvus-lite
server) and MongoDB (SecantusDB) while clients query the search service.

Text queries do not need the tokenizer service (the model server's Embed tokenizes them): while it is down every
one must still succeed. While any other dependency is down every request must fail fast with 503 naming it: no
request may take longer than the configured per-stage timeout plus a margin for the other stages (measured per
request). After the dependency is back the search service must recover by itself (no restart). Failed requests
per fault and seconds to recovery go to the report.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest

from tests.fixtures.resilience import FaultStack
from tests.resilience.load import LoadHandle, Sample, faq_bodies, load, summarize
from tests.resilience.report import record

pytestmark = pytest.mark.resilience

CLIENTS = 8
WARM_SECONDS = 3.0
# How long each dependency stays down; longer outages (MMSEARCH_RESILIENCE_DOWN_SECONDS=60) show how reconnect
# backoff grows, at the cost of CI time.
DOWN_SECONDS = float(os.environ.get("MMSEARCH_RESILIENCE_DOWN_SECONDS", "5"))
SETTLE_SECONDS = 0.5  # requests already past the dependency when it died may still succeed
STEADY_SECONDS = 2.0  # recovered = this long (and STEADY_REQUESTS) of only successful requests
STEADY_REQUESTS = 10
MAX_WAIT_FOR_RECOVERY = 60.0  # a bound on the loop, not a speed requirement: failing it means "did not recover"
# A request that fails on a dead dependency also ran the stages before it (tokenizing, encoding, search): on two
# shared cores under load those take up to about a second.
MARGIN_SECONDS = 1.5


def _recovered_since(handle: LoadHandle, back: float) -> float | None:
    """Start of the final run of successes after `back` if it is long enough to call the service recovered."""
    after = sorted(handle.since(back), key=lambda s: s.start)
    failures = [s for s in after if not s.ok]
    # A request that started before the last failure ended may still be in flight: count from the failure's end.
    streak_start = max((s.end for s in failures), default=back)
    streak = [s for s in after if s.start >= streak_start]
    if len(streak) >= STEADY_REQUESTS and handle.now() - streak_start >= STEADY_SECONDS and all(s.ok for s in streak):
        return streak_start
    return None


@dataclass(frozen=True)
class Outage:
    samples: list[Sample]
    killed: float
    restart: float
    back: float
    recovered_at: float | None

    @property
    def down(self) -> list[Sample]:
        """Requests that ran entirely while the dependency was down (after the in-flight ones settled)."""
        return [s for s in self.samples if s.start >= self.killed + SETTLE_SECONDS and s.end <= self.restart]

    def figures(self, dependency: str, bound: float) -> dict[str, object]:
        down = self.down
        # Every request that overlapped the outage or the restart, including those in flight at the kill.
        overlapping = [s for s in self.samples if s.end >= self.killed and s.start <= self.back]
        return {
            "dependency": dependency,
            "clients": CLIENTS,
            "down_seconds": round(self.restart - self.killed, 2),
            "restart_seconds": round(self.back - self.restart, 2),
            "requests_while_down": len(down),
            "failed_requests": sum(1 for s in self.samples if s.start >= self.killed - 1.0 and not s.ok),
            "while_down": summarize(down),
            "slowest_while_down_ms": round(max((s.seconds for s in down), default=0.0) * 1000, 1),
            "slowest_kill_to_back_ms": round(max((s.seconds for s in overlapping), default=0.0) * 1000, 1),
            "timeout_bound_ms": round(bound * 1000),
            "recovery_seconds": round(self.recovered_at - self.back, 2) if self.recovered_at is not None else None,
            "failures_after_back": sum(1 for s in self.samples if s.start >= self.back and not s.ok),
        }


def _outage(fault_stack: FaultStack, dependency: str) -> Outage:
    """SIGKILL `dependency` under load, keep it down DOWN_SECONDS, restart it, wait for the service to recover."""
    part = fault_stack.parts()[dependency]
    questions = list(fault_stack.corpus.questions.values())
    seconds = WARM_SECONDS + DOWN_SECONDS + MAX_WAIT_FOR_RECOVERY + 120.0  # includes the restart itself
    recovered_at: float | None = None
    with load(fault_stack.search.url, clients=CLIENTS, seconds=seconds, body=faq_bodies(questions)) as handle:
        time.sleep(WARM_SECONDS)
        warm = handle.snapshot()
        assert warm, "no request finished during warm-up"
        assert all(s.ok for s in warm), f"the stack failed before the fault: {[s for s in warm if not s.ok][:3]}"
        killed = handle.now()
        part.kill()
        time.sleep(DOWN_SECONDS)
        restart = handle.now()
        part.start()  # returns once the dependency itself answers its readiness probe
        back = handle.now()
        deadline = time.monotonic() + MAX_WAIT_FOR_RECOVERY
        while recovered_at is None and time.monotonic() < deadline:
            time.sleep(0.25)
            recovered_at = _recovered_since(handle, back)
    return Outage(handle.snapshot(), killed, restart, back, recovered_at)


@pytest.mark.parametrize("dependency", ["model server", "milvus", "mongodb"])
def test_killed_dependency_fails_fast_with_503_naming_it_and_search_recovers(
    fault_stack: FaultStack, dependency: str
) -> None:
    outage = _outage(fault_stack, dependency)
    bound = fault_stack.stage_timeout + MARGIN_SECONDS
    record(
        f"fault.{dependency.replace(' ', '_')}",
        {**outage.figures(dependency, bound), "stage_timeout_ms": round(fault_stack.stage_timeout * 1000)},
    )

    down = outage.down
    assert down, "no request ran entirely while the dependency was down"
    wrong = [s for s in down if s.status != 503 or s.dependency != dependency]
    assert not wrong, (
        f"while {dependency} was down, {len(wrong)} of {len(down)} answers were not 503 naming it: "
        + str(_examples(wrong))
    )
    slow = [s for s in down if s.seconds > bound]
    assert not slow, (
        f"{len(slow)} requests took longer than {bound:.1f}s while {dependency} was down: {_examples(slow)}"
    )
    assert outage.recovered_at is not None, (
        f"the search service did not recover within {MAX_WAIT_FOR_RECOVERY:.0f}s of {dependency} coming back; "
        f"failures since: {_examples([s for s in outage.samples if s.start >= outage.back and not s.ok])}"
    )


def test_text_search_does_not_depend_on_the_tokenizer(fault_stack: FaultStack) -> None:
    """Text queries are embedded by the model server's Embed (it tokenizes in-process): a dead tokenizer service
    (still needed for image queries and cross-encoder pairs) must not fail or slow down a single one of them."""
    outage = _outage(fault_stack, "tokenizer")
    bound = fault_stack.stage_timeout + MARGIN_SECONDS
    record("fault.tokenizer", outage.figures("tokenizer", bound))

    down = outage.down
    assert down, "no request ran entirely while the tokenizer was down"
    failed = [s for s in outage.samples if s.end >= outage.killed and not s.ok]
    assert not failed, f"{len(failed)} text queries failed around the tokenizer's outage: {_examples(failed)}"
    slow = [s for s in down if s.seconds > bound]
    assert not slow, (
        f"{len(slow)} requests took longer than {bound:.1f}s while the tokenizer was down: {_examples(slow)}"
    )


def _examples(samples: list[Sample], n: int = 3) -> list[tuple[int, str | None, str | None, float]]:
    return [(s.status, s.dependency, s.error, round(s.seconds, 2)) for s in samples[:n]]
