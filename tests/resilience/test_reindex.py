"""Re-index under load: `mmsearch ingest qa` re-indexes the corpus the search service serves (faq_qa) while
clients query it. No query may fail or come back empty, and the alias moves to the new physical collection only
once that collection is complete (every row counted, loaded): observed from outside by polling Milvus."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.resilience import FaultStack
from tests.resilience.load import faq_bodies, load, summarize
from tests.resilience.milvus import milvus_client
from tests.resilience.report import record

pytestmark = pytest.mark.resilience

CLIENTS = 8
CORPUS = "faq_qa"
MAX_INGEST_SECONDS = 540.0  # bound on the subprocess (CI's 2 cores, under load)


def _must_have_hits(body: Any) -> str | None:
    items = body.get("searchItemModels", [[]])[0] if isinstance(body, dict) else []
    if not items:
        return "no hits"
    if not all(it.get("summary") for it in items[:3]):
        return "a top hit without its document"
    return None


class AliasWatch:
    """Polls Milvus: which collection the alias names, and how many rows that collection holds at that moment."""

    def __init__(self, uri: str) -> None:
        self.client = milvus_client(uri, timeout=10)
        self.seen: list[tuple[float, str, int]] = []  # (t, collection, rows)
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._loop, name="alias-watch", daemon=True)

    def target(self) -> str:
        return str(self.client.describe_alias(CORPUS)["collection_name"])

    def rows(self, collection: str) -> int:
        res = self.client.query(collection, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def _loop(self) -> None:
        deadline = time.monotonic() + MAX_INGEST_SECONDS + 60
        last = None
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                name = self.target()
                if name != last:  # count only at a switch: the new collection must already be complete
                    self.seen.append((time.monotonic() - self.t0, name, self.rows(name)))
                    last = name
            except Exception as exc:  # noqa: BLE001 - a failed poll is recorded, not fatal
                self.seen.append((time.monotonic() - self.t0, f"poll failed: {type(exc).__name__}", -1))
            self.stop.wait(0.05)

    def __enter__(self) -> AliasWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        self.client.close()


def test_reingest_under_load_switches_only_to_a_verified_collection(fault_stack: FaultStack, tmp_path: Path) -> None:
    stack = fault_stack
    expected = len(stack.corpus.questions)
    cmd = [sys.executable, "-m", "mmsearch.cli.main", "ingest", "qa", "--demo", "faq", "--corpus", CORPUS,
           "--model", "minilm", "--repo", str(stack.repo.root), "--work-dir", str(tmp_path / "work"),
           "--milvus-uri", stack.milvus_uri, "--mongo-uri", stack.mongo_uri, "--index", "FLAT",
           "--lexical-field", "question"]  # fmt: skip
    log_path = tmp_path / "ingest.log"
    questions = list(stack.corpus.questions.values())
    with AliasWatch(stack.milvus_uri) as watch:
        before = watch.target()
        with load(
            stack.search.url, clients=CLIENTS, seconds=MAX_INGEST_SECONDS, body=faq_bodies(questions),
            validate=_must_have_hits,
        ) as handle:  # fmt: skip
            time.sleep(2.0)
            started = handle.now()
            with log_path.open("wb") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
                try:
                    rc = proc.wait(timeout=MAX_INGEST_SECONDS)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            finished = handle.now()
            time.sleep(2.0)  # queries on the new collection
        after = watch.target()
        after_rows = watch.rows(after)
    samples = handle.snapshot()
    figures = summarize(samples)
    switches = [(round(t, 2), name, rows) for t, name, rows in watch.seen]
    record(
        "reindex_under_load",
        {
            "clients": CLIENTS,
            "ingest_seconds": round(finished - started, 2),
            "collection_before": before,
            "collection_after": after,
            "alias_targets_seen": switches,
            "rows_expected": expected,
            **figures,
        },
    )
    log_text = log_path.read_text(encoding="utf-8", errors="replace")
    assert rc == 0, f"mmsearch ingest failed ({rc}):\n{log_text[-3000:]}"
    assert after != before, f"the alias still names {before}: the re-index did not switch"
    assert after_rows == expected
    incomplete = [s for s in switches if s[2] != expected]
    assert not incomplete, f"the alias named a collection before it held all {expected} rows: {incomplete}"
    failed = [s for s in samples if not s.ok]
    assert not failed, f"{len(failed)} of {len(samples)} queries failed during the re-index: {failed[:3]}"
