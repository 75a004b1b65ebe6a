"""TLS on the tokenizer and model server ports: real servers with a certificate from a CA made in the test; clients
that trust that CA are served, plaintext clients, clients trusting another CA and clients expecting another name
are not; the container health check probes a TLS port; the search service answers searches over TLS."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmsearch.grpc_common.client import ClientTls, ServiceCallError
from mmsearch.healthcheck import grpc_serving
from mmsearch.healthcheck import main as healthcheck_main
from mmsearch.model_repo import ModelRepository
from services.model_server.client import ModelServerClient
from services.tokenizer.client import TokenizerClient
from tests.doubles.consul_kv import ConsulKVDouble
from tests.fixtures.grpc_services import RunningService, start_service
from tests.fixtures.search import AB_CONFIG, FaqCorpus, Stores, start_search
from tests.fixtures.tls import CertAuthority, ServerCert, make_ca

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertAuthority, ServerCert, CertAuthority]:
    root = tmp_path_factory.mktemp("pki")
    ca = make_ca(root / "ca")
    server = ca.issue("mmsearch-grpc", ["localhost", "127.0.0.1"])
    other = make_ca(root / "other", "another CA")
    return ca, server, other


@pytest.fixture(scope="module")
def tls_services(
    model_repo: ModelRepository,
    pki: tuple[CertAuthority, ServerCert, CertAuthority],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningService, RunningService]]:
    ca, cert, _ = pki
    logs = tmp_path_factory.mktemp("tls-logs")
    flags = ("--tls-cert-file", str(cert.cert_file), "--tls-key-file", str(cert.key_file))

    def probe(target: str) -> bool:
        return grpc_serving(target, ca_file=ca.cert_file)

    with (
        start_service("tokenizer", model_repo.root, *flags, log_dir=logs, name="tls-tokenizer", serving=probe) as tok,
        start_service(
            "model", model_repo.root, *flags, "--intra-op-threads", "1", log_dir=logs, name="tls-model", serving=probe
        ) as model,
    ):
        yield tok, model


async def _embed(target: str, tls: ClientTls | None) -> int:
    client = ModelServerClient(target, timeout=5.0, tls=tls)
    try:
        embedding = await client.embed_texts("minilm", ["how do I apply for a building permit"])
        return int(embedding.vectors.shape[1])
    finally:
        await client.close()


async def _tokenize(target: str, tls: ClientTls | None) -> int:
    client = TokenizerClient(target, timeout=5.0, tls=tls)
    try:
        batch = await client.tokenize("minilm", ["a building permit"])
        return int(batch.tensors["input_ids"].shape[0])
    finally:
        await client.close()


def test_clients_that_trust_the_ca_are_served_and_no_other_client_is(
    tls_services: tuple[RunningService, RunningService], pki: tuple[CertAuthority, ServerCert, CertAuthority]
) -> None:
    tok, model = tls_services
    ca, _, other = pki
    trusted = ClientTls(ca.cert_file)
    assert asyncio.run(_embed(model.target, trusted)) == 384
    assert asyncio.run(_tokenize(tok.target, trusted)) == 1
    port = model.target.rsplit(":", 1)[1]
    assert asyncio.run(_embed(f"localhost:{port}", trusted)) == 384  # the name on the certificate
    for tls in (None, ClientTls(other.cert_file), ClientTls(ca.cert_file, server_name="search.example.org")):
        with pytest.raises(ServiceCallError) as err:
            asyncio.run(_embed(model.target, tls))
        assert err.value.unavailable, f"{tls}: {err.value}"
    assert "TLS" in model.log_text()


def test_the_container_health_check_probes_a_tls_port(
    tls_services: tuple[RunningService, RunningService], pki: tuple[CertAuthority, ServerCert, CertAuthority]
) -> None:
    tok, model = tls_services
    ca, _, other = pki
    assert healthcheck_main(["grpc", tok.target, str(ca.cert_file)]) == 0
    assert healthcheck_main(["grpc", model.target, str(ca.cert_file), "localhost"]) == 0
    assert healthcheck_main(["grpc", model.target]) == 1
    assert healthcheck_main(["grpc", model.target, str(other.cert_file)]) == 1


def test_half_a_tls_setting_stops_the_server(model_repo: ModelRepository, tmp_path: Path) -> None:
    import subprocess
    import sys

    cert = tmp_path / "missing.crt"
    cmd = [sys.executable, "-m", "mmsearch.cli.main", "serve", "tokenizer", "--repo", str(model_repo.root)]
    result = subprocess.run(
        [*cmd, "--port", "0", "--metrics-port", "0", "--tls-cert-file", str(cert)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "TLS needs both tls_cert_file and tls_key_file" in result.stderr


def test_the_search_service_searches_over_tls(  # noqa: PLR0917 - pytest fixtures
    tls_services: tuple[RunningService, RunningService],
    pki: tuple[CertAuthority, ServerCert, CertAuthority],
    model_repo: ModelRepository,
    search_stores: Stores,
    faq_corpus: FaqCorpus,
    consul_kv: ConsulKVDouble,
    tmp_path: Path,
) -> None:
    tok, model = tls_services
    ca, _, _ = pki
    key = "config/test/tls-search"
    consul_kv.put(key, AB_CONFIG.read_text(encoding="utf-8"))
    with start_search(
        repo=model_repo.root,
        tokenizer_target=tok.target,
        model_server_target=model.target,
        milvus_uri=search_stores.milvus_uri,
        mongo_uri=search_stores.mongo_uri,
        consul=consul_kv,
        consul_key=key,
        work_dir=tmp_path,
        extra_env={"MMSEARCH_SEARCH__GRPC_TLS_CA_FILE": str(ca.cert_file)},
    ) as search:
        status, body = search.post("/qa/user/10", {"query": "how do I apply for a building permit"})
        assert status == 200, body
        items = body["searchItemModels"]
        assert isinstance(items, list), body
        assert items[0], body
        status, ready = search.get("/ready")
        assert status == 200, ready
