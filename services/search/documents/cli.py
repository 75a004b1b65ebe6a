"""`mmsearch documents put|get|delete|import`: change a corpus's documents through a running search service's
documents API (scope `documents`), one document or a jsonl file in batches."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
from tqdm import tqdm

from mmsearch.experiments_api import api_key_file_option, api_key_headers
from mmsearch.settings import LOOPBACK, SEARCH_PORT

TIMEOUT = httpx.Timeout(120.0, connect=5.0)  # a batch with wait=true answers once every write is searchable


class Api:
    def __init__(self, search_url: str, api_key_file: Path | None) -> None:
        self.http = httpx.Client(
            base_url=search_url.rstrip("/"), headers=api_key_headers(api_key_file), timeout=TIMEOUT
        )
        self.search_url = search_url

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise click.ClickException(
                f"cannot reach the search service at {self.search_url} ({exc}): start it, or pass --search-url"
            ) from exc

    def close(self) -> None:
        self.http.close()


def _fail_unless_ok(reply: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = reply.json() if reply.headers.get("content-type", "").startswith("application/json") else {}
    if reply.status_code >= 400:
        raise click.ClickException(f"{reply.status_code} {body.get('error', '')}: {body.get('message', reply.text)}")
    return body


def _common(command: Any) -> Any:
    command = click.option(
        "--search-url", default=f"http://{LOOPBACK}:{SEARCH_PORT}", show_default=True, help="The search service."
    )(command)
    return api_key_file_option("documents")(command)


@click.group()
def documents() -> None:
    """Add, change and delete documents of a corpus while the search service serves it.

    Writes go through the service's documents API: each is checked and encoded as `mmsearch ingest` would, made
    durable in MongoDB's change journal, and (without --no-wait) answered once search finds it. A --version (an
    integer you own) refuses older writes and makes retries safe.
    """


@documents.command("put")
@click.argument("corpus")
@click.argument("doc_id")
@click.option(
    "--json",
    "text",
    default=None,
    help='The document\'s fields as JSON, e.g. \'{"question": "...", "answer": "..."}\'.',
)
@click.option(
    "--file", "path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="The fields from a JSON file."
)
@click.option("--version", type=click.IntRange(0), default=None, help="The document's version (older ones: refused).")
@click.option("--no-wait", is_flag=True, help="Answer once accepted (202), not once searchable.")
@_common
def put_command(  # noqa: PLR0917 - click options
    corpus: str,
    doc_id: str,
    text: str | None,
    path: Path | None,
    version: int | None,
    no_wait: bool,
    search_url: str,
    api_key_file: Path | None,
) -> None:
    """Add or replace document DOC_ID of CORPUS."""
    if (text is None) == (path is None):
        raise click.UsageError("give the document with exactly one of --json or --file")
    try:
        body = json.loads(text if text is not None else path.read_text(encoding="utf-8"))  # type: ignore[union-attr]
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"the document is not readable JSON: {exc}") from exc
    api = Api(search_url, api_key_file)
    try:
        params = {"wait": str(not no_wait).lower(), **({"version": str(version)} if version is not None else {})}
        click.echo(
            json.dumps(
                _fail_unless_ok(api.call("PUT", f"/corpora/{corpus}/documents/{doc_id}", json=body, params=params))
            )
        )
    finally:
        api.close()


@documents.command("get")
@click.argument("corpus")
@click.argument("doc_id")
@_common
def get_command(corpus: str, doc_id: str, search_url: str, api_key_file: Path | None) -> None:
    """Show document DOC_ID of CORPUS: its fields, version and whether search finds it yet."""
    api = Api(search_url, api_key_file)
    try:
        click.echo(json.dumps(_fail_unless_ok(api.call("GET", f"/corpora/{corpus}/documents/{doc_id}")), indent=2))
    finally:
        api.close()


@documents.command("delete")
@click.argument("corpus")
@click.argument("doc_id")
@click.option("--version", type=click.IntRange(0), default=None, help="The document's version (older ones: refused).")
@click.option("--no-wait", is_flag=True, help="Answer once accepted (202), not once search no longer finds it.")
@_common
def delete_command(  # noqa: PLR0917 - click options
    corpus: str, doc_id: str, version: int | None, no_wait: bool, search_url: str, api_key_file: Path | None
) -> None:
    """Delete document DOC_ID of CORPUS (it stays deleted)."""
    api = Api(search_url, api_key_file)
    try:
        params = {"wait": str(not no_wait).lower(), **({"version": str(version)} if version is not None else {})}
        click.echo(
            json.dumps(_fail_unless_ok(api.call("DELETE", f"/corpora/{corpus}/documents/{doc_id}", params=params)))
        )
    finally:
        api.close()


def _items(path: Path, failures: Counter[str], examples: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Batch items from a jsonl file of ingest rows ({"id": ..., fields...}, an optional "version")."""
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or "id" not in row:
                    raise ValueError("not an object with an id")
            except ValueError as exc:
                failures["malformed line"] += 1
                examples.setdefault("malformed line", f"line {n}: {exc}")
                continue
            fields = {k: v for k, v in row.items() if k not in ("id", "version")}
            item: dict[str, Any] = {"op": "upsert", "id": str(row["id"]), "document": fields}
            if row.get("version") is not None:
                item["version"] = row["version"]
            yield item


@documents.command("import")
@click.argument("corpus")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True, help="Documents per request.")
@click.option("--no-wait", is_flag=True, help="Send on once each batch is accepted, not once it is searchable.")
@_common
def import_command(  # noqa: PLR0917 - click options
    corpus: str, path: Path, batch_size: int, no_wait: bool, search_url: str, api_key_file: Path | None
) -> None:
    """Add or replace every document of a jsonl file (rows as `mmsearch ingest` reads them) in CORPUS.

    Prints a summary with the failures counted by reason; exits 1 when any document failed.
    """
    api = Api(search_url, api_key_file)
    failures: Counter[str] = Counter()
    examples: dict[str, str] = {}
    done = Counter[str]()
    total = sum(1 for line in path.open(encoding="utf-8") if line.strip())
    bar = tqdm(total=total, desc=f"import {corpus}", unit="doc")
    try:
        batch: list[dict[str, Any]] = []
        for item in [*_items(path, failures, examples), None]:
            if item is not None:
                batch.append(item)
                if len(batch) < batch_size:
                    continue
            if batch:
                _send(api, corpus, batch, no_wait, done, failures, examples)
                bar.update(len(batch))
                batch = []
        bar.update(total - bar.n)
    finally:
        bar.close()
        api.close()
    click.echo(
        f"{corpus}: {done['applied']} applied, {done['pending']} accepted and pending, {sum(failures.values())} failed"
    )
    for reason, count in failures.most_common():
        click.echo(f"  {count} x {reason}: e.g. {examples[reason]}")
    if failures:
        raise SystemExit(1)


def _send(  # noqa: PLR0917 - one batch's bookkeeping
    api: Api,
    corpus: str,
    batch: list[dict[str, Any]],
    no_wait: bool,
    done: Counter[str],
    failures: Counter[str],
    examples: dict[str, str],
) -> None:
    reply = api.call(
        "POST", f"/corpora/{corpus}/documents:batch", json={"items": batch}, params={"wait": str(not no_wait).lower()}
    )
    if reply.status_code in (401, 403, 404):
        _fail_unless_ok(reply)  # a wrong key or corpus: nothing of the file can go in, stop here
    if reply.status_code not in (200, 202, 207):  # the batch as a whole was refused (e.g. 503: nothing written)
        error = reply.json() if reply.headers.get("content-type", "").startswith("application/json") else {}
        reason = str(error.get("error", reply.status_code))
        failures[reason] += len(batch)
        examples.setdefault(reason, str(error.get("message", reply.text))[:300])
        return
    for item in reply.json()["items"]:
        if item["status"] == 200:
            done["applied"] += 1
        elif item["status"] == 202:
            done["pending"] += 1
        else:
            reason = item.get("error", str(item["status"]))
            failures[reason] += 1
            examples.setdefault(reason, f"id {item['id']}: {item.get('message', '')}"[:300])
