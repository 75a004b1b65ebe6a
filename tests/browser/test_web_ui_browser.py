"""End-to-end: a person's visit to the web UI in headless Chromium, against the running local stack.

Screenshots of every state land in test-artifacts/screenshots/ (desktop 1280 px and phone 390 px wide).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
from click.testing import CliRunner
from PIL import Image
from playwright.sync_api import Page, expect

from mmsearch.cli.main import cli
from tests.browser.conftest import WatchedPage
from tests.browser.support import HOSTILE_ANSWER, HOSTILE_QUESTION, start_web_ui
from tests.fixtures.ports import free_port, wait_until
from tests.fixtures.stack import LocalStack

pytestmark = pytest.mark.browser

QA_QUERY = "How long does it take to get a building permit?"


def search(page: Page, scene: str, query: str) -> None:
    box = page.locator(f"#panel-{scene} input[name=query]")
    box.fill(query)
    box.press("Enter")


def wait_done(page: Page, scene: str) -> None:
    """Until the search finished (results, no results, an error or a notice), never a fixed sleep."""
    page.wait_for_function(
        """scene => {
            const panel = document.getElementById(`panel-${scene}`);
            const state = panel.querySelector('[data-role="state"]');
            const notice = panel.querySelector('[data-role="notice"]');
            return !panel.hasAttribute("aria-busy") &&
              (/(done|empty|error)/.test(state.className) || !notice.hidden);
        }""",
        arg=scene,
    )


def no_horizontal_scroll(page: Page) -> bool:
    return bool(page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth"))


def pwned(page: Page) -> object:
    return page.evaluate("window.__pwned")


# --- questions and answers -------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_qa_search_shows_answers_with_categories_and_scores(
    stack_ui: str, device: str, request: pytest.FixtureRequest
) -> None:
    watched: WatchedPage = request.getfixturevalue(device)
    page = watched.page
    page.goto(stack_ui + "/")
    expect(page.locator("#tab-qa")).to_have_attribute("aria-selected", "true")
    search(page, "qa", QA_QUERY)
    wait_done(page, "qa")
    cards = page.locator("#panel-qa .qa-card")
    expect(cards.first).to_be_visible()
    assert cards.count() >= 3
    first = cards.first
    assert first.locator(".question").inner_text().strip()
    assert first.locator(".answer").inner_text().strip()
    assert re.fullmatch(r"\d+\.\d{3}", first.locator(".score").inner_text())
    expect(page.locator("#panel-qa [data-role=state]")).to_contain_text(re.compile(r"\d+ results? in \d+ ms"))
    # The FAQ is about construction: the best answers for a permit question mention permits.
    top_text = " ".join(cards.nth(i).inner_text().lower() for i in range(3))
    assert "permit" in top_text
    assert no_horizontal_scroll(page)
    watched.screenshot(f"qa-results-{device}")


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_show_more_appends_the_next_page(stack_ui: str, device: str, request: pytest.FixtureRequest) -> None:
    watched: WatchedPage = request.getfixturevalue(device)
    page = watched.page
    page.goto(stack_ui + "/")
    search(page, "qa", QA_QUERY)
    wait_done(page, "qa")
    cards = page.locator("#panel-qa .qa-card")
    first_page = cards.count()
    assert first_page == 20  # the UI's default page size; the FAQ has far more
    more = page.locator("#panel-qa [data-role=more]")
    expect(more).to_be_visible()
    first_ids = [cards.nth(i).get_attribute("data-id") for i in range(first_page)]
    more.click()
    expect(cards).to_have_count(40)
    wait_done(page, "qa")
    ids = [cards.nth(i).get_attribute("data-id") for i in range(40)]
    assert ids[:20] == first_ids  # the first page stays as it was
    assert len(set(ids)) == 40  # no duplicate across pages
    assert [cards.nth(i).locator(".rank").inner_text() for i in (19, 20, 39)] == ["20", "21", "40"]
    expect(page.locator("#panel-qa [data-role=state]")).to_contain_text("40 results in")
    # A new search starts again from the first page.
    search(page, "qa", "garage")
    wait_done(page, "qa")
    expect(cards).to_have_count(20)
    assert no_horizontal_scroll(page)
    watched.screenshot(f"qa-show-more-{device}")


def test_no_results_is_said_plainly(stack_ui: str, desktop: WatchedPage) -> None:
    page = desktop.page
    page.goto(stack_ui + "/")
    page.fill("#panel-qa input[name=category]", "no-such-category-anywhere")
    search(page, "qa", QA_QUERY)
    wait_done(page, "qa")
    expect(page.locator("#panel-qa [data-role=state]")).to_contain_text("No results.")
    assert page.locator("#panel-qa .qa-card").count() == 0
    desktop.screenshot("qa-no-results-desktop")


def test_tabs_switch_by_click_and_arrow_keys(stack_ui: str, desktop: WatchedPage) -> None:
    page = desktop.page
    page.goto(stack_ui + "/")
    page.click("#tab-t2i")
    expect(page.locator("#panel-t2i")).to_be_visible()
    expect(page.locator("#panel-qa")).to_be_hidden()
    expect(page.locator("#tab-t2i")).to_have_attribute("aria-selected", "true")
    page.focus("#tab-t2i")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#panel-i2i")).to_be_visible()
    expect(page.locator("#tab-i2i")).to_be_focused()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#panel-doc")).to_be_visible()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#panel-qa")).to_be_visible()
    expect(page.locator("#panel-t2i")).to_be_hidden()


# --- feedback ----------------------------------------------------------------------------------------------


def _ab_report(stack: LocalStack, scene: str, since: dt.datetime) -> dict[str, Any]:
    result = CliRunner().invoke(
        cli,
        [
            *("ab", "report", "--scene", scene, "--format", "json", "--since", since.isoformat()),
            *("--search-url", stack.search_url, "--mongo-uri", stack.plan.mongo_uri),
        ],
    )
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def _totals(report: dict[str, Any], layer: str) -> dict[str, int]:
    rows = report["layers"][layer].values()
    return {k: sum(r[k] for r in rows) for k in ("exposures", "clicks", "likes", "dislikes")}


def test_opening_and_rating_results_reaches_the_ab_report(local_stack: LocalStack, desktop: WatchedPage) -> None:
    since = dt.datetime.now(dt.UTC)
    page = desktop.page
    page.goto(local_stack.web_url + "/")
    search(page, "qa", QA_QUERY)
    wait_done(page, "qa")
    cards = page.locator("#panel-qa .qa-card")
    first, second = cards.nth(0), cards.nth(1)
    # Answers open from their question: the first open is the result's click.
    expect(first.locator(".answer")).to_have_class(re.compile(r"\bclamped\b"))
    first.locator(".question .open").click()
    expect(first.locator(".question .open")).to_have_attribute("aria-expanded", "true")
    expect(first.locator(".answer")).not_to_have_class(re.compile(r"\bclamped\b"))
    second.get_by_role("button", name="Helpful", exact=True).click()
    expect(second.locator(".fb-status")).to_have_text("Thanks")
    expect(second.get_by_role("button", name="Helpful", exact=True)).to_have_attribute("aria-pressed", "true")
    cards.nth(2).get_by_role("button", name="Not helpful").click()
    expect(cards.nth(2).locator(".fb-status")).to_have_text("Thanks")
    # Text to image: enlarging a photo is its click.
    page.click("#tab-t2i")
    search(page, "t2i", "a cat sitting on a sofa")
    wait_done(page, "t2i")
    page.locator("#panel-t2i .image-card .thumb").first.click()
    page.click("#lightbox-close")

    want = {"exposures": 1, "clicks": 1, "likes": 1, "dislikes": 1}
    wait_until(
        lambda: _totals(_ab_report(local_stack, "questionAnswer", since), "match.qa") == want,
        what="the page's feedback in mmsearch ab report",
        timeout=30,
    )
    wait_until(
        lambda: _totals(_ab_report(local_stack, "textToImage", since), "match.t2i")["clicks"] == 1,
        what="the photo's click in mmsearch ab report",
        timeout=30,
    )


def test_the_web_uis_key_never_reaches_the_browser(local_stack: LocalStack, desktop: WatchedPage) -> None:
    """The UI calls the search service with its own key (feedback needs one on the local stack) and the page never
    sees it: not in a response, a request header, a cookie, storage or the document."""
    from playwright.sync_api import Response

    from stack.keys import WEB_UI, key_file

    key = key_file(local_stack.plan.keys_dir, WEB_UI).read_text(encoding="utf-8").strip()
    secret = key.rsplit("_", 1)[-1]
    page = desktop.page
    responses: list[Response] = []

    def seen(response: Response) -> None:  # Playwright wraps a Python function, not a bound builtin
        responses.append(response)

    page.on("response", seen)
    page.goto(local_stack.web_url + "/")
    search(page, "qa", QA_QUERY)
    wait_done(page, "qa")
    card = page.locator("#panel-qa .qa-card").first
    card.get_by_role("button", name="Helpful", exact=True).click()
    expect(card.locator(".fb-status")).to_have_text("Thanks")  # stored: the UI's key has scope feedback
    assert responses
    for response in responses:
        assert secret not in json.dumps(response.request.all_headers())
        assert secret not in json.dumps(response.all_headers())
        kind = response.header_value("content-type") or ""
        # The page reads only the status of a feedback answer ({"recorded": ...}): its body is never read, and
        # Playwright's text() would wait for it for ever.
        if ("text" in kind or "json" in kind) and not response.url.endswith("/api/feedback"):
            assert secret not in response.text(), response.url
    assert secret not in page.content()
    assert secret not in json.dumps(page.context.cookies())
    assert secret not in str(page.evaluate("JSON.stringify(window.localStorage) + JSON.stringify(sessionStorage)"))


# --- images ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_text_to_image_grid_loads_photos_and_enlarges_one(
    stack_ui: str, device: str, request: pytest.FixtureRequest
) -> None:
    watched: WatchedPage = request.getfixturevalue(device)
    page = watched.page
    page.goto(stack_ui + "/")
    page.click("#tab-t2i")
    search(page, "t2i", "a cat sitting on a sofa")
    wait_done(page, "t2i")
    images = page.locator("#panel-t2i .image-card img")
    expect(images.first).to_be_visible()
    assert images.count() >= 3
    page.wait_for_function(
        "() => [...document.querySelectorAll('#panel-t2i .image-card img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    names = page.locator("#panel-t2i .image-card .name").all_inner_texts()
    assert all(n.strip() for n in names)
    expect(page.locator("#panel-t2i [data-role=more]")).to_be_hidden()  # the 16 demo photos fit on one page
    assert no_horizontal_scroll(page)
    watched.screenshot(f"t2i-grid-{device}")
    page.locator("#panel-t2i .image-card .thumb").first.click()
    dialog = page.locator("#lightbox")
    expect(dialog).to_be_visible()
    expect(page.locator("#lightbox-caption")).to_contain_text(names[0].strip())
    page.wait_for_function("() => document.getElementById('lightbox-img').naturalWidth > 0")
    watched.screenshot(f"t2i-enlarged-{device}", full_page=False)
    page.click("#lightbox-close")
    expect(dialog).to_be_hidden()


def test_add_photos_makes_them_searchable_by_text(stack_ui: str, desktop: WatchedPage, tmp_path: Path) -> None:
    """ "Add photos" in the text-to-image tab: through the UI's key into the photo corpus, then a text search finds
    it (random-weight CLIP here: every photo of the small corpus is on the first page, the new one among them)."""
    page = desktop.page
    photo = tmp_path / "added-by-the-browser.png"
    rng = np.random.default_rng(11)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(photo)
    page.goto(stack_ui + "/")
    page.click("#tab-t2i")
    page.set_input_files("#add-photos-file", str(photo))
    status = page.locator("#panel-t2i [data-role=add-status]")
    expect(status).to_have_text("Added 1 photo", timeout=60_000)
    search(page, "t2i", "a colourful pattern")
    wait_done(page, "t2i")
    names = page.locator("#panel-t2i .image-card .name").all_inner_texts()
    assert photo.name in [n.strip() for n in names], names
    card = page.locator("#panel-t2i .image-card").filter(has_text=photo.name)
    page.wait_for_function("card => card.querySelector('img').naturalWidth > 0", arg=card.element_handle())
    desktop.screenshot("t2i-added-photo")


@pytest.fixture(scope="module")
def cat_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "chelsea.png"
    Image.fromarray(np.asarray(skimage.data.chelsea())).save(path)
    return path


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_search_by_uploaded_photo(stack_ui: str, cat_photo: Path, device: str, request: pytest.FixtureRequest) -> None:
    watched: WatchedPage = request.getfixturevalue(device)
    page = watched.page
    page.goto(stack_ui + "/")
    page.click("#tab-i2i")
    page.set_input_files("#image-file", str(cat_photo))  # choosing a photo searches right away
    wait_done(page, "i2i")
    expect(page.locator("#panel-i2i [data-role=preview]")).to_be_visible()
    notice = page.locator("#panel-i2i [data-role=notice]")
    if notice.is_visible():  # a stack without CLIP: the page must say how to turn it on
        expect(notice).to_contain_text("mmsearch export clip")
    else:
        cards = page.locator("#panel-i2i .image-card")
        expect(cards.first).to_be_visible()
        # The photo itself is in the corpus (scikit-image's chelsea): it comes back.
        assert any("chelsea" in n for n in page.locator("#panel-i2i .image-card .name").all_inner_texts())
    assert no_horizontal_scroll(page)
    watched.screenshot(f"i2i-upload-{device}")


# --- user id and debug panel ------------------------------------------------------------------------------


def test_user_id_is_kept_across_reloads(stack_ui: str, desktop: WatchedPage) -> None:
    page = desktop.page
    page.goto(stack_ui + "/")
    first = page.input_value("#user-id")
    assert re.fullmatch(r"web-[0-9a-f]{8}", first), "a new visitor gets a random id, nothing hard-coded"
    page.reload()
    assert page.input_value("#user-id") == first
    page.fill("#user-id", "tester-42")
    page.press("#user-id", "Enter")
    page.wait_for_function("() => document.cookie === ''")  # HttpOnly: scripts can't read it
    search(page, "qa", QA_QUERY)
    wait_done(page, "qa")
    page.reload()
    assert page.input_value("#user-id") == "tester-42"


def test_debug_panel_shows_experiments_and_timings_and_pins_a_layer(stack_ui: str, desktop: WatchedPage) -> None:
    page = desktop.page
    page.goto(stack_ui + "/")
    page.click("#debug-toggle")
    expect(page.locator("#debug-panel")).to_be_visible()
    search(page, "qa", QA_QUERY)
    wait_done(page, "qa")
    served = page.locator("#served-by tbody tr")
    expect(served.first).to_be_visible()
    layers = dict(
        zip(
            page.locator("#served-by tbody tr td:first-child").all_inner_texts(),
            page.locator("#served-by tbody tr td:last-child").all_inner_texts(),
            strict=True,
        )
    )
    assert {"qp.qa", "match.qa", "rank.qa", "summary.qa"} <= set(layers)
    stages = page.locator("#timings .stage").all_inner_texts()
    assert "match.qa" in stages
    assert "search service total" in stages
    expect(page.locator("#panel-qa .score-details").first).to_contain_text("final ranking")
    desktop.screenshot("debug-panel-desktop")

    for experiment in ("rank.qa.mmr", "rank.qa.dummy"):
        page.locator("#pins .pin").evaluate_all("rows => rows.forEach(r => r.remove())")
        page.click("#add-pin")
        page.fill("#pins .pin-layer", "rank.qa")
        page.fill("#pins .pin-experiment", experiment)
        search(page, "qa", QA_QUERY)
        wait_done(page, "qa")
        row = page.locator("#served-by tbody tr", has_text="rank.qa")
        expect(row.locator("td").nth(1)).to_have_text(experiment)


# --- escaping and honest states (a second search service + UI over the same stack) ------------------------


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_injected_html_in_an_answer_is_shown_as_text(side_ui: str, device: str, request: pytest.FixtureRequest) -> None:
    watched: WatchedPage = request.getfixturevalue(device)
    page = watched.page
    page.goto(side_ui + "/")
    search(page, "qa", "report a broken street light")
    wait_done(page, "qa")
    card = page.locator("#panel-qa .qa-card", has_text="broken street light")
    expect(card).to_be_visible()
    assert card.locator(".question").inner_text() == HOSTILE_QUESTION
    # Line breaks kept, tags shown literally.
    assert card.locator(".answer").inner_text() == HOSTILE_ANSWER
    assert card.locator(".chip").all_inner_texts()[0] == "<i>streets</i>"
    # Nothing was parsed as markup: no script, img, b or i element inside the results, nothing ran.
    assert page.locator("#panel-qa [data-role=results] script, #panel-qa [data-role=results] img").count() == 0
    assert page.locator("#panel-qa [data-role=results] b, #panel-qa [data-role=results] i").count() == 0
    assert pwned(page) is None
    watched.screenshot(f"qa-escaped-html-{device}")


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_documents_show_the_matched_passage_with_the_query_words_marked(
    side_ui: str, device: str, request: pytest.FixtureRequest
) -> None:
    watched: WatchedPage = request.getfixturevalue(device)
    page = watched.page
    page.goto(side_ui + "/")
    page.click("#tab-doc")
    search(page, "doc", "broken street lights")
    wait_done(page, "doc")
    card = page.locator("#panel-doc .doc-card").first
    expect(card).to_be_visible()
    assert card.get_attribute("data-id") == "1"
    # Title and passage are the document's own text, markup shown literally.
    assert card.locator(".question").inner_text() == "<b>Street lighting</b> maintenance"
    passage = card.locator(".passage").first
    assert passage.inner_text() == (
        "<b>Street lighting</b> maintenance. Broken street lights are reported to the city service desk. "
        '<img src=x onerror="window.__pwned = 3">Repairs take two working days. The lamps are LED since 2019.'
    )
    marked = [m.lower() for m in passage.locator("mark").all_inner_texts()]
    assert marked == ["street", "broken", "street", "lights"]
    assert page.locator("#panel-doc [data-role=results] img, #panel-doc [data-role=results] b").count() == 0
    assert pwned(page) is None
    watched.screenshot(f"documents-passage-{device}")


def test_documents_not_ingested_says_so(stack_ui: str, desktop: WatchedPage) -> None:
    """The stack's own config has the documents scene, but no corpus `documents` was ingested."""
    page = desktop.page
    page.goto(stack_ui + "/")
    page.click("#tab-doc")
    notice = page.locator('#panel-doc [data-role="notice"]')
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("documents")


# Right edges of the notice's command boxes, of the notice, and the left edge of the Debug panel when it is open.
_NOTICE_GEOMETRY = """() => {
  const notice = document.querySelector('#panel-t2i [data-role="notice"]').getBoundingClientRect();
  const pres = [...document.querySelectorAll('#panel-t2i [data-role="notice"] pre')].map((p) => ({
    right: p.getBoundingClientRect().right, overflow: p.scrollWidth - p.clientWidth,
  }));
  const debug = document.getElementById("debug-panel");
  const debugLeft = debug && !debug.hidden ? debug.getBoundingClientRect().left : null;
  return {noticeRight: notice.right, pres, debugLeft, viewport: window.innerWidth};
}"""


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_text_to_image_not_configured_says_how_to_add_clip(
    side_ui: str, device: str, request: pytest.FixtureRequest
) -> None:
    watched: WatchedPage = request.getfixturevalue(device)
    watched.allow.append("503 (SERVICE UNAVAILABLE)")  # the UI's API answers 503 not_configured: the state shown
    page = watched.page
    page.goto(side_ui + "/")
    page.click("#tab-t2i")
    notice = page.locator("#panel-t2i [data-role=notice]")
    expect(notice).to_be_visible()  # known from /ready before anyone searches
    expect(notice).to_contain_text("mmsearch export clip --source <hub id|folder> --key clip")
    search(page, "t2i", "a cat")
    wait_done(page, "t2i")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("not configured")
    assert page.locator("#panel-t2i .image-card").count() == 0
    if device == "desktop":
        page.click("#debug-toggle")  # the panel beside the results, where long commands used to run under it
        expect(page.locator("#debug-panel")).to_be_visible()
    geometry = page.evaluate(_NOTICE_GEOMETRY)
    assert len(geometry["pres"]) == 3
    for box in geometry["pres"]:
        # Every command stays inside the card: wrapped, nothing to scroll sideways, nothing past its edge.
        assert box["right"] <= geometry["noticeRight"] + 0.5, geometry
        assert box["overflow"] <= 0, geometry
    assert geometry["noticeRight"] <= geometry["viewport"], geometry
    if device == "desktop":
        assert geometry["debugLeft"] is not None
        assert geometry["noticeRight"] <= geometry["debugLeft"], geometry
    watched.screenshot(f"t2i-not-configured-{device}")


@pytest.fixture(scope="module")
def ui_without_search(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # Nothing listens on a fresh free port: the search service is down.
    with start_web_ui(f"http://127.0.0.1:{free_port()}", tmp_path_factory.mktemp("ui-no-search")) as url:
        yield url


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_search_service_down_is_a_readable_message(
    ui_without_search: str, device: str, request: pytest.FixtureRequest
) -> None:
    watched: WatchedPage = request.getfixturevalue(device)
    watched.allow.append("503 (SERVICE UNAVAILABLE)")  # the UI's API answers 503: that is the state shown
    page = watched.page
    page.goto(ui_without_search + "/")
    banner = page.locator("#banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("search service cannot be reached")
    search(page, "qa", QA_QUERY)
    wait_done(page, "qa")
    state = page.locator("#panel-qa [data-role=state]")
    expect(state).to_contain_text("Search service unavailable")
    expect(banner).to_contain_text("mmsearch serve search")
    assert "Traceback" not in page.content()
    watched.screenshot(f"search-down-{device}")


@pytest.fixture(scope="module")
def ui_with_hung_search(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A search service that accepts connections and never answers, behind a UI with a short timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        env = {"MMSEARCH_WEB__REQUEST_TIMEOUT_SECONDS": "2"}
        with start_web_ui(f"http://127.0.0.1:{port}", tmp_path_factory.mktemp("ui-hung"), extra_env=env) as url:
            yield url


def test_slow_search_shows_a_spinner_then_gives_up(ui_with_hung_search: str, desktop: WatchedPage) -> None:
    desktop.allow.append("504 (GATEWAY TIMEOUT)")
    page = desktop.page
    page.goto(ui_with_hung_search + "/")
    search(page, "qa", QA_QUERY)
    expect(page.locator("#panel-qa .spinner")).to_be_visible()
    expect(page.locator("#panel-qa button[type=submit]")).to_be_disabled()
    desktop.screenshot("qa-searching-desktop")
    wait_done(page, "qa")
    state = page.locator("#panel-qa [data-role=state]")
    expect(state).to_contain_text("did not answer within 2 seconds")
    expect(page.locator("#panel-qa .spinner")).to_have_count(0)
    expect(page.locator("#panel-qa button[type=submit]")).to_be_enabled()
