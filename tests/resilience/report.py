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
            # The suite's own clients and servers share the CPU; "contended" means more than that was running.
            "machine": machine_info(contended=bool(os.environ.get("MMSEARCH_BENCH_CONTENDED")) or load1 > 4 * cores),
            "sections": dict(sorted(sections.items())),
        }
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        tmp = REPORT.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(REPORT)
