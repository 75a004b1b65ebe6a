"""`mmsearch ab report`: per layer and experiment of a scene, what users did with what they were shown."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import click

from mmsearch.experiments_api import (
    ExperimentsUnavailableError,
    api_key_file_option,
    api_key_headers,
    get_experiments,
)
from mmsearch.files import write_text_atomic
from mmsearch.outcomes_schema import EVENTS, EXPOSURES
from mmsearch.settings import LOOPBACK, SEARCH_PORT, load_settings
from offline.ab.report import LayerPlan, build_report

_SPAN = re.compile(r"^(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """ "7d", "12h", "30m" before now, or an ISO date / date-time (UTC unless it says otherwise)."""
    m = _SPAN.match(text.strip())
    if m:
        return now - dt.timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: give a span like 7d, 12h, 30m or a date like 2026-11-01") from exc
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _overview(search_url: str, config: Path | None, headers: dict[str, str]) -> dict[str, Any]:
    if config is not None:
        from services.search.config.manager import parse_config
        from services.search.errors import ConfigError

        try:
            return parse_config(config.read_text(encoding="utf-8"), f"file:{config}").overview()
        except ConfigError as exc:
            raise click.ClickException(f"invalid config {config}:\n  - " + "\n  - ".join(exc.problems)) from exc
    try:
        return get_experiments(search_url, headers=headers)
    except ExperimentsUnavailableError as exc:
        hint = (
            "" if exc.reachable else ": start it, pass --search-url, or read them from the A/B YAML with --config FILE"
        )
        raise click.ClickException(f"configured ratios: {exc}{hint}") from exc


def _plan(overview: dict[str, Any], scene: str) -> dict[str, LayerPlan]:
    scenes = overview["scenes"]
    if scene not in scenes:
        raise click.ClickException(f"unknown scene {scene!r}; the config has {', '.join(sorted(scenes))}")
    s = scenes[scene]
    bucketizers = s.get("bucketizers", {})
    return {
        layer: LayerPlan(dict(exps), per_request=bucketizers.get(layer) == "random")
        for layer, exps in s["layers"].items()
    }


@click.group()
def ab() -> None:
    """Online outcomes of the A/B experiments (exposures and feedback in MongoDB)."""


@ab.command()
@click.option("--scene", required=True, help="Scene of the A/B config, e.g. questionAnswer.")
@click.option("--since", default="7d", show_default=True, help="Window start: 7d, 12h, 30m, or an ISO date.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "html"]), default="table", show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write here (html needs it)."
)
@click.option(
    "--search-url",
    default=f"http://{LOOPBACK}:{SEARCH_PORT}",
    show_default=True,
    help="Running search service whose GET /experiments gives the configured ratios (for the SRM check).",
)
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read the ratios from this A/B YAML instead of the running service.",
)
@click.option("--mongo-uri", default=None, help="MongoDB holding exposures and events (default: settings mongo.uri).")
@click.option("--database", default=None, help="Its database (default: settings mongo.database).")
@api_key_file_option()
def report(  # noqa: PLR0917 - click passes options as parameters
    scene: str,
    since: str,
    fmt: str,
    out: Path | None,
    search_url: str,
    config: Path | None,
    mongo_uri: str | None,
    database: str | None,
    api_key_file: Path | None,
) -> None:
    """Users, exposures, clicks and CTR (95% Wilson interval) per layer and experiment of SCENE, the difference
    to each layer's first experiment (Newcombe 95% interval), the MRR of the first click, and a sample-ratio
    mismatch check of the split (flagged at p < 0.001). Requests that pinned a layer with useDebug are left out."""
    if fmt == "html" and out is None:
        raise click.UsageError("--format html writes a page: give --out FILE")
    now = dt.datetime.now(dt.UTC)
    start = parse_since(since, now)
    plan = _plan(_overview(search_url, config, api_key_headers(api_key_file)), scene)
    result = _collect(scene, start, now, plan, mongo_uri=mongo_uri, database=database)
    text = {"table": table_text, "json": json_text, "html": html_text}[fmt](result)
    if out is None:
        click.echo(text)
    else:
        write_text_atomic(out, text + ("" if text.endswith("\n") else "\n"))
        click.echo(f"wrote {out} ({result['requests']} searches)", err=True)


def _collect(
    scene: str,
    since: dt.datetime,
    until: dt.datetime,
    plan: dict[str, LayerPlan],
    *,
    mongo_uri: str | None,
    database: str | None,
) -> dict[str, Any]:
    from pymongo.errors import PyMongoError
    from tqdm import tqdm

    from mmsearch.stores import mongo_client

    settings = load_settings().mongo
    if mongo_uri:
        settings = settings.model_copy(update={"uri": mongo_uri})
    client = mongo_client(settings, appname="mmsearch-ab-report")
    db = client[database or settings.database]
    window = {"scene": scene, "time": {"$gte": since, "$lte": until}}
    try:
        events = list(db[EVENTS].find(window, {"_id": 0, "requestId": 1, "event": 1, "time": 1, "position": 1}))
        cursor = db[EXPOSURES].find(
            window, {"_id": 0, "requestId": 1, "userId": 1, "experiments": 1, "pinned": 1}, batch_size=5000
        )
        exposures = tqdm(cursor, desc="exposures", unit=" searches", disable=None, leave=False)
        return build_report(scene, exposures, events, plan, since=since, until=until)
    except PyMongoError as exc:
        raise click.ClickException(f"cannot read the outcomes from MongoDB at {settings.uri}: {exc}") from exc
    finally:
        client.close()


def table_text(result: dict[str, Any]) -> str:
    from offline.ab.render import table

    return table(result)


def json_text(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2)


def html_text(result: dict[str, Any]) -> str:
    from offline.ab.render import html_page

    return html_page(result)
