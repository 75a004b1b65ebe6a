"""A SparkContext for an offline job, with every bad setup turned into an error that says what to fix, and the
one way the jobs run work on executors (`run_on_executors`): a progress bar, and a failed partition named."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from tqdm import tqdm

from mmsearch.settings import LOOPBACK, SparkSettings
from offline.errors import OfflineError

if TYPE_CHECKING:
    from pyspark import SparkContext

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
MIN_JAVA = 17
# What an executor raises: the driver finds this text inside Spark's wrapped error and shows only the message.
_MARK, _END = "[mmsearch-partition]", "[/mmsearch-partition]"


class SparkSetupError(OfflineError):
    """Spark cannot start as configured (no pyspark, no Java, unreachable master)."""


class PartitionError(OfflineError):
    """A partition of a Spark job failed; the message names it and its rows."""


def partition_failure(message: str) -> RuntimeError:
    """The exception an executor raises for a failed unit of work (its message reaches the driver whole)."""
    return RuntimeError(f"{_MARK}{message}{_END}")


def is_partition_failure(exc: BaseException) -> bool:
    return _MARK in str(exc)


def _failure_message(exc: BaseException) -> str | None:
    found = re.findall(re.escape(_MARK) + r"(.*?)" + re.escape(_END), str(exc), flags=re.S)
    return found[-1] if found else None


def _java_version(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise SparkSetupError(f"cannot tell the version of {java} (`java -version` said: {out.strip()[:200]})")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8" is Java 8


def check_java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).is_file():
        where = f"JAVA_HOME={home} has no bin/java" if home else "no `java` on PATH"
        raise SparkSetupError(
            f"the spark engine needs a Java {MIN_JAVA}+ runtime ({where}): install one (Debian: apt-get install "
            "openjdk-17-jre-headless) or set JAVA_HOME"
        )
    version = _java_version(java)
    if version < MIN_JAVA:
        raise SparkSetupError(f"{java} is Java {version}; Spark 4 needs Java {MIN_JAVA} or newer (set JAVA_HOME)")
    return java


def _endpoints(master: str) -> list[tuple[str, int]]:
    """Host and port of each master a URL names (spark://a:7077,b:7077; k8s://https://api:443)."""
    if master.startswith("spark://"):
        hosts = master.removeprefix("spark://").split(",")
        return [(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1]) if ":" in h else 7077) for h in hosts]
    if master.startswith("k8s://"):
        url = urlsplit(master.removeprefix("k8s://"))
        return [(url.hostname or "", url.port or (443 if url.scheme != "http" else 80))]
    if re.fullmatch(r"local(\[(\*|\d+)(,\d+)?\])?", master):
        return []
    raise SparkSetupError(f"unknown Spark master {master!r}: use local[N], spark://host:7077 or k8s://https://host:443")


def check_master(master: str, timeout: float = 5.0) -> None:
    for host, port in _endpoints(master):
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            raise SparkSetupError(f"cannot reach the Spark master {master} ({host}:{port}: {exc})") from exc


def _conf(settings: SparkSettings, app: str, python: str) -> dict[str, str]:
    conf = {
        "spark.master": settings.master,
        "spark.app.name": app,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",  # our own bar counts finished shards
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": sys.executable,
        "spark.python.worker.reuse": "true",  # an executor's Python worker keeps its loaded model between tasks
    }
    if settings.master.startswith("local"):
        conf |= {"spark.driver.host": LOOPBACK, "spark.driver.bindAddress": LOOPBACK}
    return conf | settings.conf


@contextmanager
def spark_context(settings: SparkSettings, app: str) -> Iterator[SparkContext]:
    """A SparkContext for one job, stopped when the job ends (also on Ctrl-C)."""
    try:
        from pyspark import SparkConf, SparkContext
    except ImportError:
        raise SparkSetupError("the spark engine needs pyspark: pip install 'mmsearch[spark]'") from None
    check_java()
    check_master(settings.master)
    python = settings.python or sys.executable
    # Executors must run the project's interpreter (its onnxruntime, tokenizers and mmsearch); the gateway reads
    # PYSPARK_PYTHON when it starts, the conf covers cluster workers.
    os.environ["PYSPARK_PYTHON"] = python
    if settings.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)  # block manager and shuffle bind loopback only
    conf = SparkConf(loadDefaults=True)
    for key, value in _conf(settings, app, python).items():
        conf.set(key, value)
    try:
        sc = SparkContext(conf=conf)
    except Exception as exc:  # the JVM gateway or the master refused: the reason is the last line
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise SparkSetupError(f"Spark did not start with master {settings.master}: {reason}") from exc
    sc.setLogLevel("ERROR")
    log.info("spark: master %s, default parallelism %d, executors run %s", sc.master, sc.defaultParallelism, python)
    try:
        yield sc
    finally:
        sc.stop()


def partition_count(requested: int, items: int) -> int:
    """Spark partitions for `items` work items: `requested` (0: one per item), never more than there are items."""
    return min(requested or items, items)


def run_on_executors(
    sc: SparkContext,
    items: Sequence[T],
    work: Callable[[T], R],
    *,
    partitions: int,
    desc: str,
    progress: bool | None = None,
) -> list[R]:
    """`work` on every item, on the executors, results in item order. `partitions` 0: one per item.

    A failure raised with `partition_failure` comes back as a PartitionError with the executor's message."""
    if not items:
        return []
    slices = partition_count(partitions, len(items))
    group = f"mmsearch-{uuid.uuid4().hex[:12]}"
    sc.setJobGroup(group, desc, interruptOnCancel=True)
    stop = threading.Event()
    bar = tqdm(total=slices, desc=desc, unit="partition", disable=progress is False)
    watcher = threading.Thread(target=_watch, args=(sc, group, bar, stop), name="spark-progress", daemon=True)
    watcher.start()
    try:
        results: list[R] = sc.parallelize(list(items), slices).map(work).collect()
        bar.update(slices - bar.n)
        return results
    except Exception as exc:
        message = _failure_message(exc)
        if message is None:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            message = f"the Spark job failed: {lines[-1] if lines else type(exc).__name__}"
        raise PartitionError(message) from exc
    finally:
        stop.set()
        watcher.join(timeout=5)
        bar.close()


def _watch(sc: Any, group: str, bar: tqdm[Any], stop: threading.Event) -> None:
    """Moves the bar of finished partitions, read from Spark's status tracker (Spark's own console bar is off)."""
    total = bar.total or 0
    try:
        tracker = sc.statusTracker()
        while not stop.wait(0.5):
            done = 0
            for job in tracker.getJobIdsForGroup(group):
                info = tracker.getJobInfo(job)
                for stage in info.stageIds if info else []:
                    stage_info = tracker.getStageInfo(stage)
                    done += stage_info.numCompletedTasks if stage_info else 0
            bar.update(max(0, min(done, total) - bar.n))
    except Exception as exc:  # noqa: BLE001 - the bar is cosmetic; a stopped context must not fail the job
        log.debug("spark progress: %s", exc)
