"""scripts/validate-deploy: docker-compose.yml (Debian's docker-compose), the Dockerfile (hadolint) and the
Kubernetes manifests (kustomize render + kubernetes-validate --strict) all pass. Installs its tools on first
use (apt-get, PyPI), hence the integration tier; later runs take seconds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_deployment_files_validate() -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "validate-deploy")], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for profiles in ("(default profile)", "--profile gpu", "--profile offline"):
        assert f"docker-compose config -q {profiles}: ok" in out
    assert "hadolint deploy/docker/Dockerfile: ok" in out
    assert "GPU patch applied: ok" in out
    assert "shellcheck deploy/docker/offline-job.sh" in out
    assert "kubernetes-validate --strict" in out
    assert "validate-deploy: all deployment files valid" in out
