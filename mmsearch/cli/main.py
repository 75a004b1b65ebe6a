"""`mmsearch`: every offline job and online service of the stack, one subcommand each."""

from __future__ import annotations

import click

from mmsearch import __version__
from mmsearch.cli.lazy import LazyGroup
from mmsearch.logs import setup_logging
from mmsearch.settings import load_settings

_SERVE = {
    "tokenizer": ("services.tokenizer.cli:command", "gRPC tokenizer / image preprocessing service (:60051)."),
    "model": ("services.model_server.cli:command", "gRPC ONNX Runtime model server (:50000)."),
    "search": ("services.search.cli:command", "FastAPI search service with A/B experiments (:8080)."),
    "web": ("web_ui.cli:command", "Flask web UI (:8090)."),
}

_TOP = {
    "export": ("offline.export.cli:export", "Export SBERT, CLIP or cross-encoder models to ONNX (model repository)."),
    "preprocess": ("offline.preprocess.cli:preprocess", "Turn raw QA corpora or image folders into jsonl."),
    "index": ("offline.encode.cli:index", "Encode a jsonl corpus into vector shards (resumable)."),
    "push": ("offline.push.cli:push", "Bulk-load vectors into Milvus or documents into MongoDB."),
    "ingest": ("offline.ingest.cli:ingest", "Preprocess, encode and push a corpus in one command."),
    "reindex": ("offline.ingest.reindex:reindex", "Rebuild a corpus's vectors from MongoDB (e.g. a new model)."),
    "eval": ("offline.eval.cli:evaluate", "Compare A/B experiments on judged queries (Recall@k, MRR, nDCG)."),
    "config": ("services.search.config.cli:config", "Show, validate and push the A/B YAML; explain a user."),
    "ab": ("offline.ab.cli:ab", "Online outcomes per A/B experiment: CTR, intervals, SRM check."),
    "keys": ("services.search.auth.cli:keys", "API keys of the search service: create, list, revoke, rotate."),
    "documents": ("services.search.documents.cli:documents", "Add, change and delete documents while search serves."),
    "local": ("stack.cli:local", "Run the whole stack locally on embedded defaults."),
    "models": ("offline.export.cli:models", "List the models in the model repository."),
}


@click.group(
    cls=LazyGroup,
    lazy={**_TOP, "serve": ("mmsearch.cli.main:serve", "Start one of the online services.")},
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.version_option(__version__, prog_name="mmsearch")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (env MMSEARCH_LOG_LEVEL).")
@click.option("--log-json/--no-log-json", default=None, help="Log one JSON object per line (env MMSEARCH_LOG_JSON).")
def cli(log_level: str | None, log_json: bool | None) -> None:
    """mmsearch: multimodal semantic search.

    Offline: export models, preprocess corpora, encode them and load Milvus and MongoDB.
    Online: serve the tokenizer, model server, search service and web UI.
    Settings come from flags, then environment variables MMSEARCH_<SECTION>__<NAME>.
    """
    settings = load_settings()
    setup_logging(log_level or settings.log_level, json_lines=settings.log_json if log_json is None else log_json)


@click.group(cls=LazyGroup, lazy=_SERVE)
def serve() -> None:
    """Start one of the online services (binds 127.0.0.1 unless --host says otherwise)."""


if __name__ == "__main__":
    cli()
