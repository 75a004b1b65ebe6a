"""`mmsearch serve web`: the web UI under waitress (a production WSGI server), on 127.0.0.1 by default."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from mmsearch.settings import load_settings

log = logging.getLogger(__name__)


@click.command(name="web")
@click.option("--host", default=None, help="Address to bind (env MMSEARCH_WEB__HOST; default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (env MMSEARCH_WEB__PORT; default 8090).")
@click.option(
    "--search-url",
    default=None,
    help="Base URL of the search service (env MMSEARCH_WEB__SEARCH_URL; default http://127.0.0.1:8080).",
)
@click.option(
    "--image-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Serve this photo folder at /images/<name> (env MMSEARCH_WEB__IMAGE_DIR), e.g. the local demo photos.",
)
@click.option("--threads", type=int, default=None, help="Worker threads (env MMSEARCH_WEB__THREADS; default 8).")
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The UI's API key for the search service (env MMSEARCH_WEB__API_KEY_FILE); kept here, never sent to browsers.",
)
def command(  # noqa: PLR0917 - one parameter per click option
    host: str | None,
    port: int | None,
    search_url: str | None,
    image_dir: Path | None,
    threads: int | None,
    api_key_file: Path | None,
) -> None:
    """Serve the search page: question answering, text-to-image and search by image, with a debug panel.

    The page calls this process's /api/ endpoints, which call the search service over HTTP; open
    http://HOST:PORT/ in a browser. Stop with Ctrl-C.
    """
    import waitress

    from web_ui.app import MULTIPART_SLACK_BYTES, ApiKeyError, create_app

    settings = load_settings()
    # One INFO line per proxied request from httpx is noise next to waitress' own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    overrides = {
        key: value
        for key, value in {
            "host": host,
            "port": port,
            "search_url": search_url,
            "image_dir": image_dir,
            "threads": threads,
            "api_key_file": api_key_file,
        }.items()
        if value is not None
    }
    web = settings.web.model_copy(update=overrides)
    settings = settings.model_copy(update={"web": web})
    try:
        app = create_app(settings)
    except ApiKeyError as exc:
        raise click.ClickException(str(exc)) from exc
    log.info("web UI listening on http://%s:%d/ (search service %s)", web.host, web.port, web.search_url)
    waitress.serve(
        app,
        host=web.host,
        port=web.port,
        threads=web.threads,
        # A backstop against huge bodies before they are buffered; uploads a little over the limit still reach
        # the app, which answers them with a JSON 413 the page can show.
        max_request_body_size=2 * (web.max_upload_mb * 1024 * 1024 + MULTIPART_SLACK_BYTES),
        ident="mmsearch-web",
    )
