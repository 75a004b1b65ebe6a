"""Structure of the deployment files (no engine or cluster needed; scripts/validate-deploy runs the schema tools).

These catch what schema validators cannot: a setting name that no service reads, a service without a health
check, a port published on every interface, torch in an online image, an HPA aimed at nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from mmsearch.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
JOBS = ("consul-seed", "keys-seed", "offline")  # one-shot: success is their exit code


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or {"helm-values", "patches"} & set(path.parts):
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def assert_known_setting(key: str) -> None:
    """MMSEARCH_<SECTION>__<NAME> or MMSEARCH_<NAME> must name a field of mmsearch.settings.Settings."""
    rest = key.removeprefix("MMSEARCH_").lower()
    section, _, name = rest.partition("__")
    fields = Settings.model_fields
    assert section in fields, f"{key}: no settings section or field {section!r}"
    if name:
        model = fields[section].annotation
        assert isinstance(model, type), f"{key}: {section} is not a section"
        assert issubclass(model, BaseModel), f"{key}: {section} is not a section"
        assert name in model.model_fields, f"{key}: section {section} has no setting {name!r}"


def test_every_long_running_compose_service_has_a_health_check() -> None:
    for name, svc in _compose()["services"].items():
        check = svc.get("healthcheck", {})
        if name in JOBS:
            assert check.get("disable") is True, name
            assert svc.get("restart") == "no", name
        else:
            assert check.get("test"), f"service {name} has no healthcheck"
            assert svc.get("restart") == "unless-stopped", name


def test_compose_publishes_ports_on_loopback_by_default() -> None:
    for name, svc in _compose()["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("${BIND_ADDR:-127.0.0.1}:"), f"{name} publishes {port} on every interface"


def test_compose_uses_named_volumes_and_pinned_images() -> None:
    data = _compose()
    declared = set(data["volumes"])
    for name, svc in data["services"].items():
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            assert source in declared or source.startswith(("./deploy/", "${CORPUS_DIR", "${TLS_DIR")), (
                f"{name}: {mount}"
            )
        image = svc["image"]
        if not image.startswith("${MMSEARCH_IMAGE_PREFIX"):
            tag = image.rsplit(":", 1)[-1]
            assert ":" in image, f"{name}: pin {image}"
            assert tag != "latest", f"{name}: pin {image}"


def test_compose_settings_are_real_settings() -> None:
    for svc in _compose()["services"].values():
        for key in svc.get("environment", {}):
            if key.startswith("MMSEARCH_"):
                assert_known_setting(key)


def test_compose_has_the_production_pieces() -> None:
    services = _compose()["services"]
    assert services["milvus"]["image"].startswith("milvusdb/milvus:v2.5.")  # BM25 full-text search
    assert {"etcd", "minio"} <= set(services["milvus"]["depends_on"])
    seed = services["consul-seed"]
    assert "http://consul:8500/v1/kv/${CONSUL_KEY:-config/test/multimodal-config}" in seed["command"]
    assert "./deploy/ab-config.yaml:/config/ab-config.yaml:ro" in seed["volumes"]
    assert services["search"]["depends_on"]["consul-seed"]["condition"] == "service_completed_successfully"
    assert services["search"]["environment"]["MMSEARCH_SEARCH__CONFIG_SOURCE"] == "consul"
    gpu = services["model-server-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["target"] == "serving-gpu"
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    assert services["offline"]["profiles"] == ["offline"]


def test_compose_runs_the_search_service_with_keys() -> None:
    data = _compose()
    services = data["services"]
    search = services["search"]
    assert search["environment"]["MMSEARCH_AUTH__MODE"] == "keys"
    assert search["environment"]["MMSEARCH_AUTH__BOOTSTRAP_KEY_FILE"] == "/run/secrets/admin_key"
    assert search["secrets"] == ["admin_key"]
    web = services["web"]
    assert web["environment"]["MMSEARCH_WEB__API_KEY_FILE"] == "/run/secrets/web_ui_key"
    assert web["depends_on"]["keys-seed"]["condition"] == "service_completed_successfully"
    seed = services["keys-seed"]["command"]
    assert seed[:3] == ["mmsearch", "keys", "create"]
    assert {"--from-file", "/run/secrets/web_ui_key", "--if-missing"} <= set(seed)
    assert set(data["secrets"]) == {"admin_key", "web_ui_key"}


def test_k8s_runs_the_search_service_with_keys_from_a_secret() -> None:
    deployments = {d["metadata"]["name"]: d for d in _k8s_docs() if d["kind"] == "Deployment"}

    def env_and_secrets(name: str) -> tuple[dict[str, str], set[str]]:
        pod = deployments[name]["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value", "") for e in pod["containers"][0].get("env", [])}
        secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        return env, secrets

    env, secrets = env_and_secrets("mmsearch-search")
    assert env["MMSEARCH_AUTH__MODE"] == "keys"
    assert env["MMSEARCH_AUTH__BOOTSTRAP_KEY_FILE"] == "/etc/mmsearch/keys/admin.key"
    assert "mmsearch-keys" in secrets
    env, secrets = env_and_secrets("mmsearch-web")
    assert env["MMSEARCH_WEB__API_KEY_FILE"] == "/etc/mmsearch/keys/web-ui.key"
    assert "mmsearch-keys" in secrets


def _dockerfile_stages() -> dict[str, str]:
    stages: dict[str, str] = {}
    name = ""
    for line in DOCKERFILE.read_text().splitlines():
        m = re.match(r"FROM \S+ AS (\S+)", line)
        if m:
            name = m.group(1)
            stages[name] = ""
        elif name:
            stages[name] += line + "\n"
    return stages


@pytest.mark.parametrize(
    ("target", "extra"), [("serving", "serving"), ("serving-gpu", "gpu"), ("search", "search"), ("web", "web")]
)
def test_online_images_carry_no_torch(target: str, extra: str) -> None:
    stages = _dockerfile_stages()
    body = stages[target]
    source = re.search(r"COPY --from=(venv-\S+) /opt/venv", body)
    installs = stages[source.group(1)] if source else body  # serving-gpu builds its venv in place
    assert f"[{extra}]" in installs
    assert "torch" not in installs
    assert "offline" not in installs
    assert "USER 10001" in stages["runtime"] + body
    assert "HEALTHCHECK" in body


def test_offline_image_pins_cpu_torch_through_constraints() -> None:
    body = _dockerfile_stages()["venv-offline"]
    assert "download.pytorch.org/whl/cpu" in body
    assert "-c /tmp/constraints.txt" in body
    assert "[offline,demo-data" in body


def test_k8s_deployments_have_probes_resources_and_real_settings() -> None:
    docs = _k8s_docs()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {
        "mmsearch-tokenizer",
        "mmsearch-model-server",
        "mmsearch-search",
        "mmsearch-web",
        "mmsearch-spark-master",  # deploy/k8s/spark: the optional cluster of `--engine spark`
        "mmsearch-spark-worker",
    }
    for name, dep in deployments.items():
        for c in dep["spec"]["template"]["spec"]["containers"]:
            assert c.get("readinessProbe"), name
            assert c.get("livenessProbe"), name
            assert c["resources"]["requests"], name
            assert c["resources"]["limits"], name
            for env in c.get("env", []):
                if env["name"].startswith("MMSEARCH_"):
                    assert_known_setting(env["name"])
    settings = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "mmsearch-settings")
    for key in settings["data"]:
        assert_known_setting(key)
    hpas = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert hpas == {"mmsearch-search", "mmsearch-model-server"}
    assert hpas <= set(deployments)
    for name in hpas:  # the HPA owns the replica count
        assert "replicas" not in deployments[name]["spec"], name


@pytest.mark.parametrize("folder", ["base", "spark"])
def test_kustomization_lists_every_manifest(folder: str) -> None:
    base = K8S / folder
    listed = set(yaml.safe_load((base / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in base.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == present
    top = yaml.safe_load((ROOT / "deploy" / "kustomization.yaml").read_text())
    assert top["configMapGenerator"][0]["files"] == ["ab-config.yaml"]
