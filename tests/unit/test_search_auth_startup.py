"""What the search service settles before it serves: no open service on the network without being told, a
bootstrap key that is a key, and the CLI saying so in one line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from mmsearch.api_keys import ApiKey
from mmsearch.cli.main import cli
from mmsearch.settings import AuthSettings
from services.search.auth.startup import AuthStartError, bootstrap_key, check_exposure, is_loopback


def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "search.example.org"))  # noqa: S104


def test_auth_off_on_the_network_needs_insecure_no_auth(caplog: pytest.LogCaptureFixture) -> None:
    check_exposure("127.0.0.1", AuthSettings(mode="off"))
    check_exposure("0.0.0.0", AuthSettings(mode="keys"))  # noqa: S104
    with pytest.raises(AuthStartError, match=r"refusing to listen on 0\.0\.0\.0 with auth\.mode off"):
        check_exposure("0.0.0.0", AuthSettings(mode="off"))  # noqa: S104
    with caplog.at_level(logging.WARNING):
        check_exposure("0.0.0.0", AuthSettings(mode="off", insecure_no_auth=True))  # noqa: S104
        check_exposure("10.0.0.5", AuthSettings(mode="keys", anonymous_scopes=["search"]))
    assert "auth is OFF on 0.0.0.0" in caplog.text
    assert "requests without a key may use search on 10.0.0.5" in caplog.text


def test_serve_search_refuses_in_one_line_before_anything_starts() -> None:
    result = CliRunner().invoke(cli, ["serve", "search", "--host", "0.0.0.0", "--auth", "off"])  # noqa: S104
    assert result.exit_code == 1
    assert "refusing to listen on 0.0.0.0 with auth.mode off" in result.output
    assert "--insecure-no-auth" in result.output


def test_the_bootstrap_key_comes_from_its_file_or_value_and_must_be_a_key(tmp_path: Path) -> None:
    key = ApiKey.generate()
    assert bootstrap_key(AuthSettings()) is None
    assert bootstrap_key(AuthSettings(bootstrap_key=SecretStr(""))) is None
    assert bootstrap_key(AuthSettings(bootstrap_key=SecretStr(str(key)))) == key
    secret_file = tmp_path / "admin.key"
    secret_file.write_text(f"{key}\n", encoding="utf-8")
    assert bootstrap_key(AuthSettings(bootstrap_key_file=secret_file)) == key
    secret_file.write_text("hunter2\n", encoding="utf-8")
    with pytest.raises(AuthStartError, match="holds not an mmsearch API key") as err:
        bootstrap_key(AuthSettings(bootstrap_key_file=secret_file))
    assert "hunter2" not in str(err.value)
    with pytest.raises(AuthStartError, match=r"cannot read auth\.bootstrap_key_file"):
        bootstrap_key(AuthSettings(bootstrap_key_file=tmp_path / "missing.key"))
