"""`python -m mmsearch.healthcheck grpc HOST:PORT | http URL`: exit 0 when the service is ready.

Container health checks (docker-compose.yml, the Dockerfile) and the local stack's readiness waits use these
probes: the images hold no curl or grpc_health_probe, and this needs only what every mmsearch image has
(grpcio, grpcio-health-checking, the standard library).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback URLs we built)
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError):
        return False


def grpc_serving(target: str, timeout: float = 2.0) -> bool:
    """The standard gRPC health service reports the whole server SERVING (every model loaded)."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"grpc", "http"}:
        print("usage: python -m mmsearch.healthcheck grpc HOST:PORT | http URL", file=sys.stderr)
        return 2
    kind, target = argv
    ok = grpc_serving(target) if kind == "grpc" else http_ok(target)
    if not ok:
        print(f"{target} is not ready", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
