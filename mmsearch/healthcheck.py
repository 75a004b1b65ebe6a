"""`python -m mmsearch.healthcheck grpc HOST:PORT [CA_FILE [SERVER_NAME]] | http URL`: exit 0 when ready.

A gRPC port with TLS is probed with the CA that signed its certificate (and the name on the certificate when
HOST is not it, as for 127.0.0.1 inside a container); an empty CA_FILE probes plaintext, so a compose health check
can pass `${GRPC_TLS_CA_FILE:-}` either way.

Container health checks (docker-compose.yml, the Dockerfile) and the local stack's readiness waits use these
probes: the images hold no curl or grpc_health_probe, and this needs only what every mmsearch image has
(grpcio, grpcio-health-checking, the standard library).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mmsearch.grpc_common.client import ClientTls


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback URLs we built)
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError):
        return False


def grpc_serving(target: str, timeout: float = 2.0, *, ca_file: Path | None = None, server_name: str = "") -> bool:
    """The standard gRPC health service reports the whole server SERVING (every model loaded)."""
    if ca_file is None:
        channel = grpc.insecure_channel(target)
    else:
        tls = ClientTls(ca_file, server_name)
        channel = grpc.secure_channel(target, tls.credentials(), options=tls.options())
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


USAGE = "usage: python -m mmsearch.healthcheck grpc HOST:PORT [CA_FILE [SERVER_NAME]] | http URL"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"grpc", "http"} or not 2 <= len(argv) <= (4 if argv[0] == "grpc" else 2):
        print(USAGE, file=sys.stderr)
        return 2
    kind, target = argv[0], argv[1]
    if kind == "grpc":
        ca = Path(argv[2]) if len(argv) > 2 and argv[2] else None  # "" (an unset ${VAR:-}): plaintext
        ok = grpc_serving(target, ca_file=ca, server_name=argv[3] if len(argv) > 3 else "")
    else:
        ok = http_ok(target)
    if not ok:
        print(f"{target} is not ready", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
