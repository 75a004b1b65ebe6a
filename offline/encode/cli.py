"""`mmsearch index`: encode a normalised corpus into resumable vector shards."""

from __future__ import annotations

from pathlib import Path

import click

from mmsearch.model_repo import ModelRepository
from mmsearch.settings import load_settings
from offline.encode.pipeline import encode_corpus
from offline.errors import reported
from offline.spark.jobs import encode_corpus_spark
from offline.spark.options import Engine, engine_options, spark_settings
from offline.spark.session import spark_context


@click.command("index")
@click.option(
    "--input",
    "-i",
    "input_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Normalised corpus jsonl (from `mmsearch preprocess`).",
)
@click.option("--model", "model_key", required=True, help="Model key in the model repository (e.g. minilm).")
@click.option(
    "--field",
    required=True,
    help="Row field to encode: question (text models) or image (image models, the row's local path).",
)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the shards and vectors.json.",
)
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model repository root (default: settings model_repo, env MMSEARCH_MODEL_REPO).",
)
@click.option("--batch-size", default=32, show_default=True, help="Rows per ONNX Runtime call.")
@click.option("--shard-size", default=10_000, show_default=True, help="Rows per shard file (the unit of resuming).")
@click.option("--restart", is_flag=True, help="Discard vectors of a different model/input in --output and start over.")
@click.option(
    "--providers",
    default="auto",
    show_default=True,
    help="ONNX Runtime providers, comma-separated: auto (CUDA if present, else CPU), CPUExecutionProvider...",
)
@engine_options
def index(
    *,
    input_path: Path,
    model_key: str,
    field: str,
    output: Path,
    repo: Path | None,
    batch_size: int,
    shard_size: int,
    restart: bool,
    providers: str,
    engine: str,
    spark_master: str | None,
    partitions: int | None,
    spark_conf: tuple[str, ...],
    ship_models: bool,
) -> None:
    """Encode FIELD of every row of a corpus into L2-normalised vector shards.

    Each shard is written atomically and recorded in OUTPUT/vectors.json with the model key, dimension, field
    and the input's sha256. Interrupted? Run the same command again: it continues from the last complete
    shard. A different model or input in OUTPUT is refused unless --restart.
    """
    root = repo or load_settings().model_repo
    spark = spark_settings(spark_master, partitions, spark_conf)
    try:
        with reported():
            if Engine(engine) is Engine.SPARK:
                with spark_context(spark, app=f"mmsearch index {output}") as sc:
                    text = encode_corpus_spark(
                        input_path,
                        ModelRepository(root),
                        model_key,
                        field,
                        output,
                        sc=sc,
                        spark=spark,
                        batch_size=batch_size,
                        shard_size=shard_size,
                        restart=restart,
                        ship_models=ship_models,
                    ).text()
            else:
                text = encode_corpus(
                    input_path,
                    ModelRepository(root),
                    model_key,
                    field,
                    output,
                    batch_size=batch_size,
                    shard_size=shard_size,
                    restart=restart,
                    providers=[p.strip() for p in providers.split(",") if p.strip()],
                ).text()
    except KeyboardInterrupt:
        click.echo(
            f"interrupted: complete shards are kept in {output}; run the same command again to continue", err=True
        )
        raise SystemExit(130) from None
    click.echo(text)
