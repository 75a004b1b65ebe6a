"""The local stack through the same code path as the README's first command (`mmsearch local up`)."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mmsearch.model_repo import ModelRepository
from tests.fixtures.models import CLIP_CONFIG_DIR, hf_cache_snapshot, write_clip_folder
from tests.fixtures.ports import pid_running
from tests.fixtures.stack import LocalStack, child_pids, model_repo_with_minilm, post_json, start_local_stack

pytestmark = pytest.mark.integration


def assert_reference_item(item: dict[str, Any]) -> None:
    assert set(item) >= {
        "id",
        "originalRetrievalScoreMap",
        "finalRetrievalScore",
        "originalRankingScoreMap",
        "finalRankingScore",
        "score",
        "summary",
    }
    assert isinstance(item["id"], str)
    assert item["id"].isdigit()
    assert "ann_matcher" in item["originalRetrievalScoreMap"]


def test_qa_answers_from_the_demo_faq(local_stack: LocalStack) -> None:
    query = "how do I apply for a building permit"
    reply = post_json(f"{local_stack.search_url}/qa/user/10", {"query": query})
    assert reply["queryModel"]["query"] == query
    [items] = reply["searchItemModels"]
    assert items, "the demo FAQ returned no answers"
    for item in items:
        assert_reference_item(item)
        assert set(item["summary"]) >= {"question", "answer", "category"}
    # Answers come from the demo FAQ the stack wrote, and the real MiniLM ranks a permit question at the top.
    faq = [json.loads(line) for line in (local_stack.plan.demo_dir / "faq-en.raw.jsonl").read_text().splitlines()]
    by_id = {str(row["id"]): row for row in faq}
    for item in items:
        assert item["summary"]["question"] == by_id[item["id"]]["q"]
    assert "permit" in items[0]["summary"]["question"].lower()


def _call(url: str, key: str | None = None, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of a GET, or of a POST when `body` is given; error answers included."""
    import urllib.error

    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - loopback URL of our own stack
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), json.loads(exc.read())


def test_search_is_open_on_loopback_and_everything_else_needs_the_printed_admin_key(local_stack: LocalStack) -> None:
    import stat

    from stack.keys import ADMIN, WEB_UI, key_file
    from tests.fixtures.auth import keys_cli

    admin_file, web_file = key_file(local_stack.plan.keys_dir, ADMIN), key_file(local_stack.plan.keys_dir, WEB_UI)
    for path in (admin_file, web_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(admin_file) in local_stack.output.read_text(encoding="utf-8")  # the banner says where it is
    admin = admin_file.read_text(encoding="utf-8").strip()
    url = local_stack.search_url
    feedback = {"requestId": "0" * 32, "userId": "10", "itemId": "1", "event": "click"}
    status, body = _call(f"{url}/feedback", body=feedback)
    assert (status, body["error"]) == (401, "missing_key")
    status, body = _call(f"{url}/feedback", admin, body=feedback)
    assert (status, body["error"]) == (404, "unknown_request")  # through: no such search
    assert _call(f"{url}/ready") == (200, {"ready": True})
    status, body = _call(f"{url}/ready", admin)
    assert status == 200
    assert body["checks"]["mongodb"] == "ok"
    assert _call(f"{url}/metrics")[0] == 401
    # Both keys are stored (hashes only) and listed.
    listing = keys_cli(local_stack.ready.mongo_uri, "list").stdout
    assert "local-admin" in listing
    assert "local-web-ui" in listing
    assert admin.rsplit("_", 1)[-1] not in listing


def test_text_to_image_is_on_with_a_clip_source(local_stack: LocalStack) -> None:
    assert local_stack.ready.text_to_image
    assert local_stack.ready.loaded["photos"] > 0
    reply = post_json(f"{local_stack.search_url}/t2i/user/10", {"query": "a cat"})
    [items] = reply["searchItemModels"]
    assert items
    for item in items:
        assert_reference_item(item)
        assert item["summary"]["url"].startswith(f"{local_stack.web_url}/images/")
    # The web UI serves the photo the result points at.
    with urllib.request.urlopen(items[0]["summary"]["url"], timeout=10) as resp:  # noqa: S310 - our loopback UI
        assert resp.headers["Content-Type"].startswith("image/")


def test_every_process_logs_to_one_place_and_binds_loopback(local_stack: LocalStack) -> None:
    for name in ("milvus", "mongo", "tokenizer", "model", "setup", "search", "web", "honcho"):
        assert local_stack.log_text(name), f"no log for {name}"
    assert "mmsearch is up" in local_stack.output_text()
    assert "setup     | " in local_stack.output_text()  # honcho's prefixed output
    plan = local_stack.plan
    assert plan.search_url.startswith("http://127.0.0.1:")
    assert plan.milvus_uri.startswith("http://127.0.0.1:")


@pytest.mark.slow
def test_default_clip_source_exports_from_the_hugging_face_cache(tmp_path: Path, model_repo: ModelRepository) -> None:
    """No --clip-source: the default hub id, served here by an offline Hugging Face cache that holds the real
    ViT-B/32 configuration and tokenizer with random weights (laid out as a hub download), as on a machine whose
    first start downloads it. Both towers are exported and the demo photos ingested."""
    from transformers import CLIPConfig

    from mmsearch.settings import LocalSettings

    hub_id = LocalSettings().clip_source
    cache = tmp_path / "hf-cache"
    write_clip_folder(hf_cache_snapshot(cache, hub_id), CLIPConfig.from_pretrained(str(CLIP_CONFIG_DIR)))
    repo_dir = model_repo_with_minilm(tmp_path / "models", model_repo)
    with start_local_stack(tmp_path / "var", repo_dir, hf_cache=cache) as running:
        assert running.ready.text_to_image
        assert running.ready.loaded["photos"] > 0
        assert f"CLIP {hub_id} from the Hugging Face cache (HF_HUB_OFFLINE is set)" in running.output_text()
        repo = ModelRepository(repo_dir)
        text, image = repo.manifest("clip-text"), repo.manifest("clip-image")
        assert text.source.hub_id == image.source.hub_id == hub_id
        assert text.embedding_dim == image.embedding_dim == 512
        reply = post_json(f"{running.search_url}/t2i/user/10", {"query": "a cat"})
        assert reply["searchItemModels"][0]


def test_second_start_reuses_models_and_data(tmp_path: Path, model_repo: ModelRepository) -> None:
    repo_dir = model_repo_with_minilm(tmp_path / "models", model_repo)
    var_dir = tmp_path / "var"
    with start_local_stack(var_dir, repo_dir) as first:
        assert "faq_qa: ingesting" in first.log_text("setup")
        # The default CLIP source is a hub id that neither the (offline) hub nor the cache has: one line, no export.
        off = "Text-to-image is OFF: HF_HUB_OFFLINE is set and openai/clip-vit-base-patch32 is not in the"
        assert off in first.output_text()
        assert "exporting" not in first.output_text()
        assert not first.ready.text_to_image
        count = first.ready.loaded["faq_qa"]
    first_output = first.output_text()
    assert "local stack stopped" in first_output
    with start_local_stack(var_dir, repo_dir) as second:
        second_run = second.output_text()[len(first_output) :]
        assert f"faq_qa: already loaded ({count} documents, model minilm), skipping ingest" in second_run
        assert "exporting" not in second_run
        reply = post_json(f"{second.search_url}/qa/user/10", {"query": "building permit"})
        assert reply["searchItemModels"][0]
        # A process that dies takes the stack down with a message, not a half-working stack.
        pids = child_pids(var_dir)
        os.kill(pids["model"], signal.SIGKILL)
        assert second.proc.wait(timeout=120) != 0
        assert "the local stack stopped because a process exited with code" in second.output_text()
        for name, pid in pids.items():
            assert not pid_running(pid), f"{name} (pid {pid}) still running after the stack stopped"
