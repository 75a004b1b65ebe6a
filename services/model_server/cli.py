"""`mmsearch serve model`: flags override MMSEARCH_MODEL_SERVER__* environment variables and defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mmsearch.grpc_common.cli_options import server_options
from mmsearch.settings import ModelServerSettings, load_settings


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@server_options(ModelServerSettings())
@click.option(
    "--provider",
    "providers",
    multiple=True,
    help="ONNX Runtime execution provider, repeatable: auto (CUDA if present, else CPU), cuda, cpu, or a full name.",
)
@click.option("--cuda-device-id", type=int, default=None, help="GPU to use with CUDA (default 0).")
@click.option("--intra-op-threads", type=int, default=None, help="ORT threads inside one op (0: all cores).")
@click.option("--inter-op-threads", type=int, default=None, help="ORT threads across ops (0: sequential).")
@click.option("--workers", type=int, default=None, help="Threads that run ORT calls and loading (default 32).")
@click.option(
    "--batching/--no-batching", default=None, help="Server-side dynamic batching for every model (default on)."
)
@click.option(
    "--no-batching-model", "no_batching_models", multiple=True, help="Model key to serve unbatched; repeatable."
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    metavar="KEY=NAME",
    help="Serve model KEY from its NAME precision (e.g. reranker=int8, exported with --int8); repeatable.",
)
@click.option("--max-batch-size", type=int, default=None, help="Most rows in one batched ORT call (default 32).")
@click.option(
    "--max-queue-delay-ms", type=float, default=None, help="Longest wait for a burst to fill a batch (default 2)."
)
@click.option(
    "--max-queue-size",
    type=int,
    default=None,
    help="Requests that may wait per model; more fail fast with RESOURCE_EXHAUSTED (default 512).",
)
@click.option(
    "--max-embed-texts",
    type=int,
    default=None,
    help="Most texts per Embed, documents per ScorePairs call (default 256).",
)
@click.option("--batch-concurrency", type=int, default=None, help="Batches of one model running at once (default 1).")
@click.option(
    "--split-padding-tokens",
    type=int,
    default=None,
    help="Cut a batch where padding would waste more than this many tokens (default 48; 0: never).",
)
@click.option(
    "--allow-spinning/--no-spinning",
    default=None,
    help="Let ORT worker threads spin between ops (default off: the cores are usually shared).",
)
@click.option("--warmup/--no-warmup", default=None, help="Run each model on dummy inputs once it is loaded.")
@click.option("--rescan-seconds", type=float, default=None, help="Repository rescan period; 0: only on LoadModel.")
@click.option("--max-message-mb", type=int, default=None, help="Largest gRPC message either way (default 64).")
@click.option("--grace-seconds", type=float, default=None, help="Time in-flight calls get on SIGTERM (default 5).")
def command(
    model_repo: Path | None,
    providers: tuple[str, ...],
    no_batching_models: tuple[str, ...],
    variants: tuple[str, ...],
    **flags: Any,
) -> None:
    """Serve every model of the repository over gRPC with ONNX Runtime: Predict, Embed (query texts, tokenized
    in-process with the model's own tokenizer), ScorePairs (a cross-encoder's query against documents, likewise),
    ListModels, LoadModel, UnloadModel. Models are loaded and warmed up at start; concurrent calls are batched per
    model, a request of several rows row by row.

    Health (grpc.health.v1) has an entry per model ("model/<key>"), SERVING only when it is loaded; reflection
    is on; SIGTERM finishes in-flight calls before exiting.

    Each flag has an environment variable MMSEARCH_MODEL_SERVER__<FLAG>
    (e.g. MMSEARCH_MODEL_SERVER__MAX_BATCH_SIZE=64); flags win.
    """
    from mmsearch.grpc_common.server import START_ERRORS
    from mmsearch.runtime.providers import ProviderError
    from services.model_server.server import run

    settings = load_settings()
    update: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    if providers:
        update["providers"] = list(providers)
    if no_batching_models:
        update["no_batching_models"] = list(no_batching_models)
    if variants:
        update["variants"] = _variants(variants)
    section = settings.model_server.model_copy(update=update)
    try:
        run(section, model_repo or settings.model_repo)
    except (*START_ERRORS, ProviderError) as exc:
        raise click.ClickException(str(exc)) from exc


def _variants(given: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in given:
        key, sep, name = item.partition("=")
        if not sep or not key.strip() or not name.strip():
            raise click.BadParameter(f"{item!r}: expected KEY=NAME, e.g. reranker=int8", param_hint="--variant")
        out[key.strip()] = name.strip()
    return out
