"""The standard gRPC health service with one entry per model.

Entry "" is the server as a whole (SERVING once start-up loading is done); entry "model/<key>" is one model,
SERVING only while that model can answer, so a half-loaded server is never reported ready for a model it lacks.
"""

from __future__ import annotations

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def model_health_name(key: str) -> str:
    # "/" cannot occur in a model key, so these names never collide with a gRPC service name.
    return f"model/{key}"


class HealthStatus:
    """Owns the health servicer of one server; every status change goes through here."""

    def __init__(self, service_names: list[str]) -> None:
        self.servicer = health_aio.HealthServicer()
        self.service_names = service_names
        self._models: dict[str, bool] = {}

    def add_to_server(self, server: aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def set_overall(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for name in ["", *self.service_names]:
            await self.servicer.set(name, status)

    async def set_model(self, key: str, serving: bool) -> None:
        if self._models.get(key) == serving:
            return  # called on every request by the tokenizer: only changes reach the servicer (and its watchers)
        self._models[key] = serving
        await self.servicer.set(model_health_name(key), SERVING if serving else NOT_SERVING)

    async def shutting_down(self) -> None:
        await self.servicer.enter_graceful_shutdown()
