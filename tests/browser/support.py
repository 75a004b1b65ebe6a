"""Constants and helpers shared by the browser tests and their fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.fixtures.ports import free_port, stop_process, wait_until

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
HOSTILE_CORPUS = "web_ui_hostile"
SIDE_CONSUL_KEY = "config/test/web-ui-side"

# A tiny corpus whose texts try to run code if a page ever rendered them as HTML.
HOSTILE_ROWS = [
    {
        "id": 1,
        "question": "<script>window.__pwned = 1</script>How do I report a broken street light?",
        "answer": '<img src=x onerror="window.__pwned = 2">Call the city service desk.\n'
        "Line two: <b>not bold</b> & not a tag.",
        "category": ["<i>streets</i>", "Lighting"],
    },
    {
        "id": 2,
        "question": "When is the recycling centre open?",
        "answer": "Weekdays 8 to 18.\nSaturdays 10 to 14.",
        "category": ["Recycling"],
    },
    {
        "id": 3,
        "question": "How do I apply for a residential parking permit?",
        "answer": "Apply online with your vehicle registration; permits last one year.",
        "category": ["Parking"],
    },
]
HOSTILE_DOCS_CORPUS = "web_ui_hostile_docs"
# Documents (BEIR rows) for the Documents tab: a passage with markup must show as text, the query's words marked.
HOSTILE_DOCS = [
    {
        "_id": 1,
        "title": "<b>Street lighting</b> maintenance",
        "text": 'Broken street lights are reported to the city service desk. <img src=x onerror="window.__pwned = 3">'
        "Repairs take two working days. The lamps are LED since 2019.",
    },
    {
        "_id": 2,
        "title": "Recycling centre",
        "text": "The recycling centre opens on weekdays from 8 to 18 and on Saturdays from 10 to 14.",
    },
    {"_id": 3, "title": "", "text": "Residential parking permits last one year and are applied for online."},
]
HOSTILE_QUESTION = str(HOSTILE_ROWS[0]["question"])
HOSTILE_ANSWER = str(HOSTILE_ROWS[0]["answer"])


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL built here
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def start_web_ui(search_url: str, work_dir: Path, *, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """`mmsearch serve web` on a free loopback port; yields its base URL; stopped by PID."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    env.update(extra_env or {})
    cmd = [sys.executable, "-m", "mmsearch.cli.main", "serve", "web", "--port", str(port), "--search-url", search_url]
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / f"web-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(url + "/health"), what="mmsearch serve web", timeout=60, proc=proc)
    except (RuntimeError, TimeoutError) as exc:
        stop_process(proc)
        raise RuntimeError(f"{exc}; its log:\n{log_path.read_text(errors='replace')[-3000:]}") from exc
    try:
        yield url
    finally:
        stop_process(proc)
