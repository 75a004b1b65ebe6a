"""`mmsearch serve tokenizer`: flags override MMSEARCH_TOKENIZER__* environment variables and defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mmsearch.grpc_common.cli_options import server_options
from mmsearch.settings import TokenizerSettings, load_settings


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@server_options(TokenizerSettings())
@click.option("--workers", type=int, default=None, help="Threads that tokenize and decode images (default 8).")
@click.option("--max-batch", type=int, default=None, help="Most texts or images in one request (default 256).")
@click.option("--max-message-mb", type=int, default=None, help="Largest gRPC message either way (default 32).")
@click.option("--max-image-mb", type=int, default=None, help="Largest encoded image (default 20).")
@click.option("--rescan-seconds", type=float, default=None, help="Repository rescan period; 0: on demand only.")
@click.option("--grace-seconds", type=float, default=None, help="Time in-flight calls get on SIGTERM (default 5).")
def command(model_repo: Path | None, **flags: Any) -> None:
    """Serve query preprocessing over gRPC: Tokenize (texts -> the model's token tensors) and PreprocessImages
    (encoded images -> pixel_values for a CLIP image tower), for every model of the repository.

    Health (grpc.health.v1) has an entry per model ("model/<key>"); reflection is on; SIGTERM finishes
    in-flight calls before exiting.

    Each flag has an environment variable MMSEARCH_TOKENIZER__<FLAG>
    (e.g. MMSEARCH_TOKENIZER__MAX_BATCH=128); flags win.
    """
    from mmsearch.grpc_common.server import START_ERRORS
    from services.tokenizer.server import run

    settings = load_settings()
    section = settings.tokenizer.model_copy(update={k: v for k, v in flags.items() if v is not None})
    try:
        run(section, model_repo or settings.model_repo)
    except START_ERRORS as exc:
        raise click.ClickException(str(exc)) from exc
