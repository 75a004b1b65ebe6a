"""The generated Procfile and environment: every process bound to loopback, settings wired to the plan's ports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmsearch.settings import Settings
from stack.plan import Corpus, Ports, ReadyReport, StackPlan
from stack.procfile import processes, render_env, stack_env, write_procfile
from stack.setup import banner, ingest_command


def _plan(tmp_path: Path, *, clip: bool = False) -> StackPlan:
    return StackPlan(
        root=tmp_path,
        var_dir=tmp_path / "var",
        model_repo=tmp_path / "models",
        ab_config=tmp_path / "ab.yaml",
        ports=Ports(
            milvus=1001,
            mongo=1002,
            tokenizer=1003,
            tokenizer_metrics=1004,
            model=1005,
            model_metrics=1006,
            search=1007,
            web=1008,
        ),
        text_model="minilm",
        clip_text_model="clip-text" if clip else None,
        clip_image_model="clip-image" if clip else None,
        corpora=[Corpus(name="faq_qa", kind="qa", source=tmp_path / "faq.jsonl", model_key="minilm")],
        bin_dir=tmp_path / "bin",
        ready_timeout_seconds=30,
    )


def test_every_process_is_in_the_procfile_and_binds_loopback(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    specs = {s.name: s.command for s in processes(plan)}
    assert set(specs) == {"milvus", "mongo", "tokenizer", "model", "setup", "search", "web"}
    assert "--host 127.0.0.1 --port 1001" in specs["milvus"]
    assert "--host 127.0.0.1 --port 1002" in specs["mongo"]
    # The search service starts only after the setup process has loaded the data.
    assert "data-ready" in specs["search"]
    procfile, envfile = write_procfile(plan)
    assert procfile.read_text().count("\n") == len(specs) + 1  # header line + one per process
    assert "MMSEARCH_SEARCH__PORT=1007\n" in envfile.read_text()


def test_environment_is_read_back_by_the_shared_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan(tmp_path)
    env = stack_env(plan)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    assert settings.milvus.uri == "http://127.0.0.1:1001"
    assert settings.mongo.uri == "mongodb://127.0.0.1:1002"
    assert (settings.tokenizer.host, settings.tokenizer.port, settings.tokenizer.metrics_port) == (
        "127.0.0.1",
        1003,
        1004,
    )
    assert (settings.model_server.port, settings.model_server.metrics_port) == (1005, 1006)
    assert (settings.search.host, settings.search.port) == ("127.0.0.1", 1007)
    assert settings.search.tokenizer_target == "127.0.0.1:1003"
    assert settings.search.model_server_target == "127.0.0.1:1005"
    assert settings.search.config_source == "file"
    assert settings.search.config_file == plan.ab_config
    assert (settings.web.host, settings.web.port, settings.web.search_url) == (
        "127.0.0.1",
        1008,
        "http://127.0.0.1:1007",
    )
    assert settings.model_repo == plan.model_repo
    assert all(v == "127.0.0.1" for k, v in env.items() if k.endswith("__HOST"))
    assert render_env(env).count("\n") == len(env)


def test_plan_round_trips_through_its_file(tmp_path: Path) -> None:
    plan = _plan(tmp_path, clip=True)
    plan.save()
    again = StackPlan.load(plan.var_dir)
    assert again == plan
    assert again.text_to_image
    assert json.loads((plan.run_dir / "plan.json").read_text())["ports"]["search"] == 1007


def test_ingest_command_targets_the_corpus_and_model(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    cmd = ingest_command(plan, plan.corpora[0])
    assert cmd[:3] == [str(plan.bin_dir / "mmsearch"), "ingest", "qa"]
    assert "faq_qa" in cmd
    assert "minilm" in cmd


def test_banner_has_urls_and_a_curl_example_and_says_when_text_to_image_is_off(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    report = ReadyReport(
        search_url=plan.search_url,
        web_url=plan.web_url,
        tokenizer_target="127.0.0.1:1003",
        model_server_target="127.0.0.1:1005",
        milvus_uri=plan.milvus_uri,
        mongo_uri=plan.mongo_uri,
        text_to_image=False,
        loaded={"faq_qa": 503},
    )
    text = banner(plan, report)
    assert "http://127.0.0.1:1008" in text
    assert "curl -X POST" in text
    assert "http://127.0.0.1:1007/qa/user/10" in text
    assert "Text-to-image is OFF" in text
    assert "--clip-source" in text
    on = banner(plan, report.model_copy(update={"text_to_image": True}))
    assert "/t2i/user/10" in on
    assert "OFF" not in on
