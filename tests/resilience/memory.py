"""Resident memory of server processes, sampled on a thread: psutil when installed, else /proc/<pid>/status VmRSS.

A process's RSS here is its own plus its children's (milvus-lite and SecantusDB may fork workers), so a service's
figure does not depend on how it is split into processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return kids
    for task in tasks:
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def rss_bytes(pid: int) -> int | None:
    """VmRSS of pid and its descendants in bytes; None when the process is gone."""
    total = 0
    seen = 0
    todo = [pid]
    while todo and seen < 64:  # bounded: a service never has more than a handful of processes
        p = todo.pop()
        seen += 1
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            if p == pid:
                return None
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                break
        todo += _children(p)
    return total


@dataclass
class RssSeries:
    """(seconds since start, bytes) per process name."""

    t0: float = field(default_factory=time.monotonic)
    points: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def window_mean(self, name: str, start: float, end: float) -> float | None:
        values = [b for t, b in self.points.get(name, []) if start <= t < end]
        return sum(values) / len(values) if values else None

    def growth(self, name: str, early: tuple[float, float], late: tuple[float, float]) -> float | None:
        """Relative growth of the mean RSS between two windows (0.05 = +5%)."""
        a, b = self.window_mean(name, *early), self.window_mean(name, *late)
        if a is None or b is None or a == 0:
            return None
        return (b - a) / a

    def summary(self, early: tuple[float, float], late: tuple[float, float]) -> dict[str, dict[str, float | None]]:
        out: dict[str, dict[str, float | None]] = {}
        for name, pts in self.points.items():
            values = [b for _, b in pts]
            a, b = self.window_mean(name, *early), self.window_mean(name, *late)
            g = self.growth(name, early, late)
            out[name] = {
                "samples": float(len(values)),
                "min_mb": round(min(values) / 2**20, 1) if values else None,
                "max_mb": round(max(values) / 2**20, 1) if values else None,
                "early_mean_mb": round(a / 2**20, 1) if a else None,
                "late_mean_mb": round(b / 2**20, 1) if b else None,
                "growth_pct": round(g * 100, 2) if g is not None else None,
            }
        return out


@contextmanager
def sample_rss(pids: Mapping[str, int], *, every: float = 1.0, max_seconds: float = 600.0) -> Iterator[RssSeries]:
    """Sample every `every` seconds until the context ends (or max_seconds, a bound against a stuck test)."""
    series = RssSeries()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set() and time.monotonic() - series.t0 < max_seconds:
            t = time.monotonic() - series.t0
            for name, pid in pids.items():
                rss = rss_bytes(pid)
                if rss is not None:
                    series.points.setdefault(name, []).append((t, rss))
            stop.wait(every)

    thread = threading.Thread(target=loop, name="rss-sampler", daemon=True)
    thread.start()
    try:
        yield series
    finally:
        stop.set()
        thread.join(timeout=every + 5)
