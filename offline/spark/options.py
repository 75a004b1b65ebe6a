"""The engine flags that `mmsearch index` and `mmsearch ingest` share."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

import click

from mmsearch.settings import SparkSettings, load_settings


class Engine(StrEnum):
    SEQUENTIAL = "sequential"  # one process on this machine
    SPARK = "spark"  # encoding and store writes on Spark executors


def spark_settings(master: str | None, partitions: int | None, conf: tuple[str, ...] = ()) -> SparkSettings:
    """Flags over environment (MMSEARCH_SPARK__MASTER, __PARTITIONS, __CONF) over defaults."""
    base = load_settings().spark
    extra = dict(base.conf)
    for item in conf:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--spark-conf")
        extra[key.strip()] = value.strip()
    update: dict[str, Any] = {"conf": extra}
    if master is not None:
        update["master"] = master
    if partitions is not None:
        update["partitions"] = partitions
    return base.model_copy(update=update)


def engine_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--engine",
            type=click.Choice([e.value for e in Engine]),
            default=Engine.SEQUENTIAL.value,
            show_default=True,
            help="sequential: this process. spark: shards are encoded (and their documents written) on Spark "
            "executors, then the Milvus collection is filled from them; needs `pip install mmsearch[spark]`, "
            "Java 17, and the model repository, the work folder and the image files on a filesystem every "
            "executor sees at the same path.",
        ),
        click.option(
            "--spark-master",
            default=None,
            help="local[N], spark://host:7077 or k8s://https://host:443 (default: settings spark.master, env "
            "MMSEARCH_SPARK__MASTER, else local[*]).",
        ),
        click.option(
            "--partitions",
            type=click.IntRange(min=1),
            default=None,
            help="Spark partitions the shards are spread over (default: one per shard; --shard-size sets how many "
            "rows a shard holds, and so the unit of resuming).",
        ),
        click.option(
            "--spark-conf",
            multiple=True,
            metavar="KEY=VALUE",
            help="A Spark property, repeatable (e.g. spark.executor.memory=4g; env MMSEARCH_SPARK__CONF as JSON).",
        ),
        click.option(
            "--ship-models",
            is_flag=True,
            help="Send the model's folder to the executors with the job, for clusters without a shared model "
            "repository.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func
