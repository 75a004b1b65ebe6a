"""`python -m mmsearch.local.healthcheck grpc HOST:PORT | http URL`: exit 0 when the service is ready.

Container health checks (docker-compose.yml, the Dockerfile) use it: the images hold no curl or grpc_health_probe,
and this uses only what every mmsearch image has (grpcio, grpcio-health-checking, the standard library).
"""

from __future__ import annotations

import sys

from mmsearch.local.probes import grpc_serving, http_ok


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"grpc", "http"}:
        print("usage: python -m mmsearch.local.healthcheck grpc HOST:PORT | http URL", file=sys.stderr)
        return 2
    kind, target = argv
    ok = grpc_serving(target) if kind == "grpc" else http_ok(target)
    if not ok:
        print(f"{target} is not ready", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
