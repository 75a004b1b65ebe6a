"""The scale bench's own arithmetic, picture and refusals (the bench itself runs by hand, on a quiet machine)."""

from __future__ import annotations

import os
import sys
import time
import xml.dom.minidom  # our own render's output, not untrusted input

import pytest

from bench import bench_scale
from bench.svg_chart import Panel, render


def test_growth_exponent_is_the_log_log_slope() -> None:
    assert bench_scale.exponent([(1e4, 10.0), (1e5, 100.0), (1e6, 1000.0)]) == 1.0
    assert bench_scale.exponent([(1e4, 5.0), (1e6, 5.0)]) == 0.0
    assert bench_scale.exponent([(1e4, 4.0), (1e6, 40.0)]) == 0.5
    # A failed size leaves a gap; one point says nothing about growth.
    assert bench_scale.exponent([(1e4, 4.0), (1e5, 0.0)]) is None


def test_growth_reads_each_store_and_skips_failed_sizes() -> None:
    ok = {"vector": {"c1": {"service": {"p50_ms": 10.0}}}}
    results = {
        "10000": {"lite": ok},
        "100000": {"lite": {"vector": {"c1": {"service": {"p50_ms": 100.0}}}}},
        "1000000": {"lite": {"error": "MemoryError: ..."}},
    }
    got = bench_scale.growth(results, ["lite"])["lite"]
    assert got["service p50 c=1 (ms)"] == 1.0
    assert got["index build (s)"] is None


def test_picture_is_an_svg_with_one_line_per_series() -> None:
    panel = Panel("latency", "ms", "documents", {"a": [(1e4, 3.0), (1e5, 9.0)], "b": [(1e4, 1.0)], "empty": []})
    svg = render([panel], "title <&>")
    doc = xml.dom.minidom.parseString(svg)  # noqa: S318 - our own output
    assert len(doc.getElementsByTagName("polyline")) == 2  # the empty series draws nothing
    assert "title &lt;&amp;&gt;" in svg


def test_config_over_the_bench_corpus_with_hybrid_only_where_asked() -> None:
    import yaml

    for hybrid in (False, True):
        doc = yaml.safe_load(bench_scale.scale_config(hybrid=hybrid))
        names = {e["experimentName"] for e in doc["scene-config"]["experiments"]}
        assert ("match.qa.hybrid" in names) is hybrid
        assert "match.qa.base" in names
        assert "rank.qa.dummy" in names
        assert "faq_qa" not in yaml.safe_dump(doc)


def test_refuses_a_busy_machine_unless_told(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 3.0, 2.0))
    monkeypatch.setattr(time, "sleep", lambda _: None)
    clock = iter(range(0, 10_000, 10))  # every look at the clock 10 s later: the wait runs out
    monkeypatch.setattr(time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(sys, "argv", ["bench_scale", "--sizes", "10000"])
    with pytest.raises(SystemExit) as exc:
        bench_scale.main()
    assert exc.value.code == 2
    assert "busy (1-minute load average 3.50" in capsys.readouterr().err


def test_refuses_the_real_server_outside_its_namespace(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MMSEARCH_TEST_MILVUS_URI", raising=False)
    monkeypatch.setattr(sys, "argv", ["bench_scale", "--stores", "server", "--contended"])
    with pytest.raises(SystemExit):
        bench_scale.main()
    assert "scripts/with-milvus-netns" in capsys.readouterr().err


def test_cpu_per_query_of_this_process_counts_its_own_work() -> None:
    before = bench_scale.cpu_seconds({"me": os.getpid()})
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # burn 0.2 s of CPU
        pass
    after = bench_scale.cpu_seconds({"me": os.getpid()})
    per = bench_scale._per_query(before, after, requests=10)
    assert 15 <= per["me"] <= 40  # ~20 ms of CPU per "query", at clock-tick resolution
    assert per["total"] == per["me"]
