"""honcho runs the processes: prefixed, coloured output on the terminal and one log file per process.

honcho stops every process when one of them ends or on Ctrl-C / SIGTERM (TERM to each process group, then
KILL after a grace period). Its default grace (5 s) is shorter than SecantusDB's clean shutdown (~4 s on a
busy machine, more with data) plus the gRPC servers' drain, so it is raised here.

A stop must never depend on the terminal. With `scripts/local-up | tee up.log`, Ctrl-C kills `tee` too, and
honcho's "SIGINT received" line then met a broken pipe: the exception broke honcho's loop, the services (each
in its own session, so the terminal's SIGINT never reaches them) kept running, and the supervisor hung joining
its output relays. So the printer stops writing to a terminal or pipe that is gone (the log files still get
every line), each child's PID is recorded under var/local/pids/ as it starts, and whatever ends the loop, every
recorded child is stopped before `run` returns. `mmsearch local down` uses the same records when the supervisor
itself does not answer.

Every stop goes in two steps: the services first, the stores (procfile.STOPPED_LAST) once the services are gone.
Stopped together, MongoDB went away while the search service was still writing its last exposures, and they were
lost ("stopped with 1 exposures not written to MongoDB" after a Ctrl-C right after a search).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import honcho.manager
import honcho.process
from honcho.printer import Printer

from stack.procfile import STOPPED_LAST, ProcessSpec

STOP_GRACE_SECONDS = 20
PIDS_DIR = "pids"


class TeePrinter(Printer):  # type: ignore[misc]  # honcho is untyped
    """honcho's printer, also appending each process's lines to <logs>/<name>.log (honcho's own to honcho.log).

    When the terminal or pipe goes away (tee killed by the same Ctrl-C), output to it stops and standard output
    is pointed at /dev/null, so no later write (honcho's, click's, the interpreter's final flush) can fail.
    """

    def __init__(self, output: IO[str], logs_dir: Path) -> None:
        super().__init__(output)
        self._logs_dir = logs_dir
        self._files: dict[str, IO[str]] = {}
        self.terminal_gone = False

    def write(self, message: Any) -> None:
        if not self.terminal_gone:
            try:
                super().write(message)
            except (OSError, ValueError):  # BrokenPipeError, EIO from a closed terminal, or a closed file
                self.terminal_gone = True
                silence_stdout()
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


def silence_stdout() -> None:
    """Point file descriptors 1 and 2 at /dev/null when they lead to a pipe or terminal that is gone."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


def _recording_popen(pid_file: Path) -> Any:
    """honcho's Popen (a new session per process), writing the child's PID to `pid_file` once it runs."""

    def start(cmd: str, **kwargs: Any) -> honcho.process.Popen:
        child = honcho.process.Popen(cmd, **kwargs)
        tmp = pid_file.with_name(f".{pid_file.name}.tmp")
        tmp.write_text(f"{child.pid}\n", encoding="utf-8")
        tmp.replace(pid_file)
        return child

    return start


def recorded_children(run_dir: Path) -> dict[str, int]:
    """Process name -> PID (also its process group: honcho starts each in a new session) of recorded children."""
    out: dict[str, int] = {}
    folder = run_dir / PIDS_DIR
    if not folder.is_dir():
        return out
    for f in sorted(folder.iterdir()):
        if f.name.startswith("."):
            continue
        with contextlib.suppress(OSError, ValueError):
            out[f.name] = int(f.read_text(encoding="utf-8").strip())
    return out


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs. Zombies do not count: a process that has exited but whose
    parent has not collected it yet (or never will, once reparented) cannot be stopped any further."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():  # no procfs to tell zombies apart: the signal check is all there is
        return True
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(group) == pgid and state != "Z":
                return True
    return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except OSError as exc:
        if exc.errno not in (errno.ESRCH, errno.EPERM):
            raise


def _term_in_stop_order(children: dict[str, int], seconds: float, say: Callable[[str], None] | None = None) -> None:
    """TERM the services (name -> process group), wait until their groups are gone, then TERM the stores and wait
    for them: `seconds` in all. `say` gets a line per step (honcho's system output)."""
    deadline = time.monotonic() + seconds
    services = [n for n in children if n not in STOPPED_LAST]
    stores = [n for n in children if n in STOPPED_LAST]
    for step in (services, stores):
        if not step:
            continue
        if step is stores and services and say:
            say("the services have stopped; stopping the stores\n")
        for name in step:
            if say:
                say(f"sending SIGTERM to {name} (pid {children[name]})\n")
            _signal_group(children[name], signal.SIGTERM)
        while any(group_alive(children[n]) for n in step) and time.monotonic() < deadline:
            time.sleep(0.1)


def stop_children(run_dir: Path, *, grace: float = STOP_GRACE_SECONDS) -> list[str]:
    """TERM every recorded child still running, the stores last; KILL what is left after `grace`; returns the
    names it stopped.

    The records are removed once their process group is gone.
    """
    children = {n: p for n, p in recorded_children(run_dir).items() if group_alive(p)}
    _term_in_stop_order(children, grace)
    for pgid in children.values():
        if group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10  # SIGKILL cannot be refused; this only waits for the kernel
    while any(group_alive(p) for p in children.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for name, pid in recorded_children(run_dir).items():
        if not group_alive(pid):
            (run_dir / PIDS_DIR / name).unlink(missing_ok=True)
    return sorted(children)


class _StoresLastManager(honcho.manager.Manager):  # type: ignore[misc]  # honcho is untyped
    """honcho's manager with its TERM step in stop order: it TERMs the services, waits (within the stop grace) until
    their process groups are gone, then TERMs the stores. honcho's KILL after the grace is unchanged."""

    def _killall(self, force: bool = False) -> None:
        if force:
            super()._killall(force=True)
            return
        running = {n: p["pid"] for n, p in self._processes.items() if "returncode" not in p and p.get("pid")}
        _term_in_stop_order(running, STOP_GRACE_SECONDS, self._system_print)


def run(specs: list[ProcessSpec], *, env: dict[str, str], cwd: Path, logs_dir: Path, run_dir: Path) -> int:
    """Run the processes under honcho until one ends or we are told to stop; returns honcho's exit code.

    Every child is gone when this returns or raises.
    """
    logs_dir.mkdir(parents=True, exist_ok=True)
    pids = run_dir / PIDS_DIR
    pids.mkdir(parents=True, exist_ok=True)
    for stale in pids.iterdir():
        stale.unlink()
    honcho.manager.KILL_WAIT = STOP_GRACE_SECONDS
    printer = TeePrinter(sys.stdout, logs_dir)
    manager = _StoresLastManager(printer)
    full_env = {**os.environ, **env}
    for spec in specs:
        process = manager.add_process(spec.name, spec.command, env=full_env, cwd=str(cwd))
        process._child_ctor = _recording_popen(pids / spec.name)
    try:
        manager.loop()
    finally:
        # honcho's loop stops the children itself; this covers a loop that ended early (an exception, a second
        # signal) and must not be interrupted by one more Ctrl-C.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            stop_children(run_dir)
        finally:
            signal.signal(signal.SIGINT, previous)
            printer.close()
    return int(manager.returncode or 0)
