"""`mmsearch serve search`: the FastAPI search service under uvicorn."""

from __future__ import annotations

from pathlib import Path

import click

from mmsearch.settings import load_settings


@click.command("search")
@click.option("--host", default=None, help="Bind address (default search.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default search.port, 8080).")
@click.option("--config-source", type=click.Choice(["file", "consul"]), default=None, help="Where the A/B YAML lives.")
@click.option("--config-file", type=click.Path(path_type=Path), default=None, help="A/B YAML file (source 'file').")
@click.option("--consul", "consul_addr", default=None, help="Consul host:port (source 'consul').")
@click.option("--consul-key", default=None, help="Consul KV key (default config/test/multimodal-config).")
@click.option("--tokenizer", default=None, help="Tokenizer service target host:port.")
@click.option("--model-server", default=None, help="Model server target host:port.")
@click.option("--milvus-uri", default=None, help="Milvus URI: a Milvus Lite file or http://host:19530.")
@click.option("--mongo-uri", default=None, help="MongoDB URI.")
@click.option("--model-repo", type=click.Path(path_type=Path), default=None, help="Model repository folder.")
@click.option(
    "--auth",
    "auth_mode",
    type=click.Choice(["keys", "off"]),
    default=None,
    help="keys (default): every route but /health needs an API key (`mmsearch keys`); off: every route is open.",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Allow --auth off on an address other than loopback (only on a network you trust).",
)
def command(  # noqa: PLR0917 - one parameter per click option
    host: str | None,
    port: int | None,
    config_source: str | None,
    config_file: Path | None,
    consul_addr: str | None,
    consul_key: str | None,
    tokenizer: str | None,
    model_server: str | None,
    milvus_uri: str | None,
    mongo_uri: str | None,
    model_repo: Path | None,
    auth_mode: str | None,
    insecure_no_auth: bool,
) -> None:
    """Serve POST /qa|/t2i|/i2i/user/{user_id}, /feedback, /health, /ready, /experiments, /metrics and /docs.

    Settings come from MMSEARCH_SEARCH__* and MMSEARCH_AUTH__* (and MMSEARCH_MILVUS__*, MMSEARCH_MONGO__*); flags
    override them. With auth keys, a bootstrap admin key can come from MMSEARCH_AUTH__BOOTSTRAP_KEY_FILE.
    """
    import uvicorn

    from services.search.app import create_app
    from services.search.auth.startup import AuthStartError, check_exposure

    base = load_settings()
    search: dict[str, object] = {}
    for key, value in {
        "host": host,
        "port": port,
        "config_source": config_source,
        "config_file": config_file,
        "consul_key": consul_key,
        "tokenizer_target": tokenizer,
        "model_server_target": model_server,
    }.items():
        if value is not None:
            search[key] = value
    if consul_addr:
        h, _, p = consul_addr.rpartition(":")
        search.update(consul_host=h or consul_addr, consul_port=int(p) if p.isdigit() else 8500)
    update: dict[str, object] = {"search": base.search.model_copy(update=search)}
    if milvus_uri:
        update["milvus"] = base.milvus.model_copy(update={"uri": milvus_uri})
    if mongo_uri:
        update["mongo"] = base.mongo.model_copy(update={"uri": mongo_uri})
    if model_repo:
        update["model_repo"] = model_repo
    auth: dict[str, object] = {"insecure_no_auth": True} if insecure_no_auth else {}
    if auth_mode:
        auth["mode"] = auth_mode
    update["auth"] = base.auth.model_copy(update=auth)
    settings = base.model_copy(update=update)
    s = settings.search
    try:
        check_exposure(s.host, settings.auth)
        app = create_app(settings)
    except AuthStartError as exc:
        raise click.ClickException(str(exc)) from exc
    auth_line: str = settings.auth.mode
    if settings.auth.mode == "keys" and settings.auth.anonymous_scopes:
        auth_line += f", open without a key: {','.join(settings.auth.anonymous_scopes)}"
    click.echo(f"search service on http://{s.host}:{s.port} (config: {s.config_source}; auth: {auth_line})", err=True)
    uvicorn.run(app, host=s.host, port=s.port, log_config=None, access_log=False)
