"""honcho runs the processes: prefixed, coloured output on the terminal and one log file per process.

honcho stops every process when one of them ends or on Ctrl-C / SIGTERM (TERM to each process group, then
KILL after a grace period). Its default grace (5 s) is shorter than SecantusDB's clean shutdown (~4 s on a
busy machine, more with data) plus the gRPC servers' drain, so it is raised here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO, Any

import honcho.manager
from honcho.printer import Printer

from stack.procfile import ProcessSpec

STOP_GRACE_SECONDS = 20


class TeePrinter(Printer):  # type: ignore[misc]  # honcho is untyped
    """honcho's printer, also appending each process's lines to <logs>/<name>.log (honcho's own to honcho.log)."""

    def __init__(self, output: IO[str], logs_dir: Path) -> None:
        super().__init__(output)
        self._logs_dir = logs_dir
        self._files: dict[str, IO[str]] = {}

    def write(self, message: Any) -> None:
        super().write(message)
        name = message.name or "honcho"
        log = self._files.get(name)
        if log is None:
            log = (self._logs_dir / f"{'honcho' if name == 'system' else name}.log").open("a", encoding="utf-8")
            self._files[name] = log
        data = message.data.decode("utf-8", "replace") if isinstance(message.data, bytes) else str(message.data)
        stamp = message.time.strftime("%Y-%m-%d %H:%M:%S")
        for line in data.splitlines():
            log.write(f"{stamp} {line}\n")
        log.flush()

    def close(self) -> None:
        for f in self._files.values():
            f.close()


def run(specs: list[ProcessSpec], *, env: dict[str, str], cwd: Path, logs_dir: Path) -> int:
    """Run the processes under honcho until one ends or we are told to stop; returns honcho's exit code."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    honcho.manager.KILL_WAIT = STOP_GRACE_SECONDS
    printer = TeePrinter(sys.stdout, logs_dir)
    manager = honcho.manager.Manager(printer)
    full_env = {**os.environ, **env}
    for spec in specs:
        manager.add_process(spec.name, spec.command, env=full_env, cwd=str(cwd))
    try:
        manager.loop()
    finally:
        printer.close()
    return int(manager.returncode or 0)
