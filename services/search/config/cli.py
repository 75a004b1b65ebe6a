"""`mmsearch config`: show, validate and push the A/B YAML; explain which experiments a user gets."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from mmsearch.settings import Settings, load_settings
from services.search.bucketing import bucket_of
from services.search.config.model import RuntimeConfig
from services.search.errors import ConfigError, DependencyUnavailableError

_file_opt = click.option(
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read this YAML file instead of the Consul key.",
)
_consul_opt = click.option("--consul", "consul_addr", default=None, help="Consul host:port (default from settings).")
_key_opt = click.option("--key", default=None, help="Consul KV key (default search.consul_key).")


def _consul(settings: Settings, addr: str | None):  # type: ignore[no-untyped-def]
    import consul

    s = settings.search
    host, port = s.consul_host, s.consul_port
    if addr:
        h, _, p = addr.rpartition(":")
        host, port = (h or addr), (int(p) if p.isdigit() else 8500)
    return consul.Consul(host=host, port=port, scheme=s.consul_scheme, token=s.consul_token or None)


def _read(settings: Settings, file: Path | None, addr: str | None, key: str | None) -> tuple[str, str]:
    if file is not None:
        return file.read_text(encoding="utf-8"), f"file:{file}"
    k = key or settings.search.consul_key
    try:
        _, data = _consul(settings, addr).kv.get(k)
    except Exception as exc:
        raise click.ClickException(f"cannot read Consul key {k!r}: {type(exc).__name__}: {exc}") from exc
    if not data or data.get("Value") is None:
        raise click.ClickException(f"Consul key {k!r} is empty: push a config with `mmsearch config push FILE`")
    return data["Value"].decode("utf-8"), f"consul:{k}"


def _parse(text: str, origin: str) -> RuntimeConfig:
    from services.search.config.manager import parse_config

    try:
        return parse_config(text, origin)
    except ConfigError as exc:
        raise click.ClickException("invalid config from " + origin + ":\n  - " + "\n  - ".join(exc.problems)) from exc


def _describe(cfg: RuntimeConfig) -> str:
    lines = [f"config {cfg.digest} from {cfg.origin}"]
    for scene in cfg.scenes.values():
        lines.append(
            f"scene {scene.name}" + (f"  [DISABLED: {scene.disabled_reason}]" if scene.disabled_reason else "")
        )
        for layer in scene.layers:
            lines.append(f"  layer {layer.name} ({layer.stage}, bucketizer {layer.bucketizer}, salt {layer.salt!r})")
            for e in layer.experiments:
                lines.append(f"    {e.name}: {e.ratio:g} -> {type(e.args).__name__} {e.args.model_dump(by_alias=True)}")
    lines.extend(f"warning: {w}" for w in cfg.warnings)
    return "\n".join(lines)


@click.group()
def config() -> None:
    """The search service's A/B configuration (scene-config YAML) in Consul or a file."""


@config.command()
@_file_opt
@_consul_opt
@_key_opt
@click.option("--raw", is_flag=True, help="Print the YAML only.")
def show(file: Path | None, consul_addr: str | None, key: str | None, raw: bool) -> None:
    """Print the config in force (Consul key, or --file) and what it resolves to."""
    text, origin = _read(load_settings(), file, consul_addr, key)
    if raw:
        click.echo(text)
        return
    click.echo(_describe(_parse(text, origin)))


@config.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--offline", is_flag=True, help="Check the structure only (no model repository, no Milvus).")
def validate(file: Path, offline: bool) -> None:
    """Validate FILE as the search service would: structure, then models in the repository and Milvus collections."""
    text = file.read_text(encoding="utf-8")
    cfg = _parse(text, f"file:{file}")
    if not offline:
        cfg = asyncio.run(_validate_env(load_settings(), text, f"file:{file}"))
    click.echo(_describe(cfg))
    click.echo("valid")


async def _validate_env(settings: Settings, text: str, origin: str) -> RuntimeConfig:
    from mmsearch.model_repo import ModelRepository
    from services.search.adapters import MilvusVectorStore
    from services.search.config.manager import validate_config

    store = MilvusVectorStore(settings)
    try:
        return await validate_config(text, origin, repo=ModelRepository(settings.model_repo), vectors=store)
    except ConfigError as exc:
        raise click.ClickException("invalid config:\n  - " + "\n  - ".join(exc.problems)) from exc
    except DependencyUnavailableError as exc:
        raise click.ClickException(f"{exc.message} (use --offline to check the structure only)") from exc
    finally:
        store.close()


@config.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_consul_opt
@_key_opt
@click.option("--cas", type=int, default=None, help="Only write if the key's ModifyIndex is this (0: only if absent).")
def push(file: Path, consul_addr: str | None, key: str | None, cas: int | None) -> None:
    """Validate FILE (structure) and write it to the Consul key; running services apply it within about a second."""
    settings = load_settings()
    text = file.read_text(encoding="utf-8")
    cfg = _parse(text, f"file:{file}")
    k = key or settings.search.consul_key
    try:
        ok = _consul(settings, consul_addr).kv.put(k, text, cas=cas)
    except Exception as exc:
        raise click.ClickException(f"cannot write Consul key {k!r}: {type(exc).__name__}: {exc}") from exc
    if not ok:
        raise click.ClickException(f"Consul refused the write to {k!r} (check-and-set index {cas} is stale)")
    click.echo(f"pushed config {cfg.digest} to {k}")


@config.command()
@click.option("--user-id", "user_id", required=True, help="The user id as sent in /qa/user/{user_id}.")
@_file_opt
@_consul_opt
@_key_opt
def explain(user_id: str, file: Path | None, consul_addr: str | None, key: str | None) -> None:
    """Which bucket and experiment USER gets in every layer of every scene."""
    text, origin = _read(load_settings(), file, consul_addr, key)
    cfg = _parse(text, origin)
    out = [f"user {user_id!r}, config {cfg.digest} from {origin}"]
    for scene in cfg.scenes.values():
        out.append(f"scene {scene.name}")
        for layer in scene.layers:
            if layer.bucketizer == "random":
                out.append(f"  {layer.name}: random per request ({', '.join(e.name for e in layer.experiments)})")
                continue
            b = bucket_of(user_id, layer.salt)
            idx = next(i for i, bound in enumerate(layer.bounds) if b < bound)
            out.append(f"  {layer.name}: bucket {b} -> {layer.experiments[idx].name}")
    click.echo("\n".join(out))


if __name__ == "__main__":  # pragma: no cover
    config(sys.argv[1:])
