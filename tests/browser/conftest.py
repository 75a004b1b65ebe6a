"""Browser-test fixtures: headless Debian Chromium driven by Playwright, and the web UIs it looks at.

- `chromium`: one browser for the session (/usr/bin/chromium from `scripts/apt-ensure`; Playwright never
  downloads a browser here).
- `desktop` / `phone`: a fresh page at 1280x900 or 390x844 that records console errors and uncaught page
  errors; a test fails if the page threw or the Content-Security-Policy blocked anything.
- `stack_ui`: the web UI of the running local stack (tests/fixtures/stack.py): demo FAQ, photos, CLIP on.
- `side_ui`: a second search service + web UI sharing the stack's stores and model services, serving a small
  dedicated QA corpus whose texts carry HTML/script, from a model repository without CLIP (so text-to-image
  and search by image say they are not configured).
- `start_web_ui(...)`: `mmsearch serve web` as a real process on a free port, e.g. pointed at nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, Playwright, sync_playwright

from tests.browser.support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    HOSTILE_CORPUS,
    HOSTILE_DOCS,
    HOSTILE_DOCS_CORPUS,
    HOSTILE_ROWS,
    PHONE,
    ROOT,
    SCREENSHOTS,
    SIDE_CONSUL_KEY,
    start_web_ui,
)
from tests.doubles.consul_kv import ConsulKVDouble
from tests.fixtures.search import AB_CONFIG, RunningSearch, start_search
from tests.fixtures.stack import LocalStack

# --- the browser ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def chromium(playwright_driver: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/apt-ensure /usr/bin/chromium chromium chromium-driver",
            pytrace=False,
        )
    browser = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@dataclass
class PageWatch:
    """What a page said on its console; CSP violations and uncaught errors fail the test."""

    errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def on_page_error(self, error: Error) -> None:
        self.errors.append(f"uncaught: {error}")

    def problems(self, *, allow: tuple[str, ...] = ()) -> list[str]:
        # A failed fetch of the UI's own API is an expected "state" in some tests; they pass it in `allow`.
        return [e for e in self.errors if not any(a in e for a in allow)]


@dataclass
class WatchedPage:
    page: Page
    watch: PageWatch
    allow: list[str] = field(default_factory=list)

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


def _watched(browser: Browser, viewport: dict[str, int]) -> Iterator[WatchedPage]:
    context = browser.new_context(viewport=viewport, device_scale_factor=1)  # type: ignore[arg-type]
    page = context.new_page()
    page.set_default_timeout(30_000)
    watched = WatchedPage(page, PageWatch())
    page.on("console", watched.watch.on_console)
    page.on("pageerror", watched.watch.on_page_error)
    yield watched
    context.close()
    problems = watched.watch.problems(allow=tuple(watched.allow))
    assert not problems, f"the page logged errors (CSP violations, exceptions): {problems}"


@pytest.fixture
def desktop(chromium: Browser) -> Iterator[WatchedPage]:
    yield from _watched(chromium, DESKTOP)


@pytest.fixture
def phone(chromium: Browser) -> Iterator[WatchedPage]:
    yield from _watched(chromium, PHONE)


# --- the UIs under test -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def stack_ui(local_stack: LocalStack) -> str:
    return local_stack.web_url


def _ingest_hostile_corpus(stack: LocalStack, work: Path) -> None:
    rows = work / "hostile.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in HOSTILE_ROWS), encoding="utf-8")
    docs = work / "hostile-docs.jsonl"
    docs.write_text("".join(json.dumps(r) + "\n" for r in HOSTILE_DOCS), encoding="utf-8")
    common = [
        "--model", stack.plan.text_model, "--repo", str(stack.plan.model_repo), "--index", "FLAT",
        "--milvus-uri", stack.plan.milvus_uri, "--mongo-uri", stack.plan.mongo_uri,
    ]  # fmt: skip
    for kind, corpus, source, extra in (
        # The A/B YAML's hybrid experiments search the questions' words.
        ("qa", HOSTILE_CORPUS, rows, ["--lexical-field", "question"]),
        ("text", HOSTILE_DOCS_CORPUS, docs, []),
    ):
        cmd = [
            sys.executable, "-m", "mmsearch.cli.main", "ingest", kind, "--input", str(source), "--corpus", corpus,
            "--work-dir", str(work / f"ingest-{kind}"), *common, *extra,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ingesting the {corpus} corpus failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


@pytest.fixture(scope="session")
def side_search(
    local_stack: LocalStack, consul_kv: ConsulKVDouble, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSearch]:
    work = tmp_path_factory.mktemp("web-ui-side")
    _ingest_hostile_corpus(local_stack, work)
    # The same A/B YAML with its QA scene on the hostile corpus (Milvus alias and MongoDB collection alike),
    # over a model repository without CLIP models.
    config = (
        AB_CONFIG.read_text(encoding="utf-8")
        .replace("faq_qa", HOSTILE_CORPUS)
        .replace("collectionName: documents", f"collectionName: {HOSTILE_DOCS_CORPUS}")
        .replace("mongoCollection: documents", f"mongoCollection: {HOSTILE_DOCS_CORPUS}")
    )
    consul_kv.put(SIDE_CONSUL_KEY, config)
    repo = work / "models"
    minilm = local_stack.plan.model_repo / local_stack.plan.text_model
    repo.mkdir()
    (repo / local_stack.plan.text_model).symlink_to(minilm.resolve(), target_is_directory=True)
    ready = local_stack.ready
    with start_search(
        repo=repo,
        tokenizer_target=ready.tokenizer_target,
        model_server_target=ready.model_server_target,
        milvus_uri=ready.milvus_uri,
        mongo_uri=ready.mongo_uri,
        consul=consul_kv,
        consul_key=SIDE_CONSUL_KEY,
        work_dir=work,
    ) as running:
        yield running


@pytest.fixture(scope="session")
def side_ui(side_search: RunningSearch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with start_web_ui(side_search.url, tmp_path_factory.mktemp("web-ui-side-ui")) as url:
        yield url
