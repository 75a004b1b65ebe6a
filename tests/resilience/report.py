"""bench/results/resilience.json: every resilience test adds its section as soon as it has its figures, so a
partial run (one test, or a failure half-way) still leaves the numbers it measured."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from bench.machine import machine_info

ROOT = Path(__file__).resolve().parents[2]
REPORT = Path(os.environ.get("MMSEARCH_RESILIENCE_REPORT", ROOT / "bench" / "results" / "resilience.json"))
_lock = threading.Lock()


def record(section: str, figures: dict[str, Any]) -> None:
    """Merge `figures` under `section` (replacing that section) and rewrite the report with fresh machine info."""
    with _lock:
        data: dict[str, Any] = {}
        if REPORT.is_file():
            try:
                data = json.loads(REPORT.read_text(encoding="utf-8"))
            except ValueError:
                data = {}
        sections = data.get("sections", {})
        sections[section] = {**figures, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        load1 = os.getloadavg()[0]
        cores = os.cpu_count() or 1
        data = {
            "suite": "tests/resilience (pytest -m resilience)",
            "summary": _summary(sections),
            # The suite's own clients and servers share the CPU; "contended" means more than that was running.
            "machine": machine_info(contended=bool(os.environ.get("MMSEARCH_BENCH_CONTENDED")) or load1 > 4 * cores),
            "sections": dict(sorted(sections.items())),
        }
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        tmp = REPORT.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(REPORT)


def _summary(sections: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, gathered from the sections present (a partial run has a partial summary)."""
    out: dict[str, Any] = {}
    load = sections.get("load")
    if load:
        out["load"] = {k: load.get(k) for k in ("clients", "seconds", "requests", "errors", "p50_ms", "p99_ms", "qps")}
        out["load"]["rss_growth_pct"] = {name: m.get("growth_pct") for name, m in load.get("rss", {}).items()}
    faults = {k.split(".", 1)[1]: v for k, v in sections.items() if k.startswith("fault.")}
    if faults:
        out["faults"] = {
            name: {
                "failed_requests": f.get("failed_requests"),
                "slowest_while_down_ms": f.get("slowest_while_down_ms"),
                "timeout_bound_ms": f.get("timeout_bound_ms"),
                "recovery_seconds": f.get("recovery_seconds"),
            }
            for name, f in sorted(faults.items())
        }
    consul = {k.split(".", 1)[1]: v for k, v in sections.items() if k.startswith("consul.")}
    if consul:
        out["consul_failed_requests"] = {name: c.get("errors") for name, c in sorted(consul.items()) if "errors" in c}
        if "valid_change_under_load" in consul:
            out["consul_apply_seconds"] = consul["valid_change_under_load"].get("apply_seconds")
    if "reindex_under_load" in sections:
        out["reindex_failed_queries"] = sections["reindex_under_load"].get("errors")
    if "fuzz.openapi" in sections:
        fuzz = sections["fuzz.openapi"]
        out["fuzz"] = {"requests": fuzz.get("requests"), "server_errors": fuzz.get("server_errors")}
    if "hostile.grpc" in sections:
        out["grpc_hostile_cases"] = sections["hostile.grpc"].get("cases")
    return out
