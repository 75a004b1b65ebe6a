"""`mmsearch keys generate | create | list | revoke | rotate`: the search service's API keys in MongoDB.

A new key's secret is printed once, alone on standard output (so `KEY=$(mmsearch keys create ...)` works), or
written to a file readable by its owner only (--out); MongoDB keeps only a salted hash of it. Every other line goes
to standard error.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import click

from mmsearch.api_keys import ApiKey, KeyFormatError
from mmsearch.files import write_text_atomic
from mmsearch.settings import SCOPES, MongoSettings, load_settings, mongo_settings
from services.search.auth import key_store
from services.search.auth.keys import ALL_CORPORA, KeyRecord, parse_duration, parse_scopes


class _Keys:
    """The keys collection for one command, its client closed afterwards."""

    def __init__(self, ctx: click.Context) -> None:
        from mmsearch.stores import mongo_client

        settings: MongoSettings = ctx.obj["mongo"]
        self.client = mongo_client(settings, appname="mmsearch-keys")
        self.coll = self.client[settings.database][load_settings().auth.collection]

    def __enter__(self) -> Any:
        from pymongo.errors import PyMongoError

        try:
            key_store.ensure_indexes(self.coll)
        except PyMongoError as exc:
            self.client.close()
            raise click.ClickException(f"MongoDB cannot be reached ({type(exc).__name__}): {exc}") from exc
        return self.coll

    def __exit__(self, *exc: object) -> None:
        self.client.close()


@click.group("keys")
@click.option("--mongo-uri", default=None, help="MongoDB URI (env MMSEARCH_MONGO__URI).")
@click.option("--database", default=None, help="MongoDB database (env MMSEARCH_MONGO__DATABASE, default mmsearch).")
@click.pass_context
def keys(ctx: click.Context, mongo_uri: str | None, database: str | None) -> None:
    """API keys of the search service: `Authorization: Bearer mms_<key id>_<secret>` (or `X-API-Key:`).

    \b
    Scopes: search (search routes, /experiments), feedback (POST /feedback), documents (writes), metrics
    (/metrics), admin (every scope, and /ready's details). --corpora limits a key to corpora (comma-separated
    shell patterns such as 'faq_*'). A running service sees a revocation or rotation within
    auth.key_cache_seconds (5 s by default).
    """
    ctx.obj = {"mongo": mongo_settings(mongo_uri, database)}


_out_option = click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the new key to this file (mode 600) instead of printing it.",
)


@keys.command("generate")
def generate() -> None:
    """Print a new key and store nothing (for a bootstrap key in a secret, or `create --from-file`)."""
    click.echo(str(ApiKey.generate()))


def _read_key_file(path: Path) -> ApiKey:
    try:
        return ApiKey.parse(path.read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from exc
    except KeyFormatError as exc:
        raise click.ClickException(f"{path} holds {exc}") from exc


@keys.command("create")
@click.option("--name", required=True, help="Who or what the key is for (shown by `keys list`).")
@click.option("--scopes", required=True, help=f"Comma-separated: {', '.join(SCOPES)}.")
@click.option("--corpora", default=ALL_CORPORA, show_default=True, help="Corpora the key may reach: shell patterns.")
@click.option("--expires", default=None, help="Lifetime such as 90d, 12h or 30m (default: never).")
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), default=None, help="Requests/s (default auth.default_rate)."
)
@click.option("--burst", type=click.IntRange(min=1), default=None, help="Burst (default auth.default_burst).")
@click.option(
    "--from-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Store this key (made with `keys generate`, e.g. a deployment's secret) instead of a new one.",
)
@_out_option
@click.option("--if-missing", is_flag=True, help="With --from-file: a key already stored with that id is kept as is.")
@click.pass_context
def create(  # noqa: PLR0917 - one parameter per flag
    ctx: click.Context,
    name: str,
    scopes: str,
    corpora: str,
    expires: str | None,
    rate: float | None,
    burst: int | None,
    from_file: Path | None,
    out: Path | None,
    if_missing: bool,
) -> None:
    """Create a key and print it once (MongoDB keeps only a salted hash of its secret)."""
    from pymongo.errors import DuplicateKeyError

    try:
        scope_list = parse_scopes(scopes)
        lifetime = parse_duration(expires) if expires else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if if_missing and from_file is None:
        raise click.UsageError("--if-missing goes with --from-file")
    key = _read_key_file(from_file) if from_file is not None else ApiKey.generate()
    now = key_store.now()
    record = KeyRecord.issue(
        key,
        name=name,
        scopes=scope_list,
        now=now,
        corpora=corpora,
        expires_at=now + lifetime if lifetime else None,
        rate=rate,
        burst=burst,
    )
    with _Keys(ctx) as coll:
        try:
            key_store.insert(coll, record)
        except DuplicateKeyError as exc:
            if if_missing:
                stored = key_store.find(coll, key.key_id)
                state = stored.state(now) if stored else "unknown"
                click.echo(f"key {key.key_id} is already stored ({state}); kept as is", err=True)
                return
            raise click.ClickException(f"a key with id {key.key_id} is already stored") from exc
    what = f"key {key.key_id} ({name}): scopes {','.join(scope_list)}, corpora {corpora}"
    if record.expires_at:
        what += f", expires {record.expires_at:%Y-%m-%d %H:%M} UTC"
    if from_file is not None:
        click.echo(f"stored {what} from {from_file}", err=True)
    elif out is not None:
        write_text_atomic(out, f"{key}\n", private=True)
        click.echo(f"created {what}; the key is in {out} (mode 600)", err=True)
    else:
        click.echo(f"created {what}. This is the only time the key is shown:", err=True)
        click.echo(str(key))


def _row(record: KeyRecord, now: dt.datetime) -> dict[str, Any]:
    def when(t: dt.datetime | None) -> str | None:
        return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None

    rotating = [s for s in record.secrets if s.expires_at is not None and s.expires_at > now]
    return {
        "id": record.key_id,
        "name": record.name,
        "scopes": list(record.scopes),
        "corpora": record.corpora,
        "state": record.state(now),
        "created": when(record.created_at),
        "expires": when(record.expires_at),
        "revoked": when(record.revoked_at),
        "lastUsed": when(record.last_used_at),
        "rate": record.rate,
        "burst": record.burst,
        # An old secret still accepted after a rotation, and until when.
        "oldSecretUntil": when(max(s.expires_at for s in rotating if s.expires_at)) if rotating else None,
    }


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
@click.pass_context
def list_keys(ctx: click.Context, as_json: bool) -> None:
    """Every key with its scopes, state and last use (never a secret)."""
    now = key_store.now()
    with _Keys(ctx) as coll:
        rows = [_row(r, now) for r in key_store.list_all(coll)]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("no keys (create one with `mmsearch keys create --name N --scopes search`)", err=True)
        return
    header = f"{'id':<16}  {'name':<20} {'scopes':<26} {'corpora':<12} {'state':<8} {'expires':<20} last used"
    click.echo(header)
    for r in rows:
        state = r["state"] + ("*" if r["oldSecretUntil"] else "")
        click.echo(
            f"{r['id']:<16}  {r['name'][:20]:<20} {','.join(r['scopes'])[:26]:<26} {r['corpora'][:12]:<12} "
            f"{state:<8} {r['expires'] or 'never':<20} {r['lastUsed'] or '-'}"
        )
    if any(r["oldSecretUntil"] for r in rows):
        click.echo("* rotated: the old secret is accepted until its grace period ends (--json: oldSecretUntil)")


def _key_id(text: str) -> str:
    """A key id, or a whole key given by mistake (only its id is used, and nothing of it is printed)."""
    try:
        return ApiKey.parse(text).key_id
    except KeyFormatError:
        return text.strip()


@keys.command("revoke")
@click.argument("key_id")
@click.pass_context
def revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key: refused by every search service within auth.key_cache_seconds."""
    kid = _key_id(key_id)
    with _Keys(ctx) as coll:
        try:
            record = key_store.revoke(coll, kid, key_store.now())
        except key_store.KeyNotFoundError as exc:
            raise click.ClickException(f"no key {kid} (see `mmsearch keys list`)") from exc
    cache = load_settings().auth.key_cache_seconds
    click.echo(f"revoked key {kid} ({record.name}); running services refuse it within {cache:g} s", err=True)


@keys.command("rotate")
@click.argument("key_id")
@click.option(
    "--grace",
    default="24h",
    show_default=True,
    help="How long the old secret keeps working, so clients move to the new one without a failed request.",
)
@_out_option
@click.pass_context
def rotate(ctx: click.Context, key_id: str, grace: str, out: Path | None) -> None:
    """Give a key a new secret (same id, scopes and limits); print it once."""
    try:
        grace_period = parse_duration(grace)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--grace") from exc
    kid = _key_id(key_id)
    now = key_store.now()
    with _Keys(ctx) as coll:
        try:
            new, record = key_store.rotate(coll, kid, grace_period, now)
        except key_store.KeyNotFoundError as exc:
            raise click.ClickException(f"no key {kid} (see `mmsearch keys list`)") from exc
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from exc
    if record.revoked_at is not None:
        click.echo(f"note: key {kid} is revoked; its new secret is refused too", err=True)
    until = now + grace_period
    what = f"rotated key {kid} ({record.name}); the old secret works until {until:%Y-%m-%d %H:%M} UTC"
    if out is not None:
        write_text_atomic(out, f"{new}\n", private=True)
        click.echo(f"{what}; the new key is in {out} (mode 600)", err=True)
    else:
        click.echo(f"{what}. This is the only time the new key is shown:", err=True)
        click.echo(str(new))
