"""MongoDB and Milvus credentials and TLS pass from settings to the clients' own arguments, and never into a repr."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from mmsearch.settings import MilvusSettings, MongoSettings, Settings
from mmsearch.stores import milvus_auth_kwargs, mongo_auth_kwargs, mongo_client


def test_mongodb_credentials_and_tls() -> None:
    assert mongo_auth_kwargs(MongoSettings()) == {}
    settings = MongoSettings(
        username="mmsearch",
        password=SecretStr("s3cr3t-pw"),
        tls_ca_file=Path("/etc/mmsearch/tls/ca.crt"),
        tls_client_cert_key_file=Path("/etc/mmsearch/tls/client.pem"),
    )
    assert mongo_auth_kwargs(settings) == {
        "username": "mmsearch",
        "password": "s3cr3t-pw",
        "tls": True,
        "tlsCAFile": "/etc/mmsearch/tls/ca.crt",
        "tlsCertificateKeyFile": "/etc/mmsearch/tls/client.pem",
    }
    assert "s3cr3t-pw" not in repr(settings)
    client = mongo_client(MongoSettings(uri="mongodb://127.0.0.1:9", username="u", password=SecretStr("s3cr3t-pw")))
    try:
        assert "s3cr3t-pw" not in repr(client)
    finally:
        client.close()


def test_milvus_token_and_tls() -> None:
    assert milvus_auth_kwargs(MilvusSettings()) == {}
    settings = MilvusSettings(
        uri="https://milvus.example.org:19530",
        token=SecretStr("root:Milvus"),
        db_name="search",
        tls_ca_file=Path("/etc/mmsearch/tls/ca.crt"),
        tls_server_name="milvus",
        tls_client_cert_file=Path("/etc/mmsearch/tls/client.crt"),
        tls_client_key_file=Path("/etc/mmsearch/tls/client.key"),
    )
    assert milvus_auth_kwargs(settings) == {
        "token": "root:Milvus",
        "db_name": "search",
        "secure": True,
        "ca_pem_path": "/etc/mmsearch/tls/ca.crt",
        "server_name": "milvus",
        "client_pem_path": "/etc/mmsearch/tls/client.crt",
        "client_key_path": "/etc/mmsearch/tls/client.key",
    }
    assert "root:Milvus" not in repr(settings)


def test_empty_file_settings_from_the_environment_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # Deployment files pass ${VAR:-}: empty is "not set", never the current folder.
    monkeypatch.setenv("MMSEARCH_MONGO__TLS_CA_FILE", "")
    monkeypatch.setenv("MMSEARCH_TOKENIZER__TLS_CERT_FILE", "")
    monkeypatch.setenv("MMSEARCH_AUTH__BOOTSTRAP_KEY_FILE", "")
    settings = Settings()
    assert settings.mongo.tls_ca_file is None
    assert settings.tokenizer.tls_cert_file is None
    assert settings.auth.bootstrap_key_file is None
