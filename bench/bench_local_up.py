"""Local stack start-up benchmark: time from `mmsearch local up` to every readiness check passing.

Runs, in one process and one tmp var dir (the model repository is ./models, exported there if missing):
- first start: the demo FAQ is ingested (preprocess, MiniLM encode, Milvus + MongoDB load) - the baseline;
- second start: same var dir, the stores already hold the FAQ from the same model export, ingest is skipped;
and the time a Ctrl-C (SIGINT) takes to stop every process. Reports seconds and the second/first ratio.
Writes bench/results/local_up.json. Text-to-image off (no CLIP weights here).

    .venv/bin/python -m bench.bench_local_up
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ("--milvus-port", "--mongo-port", "--tokenizer-port", "--tokenizer-metrics-port", "--model-port",
         "--model-metrics-port", "--search-port", "--web-port")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_start(var_dir: Path, timeout: float) -> dict[str, float]:
    """Start the stack, wait for var/local/ready.json, stop it with SIGINT; seconds for each."""
    args = [str(Path(sys.executable).parent / "mmsearch"), "local", "up", "--var-dir", str(var_dir)]
    for flag in FLAGS:
        args += [flag, str(_free_port())]
    ready = var_dir / "local" / "ready.json"
    out = (var_dir / "bench-local-up.out").open("ab")
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        while not ready.is_file():
            if proc.poll() is not None or time.perf_counter() - started > timeout:
                raise RuntimeError(f"local stack did not come up; see {out.name}")
            time.sleep(0.05)
        up = time.perf_counter() - started
        stop_started = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        return {"ready_s": round(up, 2), "stop_s": round(time.perf_counter() - stop_started, 2)}
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "local_up.json")
    parser.add_argument("--contended", action="store_true", help="Others were using the CPU during the run.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-local-up-") as tmp:
        var_dir = Path(tmp) / "var"
        var_dir.mkdir()
        first = one_start(var_dir, args.timeout)
        second = one_start(var_dir, args.timeout)
        setup_log = (var_dir / "logs" / "setup.log").read_text(encoding="utf-8")
    if "skipping ingest" not in setup_log:
        raise RuntimeError("the second start did not skip ingestion: the figures would not mean what they say")
    result: dict[str, Any] = {
        "benchmark": "local_up",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "what": "seconds from `mmsearch local up` to all readiness checks passing; SIGINT to all processes stopped",
        "first_start_with_ingest": first,
        "second_start_reusing_data": second,
        "ratio_second_to_first_ready": round(second["ready_s"] / first["ready_s"], 3),
        "machine": machine_info(contended=args.contended or None),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
