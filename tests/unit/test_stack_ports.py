"""`mmsearch local up` refuses taken or duplicated ports before starting anything, naming the flag to change."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from stack.cli import local
from stack.plan import Ports
from stack.ports import PortInUseError, check_ports, port_is_free
from tests.fixtures.ports import free_port


def _ports(**given: int) -> Ports:
    names = ["milvus", "mongo", "tokenizer", "tokenizer_metrics", "model", "model_metrics", "search", "web"]
    return Ports(**{n: given.get(n, free_port()) for n in names})


def test_free_ports_pass() -> None:
    ports = _ports()
    check_ports(ports)
    assert all(port_is_free(p) for p, _ in ports.by_role().values())


def test_taken_port_is_refused_with_the_flag_to_change() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert not port_is_free(taken)
        with pytest.raises(PortInUseError) as err:
            check_ports(_ports(search=taken))
    message = str(err.value)
    assert f"port {taken} (search service) is already in use on 127.0.0.1" in message
    assert "--search-port" in message


def test_same_port_for_two_services_is_refused() -> None:
    port = free_port()
    with pytest.raises(PortInUseError, match=r"given to both the search service and the web UI: change --web-port"):
        check_ports(_ports(search=port, web=port))


def test_up_refuses_a_taken_port_before_doing_anything(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        args = ["up", "--var-dir", str(tmp_path / "var"), "--web-port", str(taken)]
        for flag in ("--milvus-port", "--mongo-port", "--tokenizer-port", "--tokenizer-metrics-port", "--model-port",
                     "--model-metrics-port", "--search-port"):  # fmt: skip
            args += [flag, str(free_port())]
        result = CliRunner().invoke(local, args)
    assert result.exit_code != 0
    assert f"port {taken} (web UI) is already in use" in result.output
    assert "--web-port" in result.output
    assert not (tmp_path / "var" / "local" / "Procfile").exists()
