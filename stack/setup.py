"""The Procfile's `setup` process: stores ready -> demo data loaded (unless already) -> services ready -> URLs.

It stays alive afterwards (honcho stops the whole stack when any process ends) and exits non-zero, which
stops the stack, when a step fails: the message names the step and the log file to read.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import click

from mmsearch.model_repo import ModelRepository
from mmsearch.settings import load_settings
from stack import catalog, keys, probes
from stack.plan import DATA_READY_FILE, READY_FILE, Corpus, ReadyReport, StackPlan


class SetupError(Exception):
    pass


def wait_for(what: str, check: Callable[[], bool], *, timeout: float, log_file: Path) -> float:
    """Poll `check` until it passes; returns the seconds waited, or raises naming the log to read."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise SetupError(f"{what} was not ready after {timeout:.0f} s: see {log_file}")
        time.sleep(0.25)


def corpus_args(plan: StackPlan, corpus: Corpus) -> list[str]:
    """What defines a corpus's content: input, mapping, image URLs, model. A change means ingesting again."""
    if corpus.kind == "qa":
        args = ["--input", str(corpus.source), "--format", "jsonl"]
        if corpus.field_map:
            args += ["--map", corpus.field_map]
        # The demo config's hybrid experiments search the questions' words too (BM25).
        args += ["--lexical-field", "question"]
    else:
        # The web UI serves the photo folder at /images/<file name> (settings.web.image_dir): the stored URLs
        # carry the web UI's port.
        args = ["--dir", str(corpus.source), "--base-url", f"{plan.web_url}/images"]
    return [*args, "--corpus", corpus.name, "--model", corpus.model_key]


def ingest_command(plan: StackPlan, corpus: Corpus) -> list[str]:
    """`mmsearch ingest` for a demo corpus, against the stack's stores and model repository."""
    return [
        *(str(plan.bin_dir / "mmsearch"), "ingest", corpus.kind),
        *corpus_args(plan, corpus),
        *("--repo", str(plan.model_repo), "--work-dir", str(plan.var_dir / "ingest" / corpus.name)),
        *("--milvus-uri", plan.milvus_uri, "--mongo-uri", plan.mongo_uri),
    ]


def load_corpus(plan: StackPlan, corpus: Corpus, repo: ModelRepository, database: str) -> int:
    """Ingest `corpus` unless the stores already hold it from the current model export; returns its size."""
    fingerprint = " ".join(corpus_args(plan, corpus))
    have = catalog.loaded_count(
        repo=repo,
        corpus=corpus,
        fingerprint=fingerprint,
        run_dir=plan.run_dir,
        milvus_uri=plan.milvus_uri,
        mongo_uri=plan.mongo_uri,
        database=database,
    )
    if have is not None:
        click.echo(f"{corpus.name}: already loaded ({have} documents, model {corpus.model_key}), skipping ingest")
        return have
    click.echo(f"{corpus.name}: ingesting {corpus.source} with model {corpus.model_key} ...")
    started = time.monotonic()
    rc = subprocess.run(ingest_command(plan, corpus), cwd=plan.root, check=False).returncode
    if rc != 0:
        raise SetupError(
            f"ingesting {corpus.name} failed (exit {rc}): see the lines above, or {plan.logs_dir}/setup.log"
        )
    manifest = repo.manifest(corpus.model_key)
    count = catalog.milvus_count(plan.milvus_uri, corpus, manifest.embedding_dim)
    if not count:
        raise SetupError(f"ingest of {corpus.name} finished but Milvus holds no vectors of model {corpus.model_key}")
    catalog.write_stamp(
        plan.run_dir,
        catalog.LoadedState(
            corpus=corpus.name,
            model_key=corpus.model_key,
            model_created_at=manifest.created_at,
            fingerprint=fingerprint,
            count=count,
        ),
    )
    click.echo(f"{corpus.name}: {count} documents loaded in {time.monotonic() - started:.1f} s")
    return count


def run_setup(plan: StackPlan) -> ReadyReport:
    t = plan.ready_timeout_seconds
    logs = plan.logs_dir
    p = plan.ports
    waited = wait_for(
        "Milvus Lite server", lambda: probes.milvus_ok(plan.milvus_uri), timeout=t, log_file=logs / "milvus.log"
    )
    click.echo(f"Milvus Lite server ready at {plan.milvus_uri} ({waited:.1f} s)")
    waited = wait_for("SecantusDB", lambda: probes.mongo_ok(plan.mongo_uri), timeout=t, log_file=logs / "mongo.log")
    click.echo(f"SecantusDB (MongoDB) ready at {plan.mongo_uri} ({waited:.1f} s)")

    for line in keys.store_keys(plan.keys_dir, plan.mongo_uri):
        click.echo(line)
    repo = ModelRepository(plan.model_repo)
    database = load_settings().mongo.database
    loaded = {c.name: load_corpus(plan, c, repo, database) for c in plan.corpora}
    (plan.run_dir / DATA_READY_FILE).touch()

    checks: list[tuple[str, Callable[[], bool], str]] = [
        ("tokenizer service", lambda: probes.grpc_serving(f"{plan.host}:{p.tokenizer}"), "tokenizer.log"),
        ("model server", lambda: probes.grpc_serving(f"{plan.host}:{p.model}"), "model.log"),
        ("search service", lambda: probes.http_ok(f"{plan.search_url}/ready"), "search.log"),
        ("web UI", lambda: probes.http_ok(f"{plan.web_url}/health"), "web.log"),
    ]
    for what, check, log_name in checks:
        waited = wait_for(what, check, timeout=t, log_file=logs / log_name)
        click.echo(f"{what} ready ({waited:.1f} s)")
    problem = probes.web_ui_search_problem(plan.web_url)
    if problem is not None:
        raise SetupError(f"the web UI cannot use the search service: {problem} (see {logs / 'web.log'})")
    click.echo("web UI reaches the search service with its key")
    return ReadyReport(
        search_url=plan.search_url,
        web_url=plan.web_url,
        tokenizer_target=f"{plan.host}:{p.tokenizer}",
        model_server_target=f"{plan.host}:{p.model}",
        milvus_uri=plan.milvus_uri,
        mongo_uri=plan.mongo_uri,
        text_to_image=plan.text_to_image,
        loaded=loaded,
    )


def banner(plan: StackPlan, report: ReadyReport) -> str:
    lines = [
        "",
        "mmsearch is up. Everything listens on 127.0.0.1; Ctrl-C stops it all.",
        f"  web UI          {report.web_url}",
        f"  search API      {report.search_url}   (OpenAPI docs: {report.search_url}/docs)",
        f"  tokenizer gRPC  {report.tokenizer_target}",
        f"  model gRPC      {report.model_server_target}",
        f"  Milvus          {report.milvus_uri}",
        f"  MongoDB         {report.mongo_uri}",
        f"  logs            {plan.logs_dir}/<process>.log",
        f"  admin key       {keys.key_file(plan.keys_dir, keys.ADMIN)}   (writes, /metrics, /ready's details)",
        "  loaded          " + ", ".join(f"{k}: {v} documents" for k, v in report.loaded.items()),
        "",
        "Try:",
        "  curl -X POST -H 'Content-Type: application/json' \\",
        '    -d \'{"query": "how do I apply for a building permit"}\' \\',
        f"    {report.search_url}/qa/user/10",
    ]
    if report.text_to_image:
        lines += [
            "  curl -X POST -H 'Content-Type: application/json' \\",
            f'    -d \'{{"query": "a cat"}}\' {report.search_url}/t2i/user/10',
        ]
    else:
        lines += ["", text_to_image_off_message(plan.clip_off_reason)]
    admin = keys.key_file(plan.keys_dir, keys.ADMIN)
    lines += [
        "",
        "Search needs no key here (loopback); everything else does, e.g. the admin key:",
        f'  curl -H "Authorization: Bearer $(cat {admin})" {report.search_url}/ready',
    ]
    return "\n".join(lines) + "\n"


def text_to_image_off_message(reason: str | None) -> str:
    return (
        f"Text-to-image is OFF: {reason or 'no CLIP model'}. To turn it on, give a CLIP source that can be had "
        "here: a local folder with the weights, or a hub id on a machine that reaches the Hugging Face hub:\n"
        "  scripts/local-up --clip-source /path/to/clip-vit-base-patch32\n"
        "To start without looking for one: scripts/local-up --no-clip"
    )


def wait_for_stop() -> None:
    """Block until honcho's SIGTERM (or Ctrl-C), then return so the process exits 0."""
    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop:
        signal.pause()


@click.command("setup", hidden=True)
@click.option("--var-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
def setup_command(var_dir: Path) -> None:
    """Internal: the Procfile's setup process (see stack.setup)."""
    plan = StackPlan.load(var_dir)
    try:
        report = run_setup(plan)
    except SetupError as exc:
        raise click.ClickException(str(exc)) from exc
    # The banner first: whoever waits on the ready file (scripts, tests) then finds it said.
    click.echo(banner(plan, report))
    (plan.run_dir / READY_FILE).write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    wait_for_stop()
