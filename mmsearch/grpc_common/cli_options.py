"""The flags every gRPC service of ours takes, with defaults read from its settings section."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from mmsearch.settings import ModelServerSettings, TokenizerSettings

F = TypeVar("F", bound=Callable[..., object])


def server_options(defaults: TokenizerSettings | ModelServerSettings) -> Callable[[F], F]:
    """--host, --port, --metrics-port, --tls-cert-file, --tls-key-file and --repo (passed as `model_repo`)."""
    options = [
        click.option(
            "--host",
            default=None,
            help=f"Address to bind (default {defaults.host}; 0.0.0.0 only behind a firewall).",
        ),
        click.option("--port", type=int, default=None, help=f"gRPC port (default {defaults.port})."),
        click.option(
            "--metrics-port",
            type=int,
            default=None,
            help=f"Prometheus /metrics HTTP port (default {defaults.metrics_port}; 0: off).",
        ),
        click.option(
            "--tls-cert-file",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Serve TLS only, with this certificate (PEM, chain included) and --tls-key-file; clients verify it "
            "against their CA file (search.grpc_tls_ca_file).",
        ),
        click.option(
            "--tls-key-file",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="The TLS certificate's private key (PEM).",
        ),
        click.option(
            "--repo",
            "model_repo",
            type=click.Path(path_type=Path, file_okay=False),
            default=None,
            help="Model repository folder written by `mmsearch export` (env MMSEARCH_MODEL_REPO, default ./models).",
        ),
    ]

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate
