"""Where the local stack's CLIP comes from: a folder, the hub, the Hugging Face cache, or nowhere, decided
without network waits beyond one short probe, and never asking the hub when HF_HUB_OFFLINE is set."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from stack import clip_source
from stack.clip_source import choose
from tests.fixtures.models import hf_cache_snapshot
from tests.fixtures.ports import free_port

HUB_ID = "openai/clip-vit-base-patch32"


@pytest.fixture
def hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache of this test's own, hub online (unless a test says otherwise)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return cache


def _cache_model(cache: Path) -> None:
    snapshot = hf_cache_snapshot(cache, HUB_ID)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")


def _hub_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", endpoint)


def _no_probe(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def probe(hub_id: str, seconds: float) -> str | None:
        calls.append(hub_id)
        return None

    monkeypatch.setattr(clip_source, "_probe", probe)
    return calls


def test_an_existing_folder_is_used_as_is(tmp_path: Path, hf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _no_probe(monkeypatch)
    folder = tmp_path / "my-clip"
    folder.mkdir()
    choice = choose(str(folder), probe_seconds=3)
    assert choice.source == str(folder)
    assert choice.env == {}
    assert calls == []  # a folder needs no hub


def test_offline_mode_never_asks_the_hub(hf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    calls = _no_probe(monkeypatch)
    off = choose(HUB_ID, probe_seconds=3)
    assert off.source is None
    assert "HF_HUB_OFFLINE is set" in off.reason
    assert str(hf) in off.reason
    _cache_model(hf)
    cached = choose(HUB_ID, probe_seconds=3)
    assert cached.source == HUB_ID
    assert cached.env == {"HF_HUB_OFFLINE": "1"}
    assert "from the Hugging Face cache" in cached.reason
    assert calls == []


def test_a_hub_that_refuses_connections_turns_clip_off_in_one_line(hf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hub_at(monkeypatch, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    choice = choose(HUB_ID, probe_seconds=3)
    assert choice.source is None
    assert choice.reason.startswith("the Hugging Face hub cannot be reached (")
    assert "\n" not in choice.reason
    assert HUB_ID in choice.reason


def test_a_silent_hub_is_given_up_after_the_probe_time_out(hf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        _hub_at(monkeypatch, f"http://127.0.0.1:{silent.getsockname()[1]}")
        choice = choose(HUB_ID, probe_seconds=0.5)
    assert choice.source is None
    assert "cannot be reached" in choice.reason


def test_an_unreachable_hub_falls_back_to_the_cache_in_offline_mode(hf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hub_at(monkeypatch, f"http://127.0.0.1:{free_port()}")
    _cache_model(hf)
    choice = choose(HUB_ID, probe_seconds=3)
    assert choice.source == HUB_ID
    # The export then reads the cache without touching the network (no retries, no time-outs).
    assert choice.env == {"HF_HUB_OFFLINE": "1"}
    assert "from the Hugging Face cache" in choice.reason


def test_a_reachable_hub_is_used(hf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _no_probe(monkeypatch)
    choice = choose(HUB_ID, probe_seconds=3)
    assert (choice.source, choice.env) == (HUB_ID, {})
    assert calls == [HUB_ID]
