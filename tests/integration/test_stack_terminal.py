"""Stopping the local stack the way a person does: Ctrl-C in a real terminal, output piped to tee; and
`mmsearch local down` when the supervising `local up` is wedged.

A `kill -INT` to the process group from a script did not reproduce the leak that a real terminal showed, so the
first test runs `mmsearch local up ... 2>&1 | tee` inside tmux (Debian's; `scripts/apt-ensure tmux tmux`) and
presses Ctrl-C with `send-keys C-c`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmsearch.model_repo import ModelRepository
from stack.plan import READY_FILE, ReadyReport
from stack.supervisor import STOP_GRACE_SECONDS, group_alive, recorded_children, stop_children
from tests.fixtures.ports import pid_running, wait_until
from tests.fixtures.stack import (
    ROOT,
    local_up_command,
    local_up_env,
    model_repo_with_minilm,
    post_json,
    start_local_stack,
)

pytestmark = pytest.mark.integration

PROCESSES = {"milvus", "mongo", "tokenizer", "model", "setup", "search", "web"}


class Terminal:
    """A private tmux server (its own socket) with one 200x50 window."""

    def __init__(self, socket: Path) -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            pytest.fail("tmux is missing: run scripts/apt-ensure tmux tmux (Debian's tmux)", pytrace=False)
        self.base = [tmux, "-S", str(socket)]

    def run(self, shell_command: str, env: dict[str, str]) -> None:
        # The server starts with this environment; the window's shell inherits it.
        subprocess.run(
            [*self.base, "new-session", "-d", "-s", "t", "-x", "200", "-y", "50", shell_command],
            env=env,
            check=True,
        )

    def press_ctrl_c(self) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "t", "C-c"], check=True)

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(tmp_path / "tmux.sock")
    try:
        yield term
    finally:
        term.close()


def test_ctrl_c_with_output_piped_to_tee_stops_every_process(
    tmp_path: Path, model_repo: ModelRepository, terminal: Terminal
) -> None:
    var_dir = tmp_path / "var"
    repo_dir = model_repo_with_minilm(tmp_path / "models", model_repo)
    tee_log = tmp_path / "up.log"
    up = shlex.join(local_up_command(var_dir))
    # Exactly what a person types, plus a marker once the pipeline has ended (and a shell to keep the pane).
    terminal.run(
        f"cd {shlex.quote(str(ROOT))} && {up} 2>&1 | tee {shlex.quote(str(tee_log))}; "
        f"echo pipeline-ended > {shlex.quote(str(tmp_path / 'ended'))}; exec sleep 600",
        local_up_env(repo_dir),
    )
    run_dir = var_dir / "local"
    ended = tmp_path / "ended"

    def ready() -> bool:
        if ended.is_file():  # the stack refused to start or died: say why now, not after the time-out
            pytest.fail(f"`mmsearch local up` ended before it was ready:\n{tee_log.read_text(errors='replace')}")
        return (run_dir / READY_FILE).is_file()

    wait_until(ready, what="local stack in tmux", timeout=600)
    # The banner reaches the tee'd file through honcho's relay and the pipe, a moment after setup wrote it.
    wait_until(
        lambda: "mmsearch is up" in tee_log.read_text(encoding="utf-8", errors="replace"),
        what="the banner in the tee'd output",
        timeout=30,
    )
    children = recorded_children(run_dir)
    assert set(children) == PROCESSES
    supervisor_pid = int((run_dir / "up.pid").read_text())
    ready_report = ReadyReport.model_validate_json((run_dir / READY_FILE).read_text(encoding="utf-8"))
    try:
        # A search just before Ctrl-C: its exposure is still queued (written in batches) when the stop begins.
        assert post_json(f"{ready_report.search_url}/qa/user/10", {"query": "building permit"})["searchItemModels"]
        _press_ctrl_c_and_check_everything_stops(terminal, tmp_path, var_dir, children, supervisor_pid)
    finally:
        stop_children(run_dir, grace=5)  # a failed check must not leave the stack running
        if pid_running(supervisor_pid):
            os.kill(supervisor_pid, signal.SIGKILL)


def _press_ctrl_c_and_check_everything_stops(
    terminal: Terminal, tmp_path: Path, var_dir: Path, children: dict[str, int], supervisor_pid: int
) -> None:
    run_dir = var_dir / "local"
    terminal.press_ctrl_c()

    # Within the stop grace (then honcho KILLs), every process is gone and the supervisor has exited.
    wait_until(
        lambda: not any(group_alive(p) for p in children.values()),
        what="every process of the stack stopped",
        timeout=STOP_GRACE_SECONDS + 5,
    )
    wait_until(lambda: not pid_running(supervisor_pid), what="`mmsearch local up` exited", timeout=15)
    wait_until((tmp_path / "ended").is_file, what="the piped command line ended", timeout=15)
    assert not (run_dir / "up.pid").exists()
    assert recorded_children(run_dir) == {}
    honcho_log = (var_dir / "logs" / "honcho.log").read_text(encoding="utf-8")
    assert "SIGINT received" in honcho_log  # the log file got the line the dead pipe could not
    # The stores stopped after the services, so the search service's last exposures reached MongoDB.
    assert "the services have stopped; stopping the stores" in honcho_log
    search_log = (var_dir / "logs" / "search.log").read_text(encoding="utf-8")
    assert "not written to MongoDB" not in search_log, search_log[-2000:]
    down = subprocess.run(
        [str(Path(sys.executable).parent / "mmsearch"), "local", "down", "--var-dir", str(var_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "no local stack is running" in down.stdout


def test_local_down_stops_a_stack_whose_supervisor_is_wedged(tmp_path: Path, model_repo: ModelRepository) -> None:
    var_dir = tmp_path / "var"
    repo_dir = model_repo_with_minilm(tmp_path / "models", model_repo)
    with start_local_stack(var_dir, repo_dir) as running:
        children = recorded_children(var_dir / "local")
        assert set(children) == PROCESSES
        os.kill(running.proc.pid, signal.SIGSTOP)  # a supervisor that no longer reacts to anything
        try:
            down = subprocess.run(
                [
                    str(Path(sys.executable).parent / "mmsearch"),
                    *("local", "down", "--var-dir", str(var_dir), "--timeout", "2"),
                ],
                capture_output=True,
                text=True,
                timeout=STOP_GRACE_SECONDS * 3,
                check=False,
            )
        finally:
            if running.proc.poll() is None:
                os.kill(running.proc.pid, signal.SIGCONT)
        assert down.returncode == 0, down.stderr
        assert f"(pid {running.proc.pid}) did not stop within 2 s" in down.stdout
        assert "stopped" in down.stdout.splitlines()[-1]
        for name, pgid in children.items():
            assert not group_alive(pgid), f"{name} (pid {pgid}) still running after `local down`"
        running.proc.wait(timeout=30)
        assert not (var_dir / "local" / "up.pid").exists()
