"""The ModelServer gRPC service.

Predict, top to bottom: find the model (NOT_FOUND lists what exists; UNAVAILABLE when it is loading, failed or
unloaded), decode the tensors with the one codec, check them against the manifest signature (INVALID_ARGUMENT
naming the tensor), then either queue them on the model's dynamic batcher (RESOURCE_EXHAUSTED when its queue is
full) or run them alone in the thread pool, and encode the outputs.

Embed is Predict for query texts: the model's own text preprocessor (loaded with the session, so both are one
version) makes the token tensors in-process, which saves the client the round trip through the tokenizer service.
ScorePairs is the same for a cross-encoder's (query, document) pairs, with the manifest's score rule applied.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from functools import partial

import grpc
from grpc import aio
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument

from mmsearch.api.v1 import model_server_pb2, model_server_pb2_grpc, tensor_pb2
from mmsearch.grpc_common.errors import RpcRunner, RpcStatusError, invalid_argument, not_found
from mmsearch.model_repo import ModelKind, ModelRepoError, TensorSpec, validate_key
from mmsearch.runtime.pair_scores import pair_scores
from mmsearch.tensors import TensorDecodeError, map_from_proto, map_to_proto, to_proto
from services.model_server.batcher import Arrays, BatcherStoppedError, QueueFullError
from services.model_server.metrics import ServingMetrics
from services.model_server.registry import ModelEntry, ModelRegistry, ModelState, Runner
from services.model_server.signature import SignatureError, check_inputs, check_outputs

log = logging.getLogger(__name__)

Context = aio.ServicerContext[object, object]

# Kinds whose model turns query texts into embeddings (a cross-encoder has a tokenizer but scores pairs).
EMBED_KINDS = (ModelKind.TEXT_EMBEDDING, ModelKind.CLIP_TEXT)
# Embed tokenizes requests of at most this many texts on the event loop (measured: ~70 us for one FAQ question
# on a 2-core EPYC, ~350 us for eight), larger ones in the thread pool.
INLINE_TOKENIZE_TEXTS = 8


class ModelServerServicer(model_server_pb2_grpc.ModelServerServicer):
    def __init__(self, registry: ModelRegistry, executor: Executor, metrics: ServingMetrics) -> None:
        self.registry = registry
        self.executor = executor
        self.rpc = RpcRunner(metrics, log)

    async def Predict(  # noqa: N802 (gRPC method name)
        self, request: model_server_pb2.PredictRequest, context: Context
    ) -> model_server_pb2.PredictResponse:
        return await self.rpc.run("Predict", self._label(request.model_name), context, lambda: self._predict(request))

    async def Embed(  # noqa: N802
        self, request: model_server_pb2.EmbedRequest, context: Context
    ) -> model_server_pb2.EmbedResponse:
        return await self.rpc.run("Embed", self._label(request.model_name), context, lambda: self._embed(request))

    async def ScorePairs(  # noqa: N802
        self, request: model_server_pb2.ScorePairsRequest, context: Context
    ) -> model_server_pb2.ScorePairsResponse:
        return await self.rpc.run(
            "ScorePairs", self._label(request.model_name), context, lambda: self._score_pairs(request)
        )

    async def ListModels(  # noqa: N802
        self, request: model_server_pb2.ListModelsRequest, context: Context
    ) -> model_server_pb2.ListModelsResponse:
        async def body() -> model_server_pb2.ListModelsResponse:
            return model_server_pb2.ListModelsResponse(models=[self._info(k) for k in self.registry.known_keys()])

        return await self.rpc.run("ListModels", "", context, body)

    async def LoadModel(  # noqa: N802
        self, request: model_server_pb2.LoadModelRequest, context: Context
    ) -> model_server_pb2.LoadModelResponse:
        async def body() -> model_server_pb2.LoadModelResponse:
            key = request.model_name
            if key not in self.registry.repo:
                raise not_found("model", key, self.registry.repo.keys())
            entry = await self.registry.load(key)
            if entry.state == ModelState.FAILED:
                raise RpcStatusError(
                    grpc.StatusCode.FAILED_PRECONDITION, f"model {key!r} failed to load: {entry.error}"
                )
            return model_server_pb2.LoadModelResponse(model=self._info(key))

        return await self.rpc.run("LoadModel", self._label(request.model_name), context, body)

    async def UnloadModel(  # noqa: N802
        self, request: model_server_pb2.UnloadModelRequest, context: Context
    ) -> model_server_pb2.UnloadModelResponse:
        async def body() -> model_server_pb2.UnloadModelResponse:
            key = request.model_name
            if key not in self.registry.entries:
                raise not_found("model", key, self.registry.known_keys())
            await self.registry.unload(key)
            return model_server_pb2.UnloadModelResponse()

        return await self.rpc.run("UnloadModel", self._label(request.model_name), context, body)

    async def _predict(self, request: model_server_pb2.PredictRequest) -> model_server_pb2.PredictResponse:
        entry = self._serving_entry(request.model_name)
        runner, version = entry.runner, entry.version_tag  # one version, read together
        assert runner is not None
        try:
            inputs = map_from_proto(request.inputs)
            rows = check_inputs(runner.manifest, inputs)
            outputs = check_outputs(runner.manifest, list(request.output_names))
        except (TensorDecodeError, SignatureError) as exc:
            raise invalid_argument(str(exc)) from exc
        result = await self._run(entry, runner, inputs, outputs, rows)
        return model_server_pb2.PredictResponse(outputs=map_to_proto(_in_order(result, outputs)), model_version=version)

    async def _embed(self, request: model_server_pb2.EmbedRequest) -> model_server_pb2.EmbedResponse:
        entry = self._serving_entry(request.model_name)
        runner, version = entry.runner, entry.version_tag
        assert runner is not None
        manifest, text = runner.manifest, runner.text
        if manifest.kind not in EMBED_KINDS or text is None:
            hint = {
                ModelKind.CLIP_IMAGE: "send its images to Tokenizer.PreprocessImages, then Predict",
                ModelKind.CROSS_ENCODER: "it scores (query, document) pairs: ScorePairs",
            }.get(manifest.kind, "it has no tokenizer")
            raise invalid_argument(
                f"model {manifest.key!r} is a {manifest.kind} model and does not embed texts: {hint}"
            )
        texts = list(request.texts)
        if not texts:
            raise invalid_argument("texts is empty: send at least one")
        limit = self.registry.settings.max_embed_texts
        if len(texts) > limit:
            raise invalid_argument(f"{len(texts)} texts in one request; the limit is {limit}")
        output = request.output_name or manifest.embedding_output
        try:
            (output,) = check_outputs(manifest, [output])
        except SignatureError as exc:
            raise invalid_argument(str(exc)) from exc
        # A few short queries tokenize in tens of microseconds, less than a hop to the thread pool and back;
        # larger requests go to the pool so they do not hold up the event loop (and every other call) meanwhile.
        if len(texts) <= INLINE_TOKENIZE_TEXTS:
            batch = text.prep(texts, role="query")
        else:
            batch = await asyncio.get_running_loop().run_in_executor(
                self.executor, partial(text.prep, texts, role="query")
            )
        result = await self._run(entry, runner, dict(batch.tensors), [output], len(texts))
        return model_server_pb2.EmbedResponse(
            embeddings=to_proto(result[output]), truncated=batch.truncated, model_version=version
        )

    async def _score_pairs(self, request: model_server_pb2.ScorePairsRequest) -> model_server_pb2.ScorePairsResponse:
        entry = self._serving_entry(request.model_name)
        runner, version = entry.runner, entry.version_tag
        assert runner is not None
        manifest, text = runner.manifest, runner.text
        if manifest.kind is not ModelKind.CROSS_ENCODER or text is None:
            raise invalid_argument(
                f"model {manifest.key!r} is a {manifest.kind} model and does not score (query, document) pairs; "
                "ScorePairs takes a cross-encoder"
            )
        documents = list(request.documents)
        if not documents:
            raise invalid_argument("documents is empty: send at least one")
        if not request.query.strip():
            raise invalid_argument("query is empty: send the text the documents are scored against")
        limit = self.registry.settings.max_embed_texts
        if len(documents) > limit:
            raise invalid_argument(f"{len(documents)} documents in one request; the limit is {limit}")
        pairs = [(request.query, d) for d in documents]
        if len(pairs) <= INLINE_TOKENIZE_TEXTS:
            batch = text.prep_pairs(pairs)
        else:
            batch = await asyncio.get_running_loop().run_in_executor(self.executor, partial(text.prep_pairs, pairs))
        output = manifest.embedding_output
        result = await self._run(entry, runner, dict(batch.tensors), [output], len(pairs))
        try:
            scores = pair_scores(result[output], manifest)
        except ModelRepoError as exc:
            raise invalid_argument(str(exc)) from exc
        return model_server_pb2.ScorePairsResponse(
            scores=scores.tolist(), truncated=batch.truncated, model_version=version
        )

    async def _run(self, entry: ModelEntry, runner: Runner, inputs: Arrays, outputs: list[str], rows: int) -> Arrays:
        """Checked inputs through the model's batcher (or alone in the pool when it has none)."""
        key = runner.manifest.key
        try:
            if entry.batcher is not None:
                return await entry.batcher.submit(inputs, outputs, rows)
            return await asyncio.get_running_loop().run_in_executor(self.executor, runner.run, inputs, outputs)
        except QueueFullError as exc:
            raise RpcStatusError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from exc
        except BatcherStoppedError as exc:
            raise RpcStatusError(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc
        except InvalidArgument as exc:
            # Values the signature cannot describe, e.g. a token id beyond the vocabulary.
            raise invalid_argument(f"model {key!r} rejected the input values: {exc}") from exc
        except Fail as exc:
            raise invalid_argument(f"model {key!r} could not run on these inputs: {exc}") from exc

    def _serving_entry(self, key: str) -> ModelEntry:
        entry = self.registry.entries.get(key)
        if entry is None:
            raise not_found("model", key, self.registry.known_keys())
        if entry.state == ModelState.LOADED and entry.runner is not None:
            return entry
        why = {
            ModelState.LOADING: "is still loading; retry shortly",
            ModelState.UNLOADED: "is unloaded; call LoadModel to serve it again",
            ModelState.FAILED: f"failed to load ({entry.error}); fix the model and call LoadModel",
        }[entry.state]
        raise RpcStatusError(grpc.StatusCode.UNAVAILABLE, f"model {key!r} {why}")

    def _info(self, key: str) -> model_server_pb2.ModelInfo:
        entry = self.registry.entries.get(key)
        manifest = entry.manifest if entry is not None else None
        if manifest is None:
            try:
                manifest = self.registry.repo.manifest(key)
            except ModelRepoError:
                manifest = None
        info = model_server_pb2.ModelInfo(
            key=key,
            state=entry.state.value if entry is not None else ModelState.UNLOADED.value,
            error=entry.error if entry is not None else "",
            version=entry.version_tag if entry is not None and entry.runner is not None else "",
        )
        if manifest is not None:
            info.kind = manifest.kind.value
            info.embedding_dim = manifest.embedding_dim
            info.inputs.extend(_spec(s) for s in manifest.inputs)
            info.outputs.extend(_spec(s) for s in manifest.outputs)
        return info

    def _label(self, key: str) -> str:
        # Metric labels only for known models, so arbitrary names from clients cannot grow the label set.
        try:
            validate_key(key)
        except ModelRepoError:
            return "_unknown"
        return key if key in self.registry.entries else "_unknown"


def _spec(spec: TensorSpec) -> tensor_pb2.TensorSpec:
    return tensor_pb2.TensorSpec(
        name=spec.name, dtype=spec.dtype, shape=[d if isinstance(d, int) else -1 for d in spec.shape]
    )


def _in_order(result: Arrays, names: list[str]) -> Arrays:
    return {name: result[name] for name in names}
