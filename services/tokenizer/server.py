"""Assembles the tokenizer service: preprocessor cache + servicer + the common gRPC life cycle."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client import CollectorRegistry

from mmsearch.api.v1 import tokenizer_pb2, tokenizer_pb2_grpc
from mmsearch.grpc_common.health import HealthStatus
from mmsearch.grpc_common.rescan import Periodic
from mmsearch.grpc_common.server import ServerConfig, Service, run_server
from mmsearch.model_repo import ModelRepository
from mmsearch.settings import TokenizerSettings
from services.tokenizer.preprocessors import PreprocessorCache
from services.tokenizer.servicer import TokenizerMetrics, TokenizerServicer

log = logging.getLogger(__name__)

SERVICE_NAME = tokenizer_pb2.DESCRIPTOR.services_by_name["Tokenizer"].full_name


async def serve(settings: TokenizerSettings, model_repo: Path) -> None:
    registry = CollectorRegistry()
    repo = ModelRepository(model_repo)
    health = HealthStatus([SERVICE_NAME])
    executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="tokenize")
    cache = PreprocessorCache(repo, max_image_pixels=settings.max_image_pixels)
    servicer = TokenizerServicer(cache, settings, executor, TokenizerMetrics(registry), health)
    rescan = Periodic("tokenizer repository rescan", settings.rescan_seconds, servicer.refresh)

    async def start() -> None:
        log.info("model repository %s: %s", repo.root, ", ".join(repo.keys()) or "empty")
        await servicer.refresh()
        rescan.start()

    async def stop() -> None:
        await rescan.stop()
        executor.shutdown(wait=True, cancel_futures=True)

    service = Service(
        service_names=[SERVICE_NAME],
        register=lambda server: tokenizer_pb2_grpc.add_TokenizerServicer_to_server(servicer, server),
        start=start,
        stop=stop,
        health=health,
    )
    await run_server(ServerConfig.from_settings("tokenizer", settings), service, registry)


def run(settings: TokenizerSettings, model_repo: Path) -> None:
    asyncio.run(serve(settings, model_repo))
