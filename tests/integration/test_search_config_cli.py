"""`mmsearch config show|validate|push|explain` with the real py-consul client against the Consul KV test double."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mmsearch.cli.main import cli
from services.search.bucketing import bucket_of
from tests.doubles.consul_kv import ConsulKVDouble
from tests.fixtures.search import AB_CONFIG

pytestmark = pytest.mark.integration

KEY = "config/test/cli-test"


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_push_show_explain_round_trip(consul_kv: ConsulKVDouble) -> None:
    code, out = _run("config", "push", str(AB_CONFIG), "--consul", consul_kv.address, "--key", KEY)
    assert code == 0, out
    assert f"to {KEY}" in out
    _, entry = consul_kv.get(KEY)
    assert entry is not None
    assert entry.value.decode() == AB_CONFIG.read_text()

    code, out = _run("config", "show", "--consul", consul_kv.address, "--key", KEY)
    assert code == 0, out
    assert "layer rank.qa (rank, bucketizer sha256, salt 'rank.qa')" in out
    assert "rank.qa.mmr: 0.5" in out

    code, out = _run("config", "explain", "--user-id", "10", "--consul", consul_kv.address, "--key", KEY)
    assert code == 0, out
    assert f"rank.qa: bucket {bucket_of('10', 'rank.qa')} -> rank.qa." in out


def test_push_refuses_an_invalid_file_and_a_stale_cas(consul_kv: ConsulKVDouble, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(AB_CONFIG.read_text().replace("rankerName: mmr", "rankerName: xgboost"))
    code, out = _run("config", "push", str(bad), "--consul", consul_kv.address, "--key", KEY + "-bad")
    assert code != 0
    assert "unknown ranker 'xgboost'" in out
    assert consul_kv.get(KEY + "-bad")[1] is None  # nothing written
    consul_kv.put(KEY + "-cas", "x")
    code, out = _run(
        "config", "push", str(AB_CONFIG), "--consul", consul_kv.address, "--key", KEY + "-cas", "--cas", "0"
    )
    assert code != 0
    assert "check-and-set" in out


def test_validate_offline_and_unreachable_consul(tmp_path: Path) -> None:
    code, out = _run("config", "validate", "--offline", str(AB_CONFIG))
    assert code == 0, out
    assert out.rstrip().endswith("valid")
    gone = ConsulKVDouble().start()
    addr = gone.address
    gone.stop()
    code, out = _run("config", "show", "--consul", addr)
    assert code != 0
    assert "cannot read Consul key" in out
