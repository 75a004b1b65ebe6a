"""`mmsearch local status|down` without a stack, and the container health check command."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmsearch.healthcheck import main as healthcheck
from stack.cli import local
from tests.fixtures.ports import free_port


def test_status_without_a_stack_says_how_to_start_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(local, ["status", "--var-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "start the stack with `mmsearch local up` first" in result.output


def test_down_without_a_stack_is_a_no_op(tmp_path: Path) -> None:
    result = CliRunner().invoke(local, ["down", "--var-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "no local stack is running" in result.output


def test_up_refuses_a_second_stack_on_the_same_var_dir(tmp_path: Path) -> None:
    run_dir = tmp_path / "local"
    run_dir.mkdir()
    (run_dir / "up.pid").write_text(f"{os.getpid()}\n")  # a live process: this test
    result = CliRunner().invoke(local, ["up", "--var-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert f"already running (pid {os.getpid()})" in result.output


def test_healthcheck_usage_and_a_service_that_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck([]) == 2
    assert "usage" in capsys.readouterr().err
    port = free_port()
    assert healthcheck(["http", f"http://127.0.0.1:{port}/health"]) == 1
    assert healthcheck(["grpc", f"127.0.0.1:{port}"]) == 1
    assert "is not ready" in capsys.readouterr().err


def test_healthcheck_refuses_a_server_that_is_not_grpc() -> None:
    with socket.socket() as s:  # listens but never speaks HTTP/2: not SERVING
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert healthcheck(["grpc", f"127.0.0.1:{s.getsockname()[1]}"]) == 1
