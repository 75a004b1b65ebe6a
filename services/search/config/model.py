"""The reference's `scene-config` YAML, parsed into typed models and resolved into an immutable runtime config.

Arguments overlay as in the reference: extraSceneArgs, then the layer's extraLayerArgs, then the experiment's
extraExperimentArgs (later wins). The merged arguments are parsed into the typed arguments of the layer's stage,
so a typo in a key that a stage knows is an error before the config is used, not a KeyError under traffic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.search.errors import ConfigError

log = logging.getLogger(__name__)

StageKind = Literal["qp", "match", "rank", "summary"]
STAGE_ORDER: tuple[StageKind, ...] = ("qp", "match", "rank", "summary")
BUCKETS = 10_000  # 0.01% granularity


# ---- the YAML document, as written by people -------------------------------------------------------------


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LayerExperimentRef(_Doc):
    experiment_name: str = Field(alias="experimentName", min_length=1)
    ratio: float = Field(gt=0, le=1)


class LayerDoc(_Doc):
    name: str = Field(min_length=1)
    extra_layer_args: dict[str, Any] = Field(default_factory=dict, alias="extraLayerArgs")
    normal_layer_args: list[LayerExperimentRef] = Field(alias="normalLayerArgs", min_length=1)


class SceneDoc(_Doc):
    name: str = Field(min_length=1)
    extra_scene_args: dict[str, Any] = Field(default_factory=dict, alias="extraSceneArgs")
    layers: list[LayerDoc] = Field(min_length=1)


class ExperimentDoc(_Doc):
    layer_name: str = Field(alias="layerName", min_length=1)
    experiment_name: str = Field(alias="experimentName", min_length=1)
    extra_experiment_args: dict[str, Any] = Field(default_factory=dict, alias="extraExperimentArgs")


class SceneConfigDoc(_Doc):
    scenes: list[SceneDoc] = Field(min_length=1)
    experiments: list[ExperimentDoc] = Field(min_length=1)


class ConfigDoc(_Doc):
    scene_config: SceneConfigDoc = Field(alias="scene-config")


# ---- typed stage arguments (after the overlay) -------------------------------------------------------------


class _Args(BaseModel):
    # Scene-level args reach every stage, so keys meant for another stage are ignored here.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class QpArgs(_Args):
    model_name: str = Field(alias="modelName", min_length=1)
    input: Literal["text", "image"] = "text"


class MilvusArgs(_Args):
    collection_name: str = Field(alias="collectionName", min_length=1)
    vector_field: str = Field(alias="vectorField", min_length=1)
    out_fields: list[str] = Field(default_factory=lambda: ["id"], alias="outFields")
    search_params: dict[str, Any] = Field(default_factory=dict, alias="searchParams")
    metric_type: str | None = Field(default=None, alias="metricType")

    @field_validator("out_fields", mode="before")
    @classmethod
    def _split_fields(cls, v: Any) -> Any:
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v

    @field_validator("search_params", mode="before")
    @classmethod
    def _json_params(cls, v: Any) -> Any:
        # The reference writes searchParams as a JSON string: '{"nprobe":128}'.
        if isinstance(v, str):
            try:
                return json.loads(v) if v.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"searchParams is not valid JSON: {exc}") from exc
        return v


class FusionArgs(_Args):
    """How the matchers' lists become one (the `fusion` argument of a match experiment).

    - max: each matcher's scores by the reference's rule (raw / (best + 0.001) + 3), an item keeps its best;
      with one matcher this is exactly the reference's behaviour. Scores lie in about (3, 4].
    - rrf: reciprocal rank fusion, the sum over matchers of 1 / (k + rank) (rank from 1); a matcher that did not
      find the item adds nothing. Scores lie in (0, n / (k + 1)] for n matchers.
    - weighted: each matcher's raw scores normalised to [0, 1] within its own list (min-max; a list of equal
      scores is all 1), then the weighted sum. Scores lie in [0, sum of weights].
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    method: Literal["max", "rrf", "weighted"] = "max"
    k: int = Field(default=60, gt=0)
    weights: dict[str, float] = Field(default_factory=dict)

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [name for name, w in v.items() if w < 0]
        if bad:
            raise ValueError(f"fusion weights must not be negative: {', '.join(bad)}")
        return v


class MatchArgs(_Args):
    model_name: str = Field(alias="modelName", min_length=1)
    vector_name: str = Field(default="sentence_embedding", alias="vectorName")
    matcher_names: list[str] = Field(alias="matcherNames", min_length=1)
    max_reservation: int = Field(default=200, alias="maxReservation", gt=0, le=16384)
    milvus_args: MilvusArgs = Field(alias="milvusArgs")
    # Fields a request may filter on (`filters` in the body), with their kind: "array" (ARRAY<VARCHAR>, matched
    # with ARRAY_CONTAINS) or "scalar"; a list means all scalar. Any other field is refused.
    filter_fields: dict[str, Literal["array", "scalar"]] = Field(default_factory=dict, alias="filterFields")
    # The text field the BM25Matcher searches (ingested with --lexical-field).
    lexical_field: str | None = Field(default=None, alias="lexicalField", min_length=1)
    fusion: FusionArgs = Field(default_factory=FusionArgs)
    # Drop items whose fused score (see FusionArgs for its range per method) is below this.
    min_score: float | None = Field(default=None, alias="minScore")
    # Drop ANN hits whose raw similarity (cosine on our unit vectors) is below this, before fusion.
    min_similarity: float | None = Field(default=None, alias="minSimilarity")
    # Reuse a cached embedding of the same text (search.query_cache_size); false: always tokenize and embed.
    query_cache: bool = Field(default=True, alias="queryCache")
    # A document corpus (ingested with `mmsearch ingest text`): how a document's chunk scores make its score, per
    # matcher: "max" (its best chunk) or "topSum(k)" (the sum of its k best); and how many of its best passages a
    # hit shows (matchedChunks). Ignored for row corpora.
    chunk_aggregation: str = Field(default="max", alias="chunkAggregation", pattern=r"^(max|topSum\([1-9][0-9]?\))$")
    matched_chunks: int = Field(default=3, alias="matchedChunks", ge=1, le=20)

    @property
    def chunks_summed(self) -> int:
        """k of topSum(k); 1 for max."""
        return 1 if self.chunk_aggregation == "max" else int(self.chunk_aggregation[len("topSum(") : -1])

    @field_validator("filter_fields", mode="before")
    @classmethod
    def _list_is_scalar(cls, v: Any) -> Any:
        return dict.fromkeys(v, "scalar") if isinstance(v, list) else v

    @model_validator(mode="after")
    def _fusion_fits_the_matchers(self) -> MatchArgs:
        if "BM25Matcher" in self.matcher_names and not self.lexical_field:
            raise ValueError("BM25Matcher needs lexicalField: the text field ingested with --lexical-field")
        unknown = sorted(set(self.fusion.weights) - set(self.matcher_names))
        if unknown:
            raise ValueError(
                f"fusion weights for {', '.join(unknown)}, which matcherNames does not list "
                f"({', '.join(self.matcher_names)})"
            )
        missing = [m for m in self.matcher_names if m not in self.fusion.weights]
        if self.fusion.method == "weighted" and missing:
            raise ValueError(f"weighted fusion needs a weight for every matcher; missing: {', '.join(missing)}")
        return self


class RankArgs(_Args):
    ranker_name: str = Field(default="dummy", alias="rankerName", min_length=1)
    max_reservation: int = Field(default=200, alias="maxReservation", gt=0, le=16384)
    mmr_lambda: float = Field(default=0.7, alias="mmrLambda", ge=0, le=1)
    blend_weights: dict[str, float] = Field(default_factory=dict, alias="blendWeights")
    # cross_encoder: the model (a cross_encoder of the repository; set it in the rank experiment, since the
    # scene's modelName is the embedding model), how many of recall's first items it rescores (the rest keep
    # their order below them), the document field it reads, where from (default: the summary's collection),
    # and how long it may take before the incoming order is kept instead.
    model_name: str = Field(default="", alias="modelName")
    # At most the tokenizer service's default max_batch (256 texts per call): one call carries all the pairs.
    rerank_top_n: int = Field(default=20, alias="rerankTopN", gt=0, le=256)
    document_field: str = Field(default="", alias="documentField")
    mongo_collection: str = Field(default="", alias="mongoCollection")
    timeout_ms: int = Field(default=500, alias="timeoutMs", gt=0, le=60_000)


class SummaryArgs(_Args):
    summary_fields: list[str] = Field(alias="summaryFields", min_length=1)
    # Default: the collection of the scene's match experiment (ingest writes both under the corpus name).
    mongo_collection: str = Field(default="", alias="mongoCollection")


StageArgs = QpArgs | MatchArgs | RankArgs | SummaryArgs
CROSS_ENCODER = "cross_encoder"  # the ranker that rescores with a model (stages/rerank.py)
# The matchers and rankers a config may name: the YAML's vocabulary, owned here. stages/ implements each under
# these names (its registries are checked against them), so config/ never imports stages/.
MATCHER_NAMES = ("ANNMatcher", "BM25Matcher")
RANKER_NAMES = ("dummy", "mmr", "blend", CROSS_ENCODER)
_ARGS_BY_STAGE: dict[StageKind, type[_Args]] = {
    "qp": QpArgs,
    "match": MatchArgs,
    "rank": RankArgs,
    "summary": SummaryArgs,
}


# ---- the resolved, immutable runtime form ------------------------------------------------------------------


@dataclass(frozen=True)
class Experiment:
    name: str
    layer: str
    stage: StageKind
    ratio: float
    args: StageArgs


@dataclass(frozen=True)
class Layer:
    name: str
    stage: StageKind
    bucketizer: Literal["sha256", "random"]
    salt: str
    experiments: tuple[Experiment, ...]
    # Exclusive upper bucket bound of each experiment, in order; the last is always BUCKETS.
    bounds: tuple[int, ...]

    def experiment(self, name: str) -> Experiment | None:
        return next((e for e in self.experiments if e.name == name), None)


@dataclass(frozen=True)
class Scene:
    name: str
    layers: tuple[Layer, ...]
    # Why the scene cannot serve (a model or collection is missing), with how to fix it; None when it can.
    disabled_reason: str | None = None

    def layer(self, name: str) -> Layer | None:
        return next((la for la in self.layers if la.name == name), None)

    def layers_of(self, stage: StageKind) -> list[Layer]:
        return [la for la in self.layers if la.stage == stage]


@dataclass(frozen=True)
class RuntimeConfig:
    scenes: dict[str, Scene]
    text: str
    origin: str  # where it came from: a file path, "consul:<key>", "last-good:<path>"
    digest: str = field(default="")
    # What is accepted but worth a look: arguments mmsearch ignores, search parameters the index does not use.
    warnings: tuple[str, ...] = ()

    def experiments(self) -> Iterable[Experiment]:
        for scene in self.scenes.values():
            for layer in scene.layers:
                yield from layer.experiments

    def overview(self) -> dict[str, Any]:
        """GET /experiments' body: scene -> layers -> {experiment: ratio} in config order, and how each layer
        assigns (sha256: sticky per user; random: per request)."""
        return {
            "configDigest": self.digest,
            "scenes": {
                scene.name: {
                    "disabled": scene.disabled_reason,
                    "layers": {la.name: {e.name: e.ratio for e in la.experiments} for la in scene.layers},
                    "bucketizers": {la.name: la.bucketizer for la in scene.layers},
                    # The MongoDB collections its results' documents come from (what `mmsearch eval` checks
                    # judged ids against).
                    "documents": sorted(
                        {
                            e.args.mongo_collection
                            for la in scene.layers
                            for e in la.experiments
                            if isinstance(e.args, SummaryArgs)
                        }
                    ),
                }
                for scene in self.scenes.values()
            },
        }


def bucket_bounds(ratios: list[float]) -> tuple[int, ...]:
    """Cumulative bucket bounds in proportion to the ratios (normalised by their sum).

    Rounded cumulatively, so the bounds never overlap, always end at BUCKETS, and no loop depends on rounding
    (the reference's table could loop forever). An experiment whose share rounds to zero buckets gets none.
    """
    total = sum(ratios)
    bounds: list[int] = []
    acc = 0.0
    for r in ratios:
        acc += r
        bounds.append(min(BUCKETS, round(acc / total * BUCKETS)))
    bounds[-1] = BUCKETS
    return tuple(bounds)


def _stage_of(layer: LayerDoc, merged: dict[str, Any]) -> StageKind | None:
    explicit = merged.get("stage")
    name = str(explicit) if explicit else layer.name.split(".", 1)[0]
    return next((s for s in STAGE_ORDER if s == name), None)


def _fmt_validation(where: str, exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        out.append(f"{where}: {loc}: {err['msg']}" if loc else f"{where}: {err['msg']}")
    return out


def parse_document(text: str) -> ConfigDoc:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise ConfigError(["the config must be a mapping with a top-level 'scene-config' key"])
    try:
        return ConfigDoc.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_fmt_validation("scene-config", exc)) from exc


def resolve(
    text: str,
    *,
    origin: str,
    matchers: Iterable[str] = MATCHER_NAMES,
    rankers: Iterable[str] = RANKER_NAMES,
) -> RuntimeConfig:
    """Parse and check the structure (references, ratios, stage/matcher/ranker names); raise ConfigError listing
    every problem found. Environment checks (models, collections) are done by `config.checks.check_environment`."""
    doc = parse_document(text).scene_config
    known_matchers, known_rankers = set(matchers), set(rankers)
    problems: list[str] = []

    experiments: dict[str, ExperimentDoc] = {}
    for e in doc.experiments:
        if e.experiment_name in experiments:
            problems.append(f"experiment {e.experiment_name!r} is defined twice")
        experiments[e.experiment_name] = e

    referenced: set[str] = set()
    scenes: dict[str, Scene] = {}
    for sd in doc.scenes:
        if sd.name in scenes:
            problems.append(f"scene {sd.name!r} is defined twice")
        layers: list[Layer] = []
        seen_layers: set[str] = set()
        for ld in sd.layers:
            if ld.name in seen_layers:
                problems.append(f"scene {sd.name!r} layer {ld.name!r}: layer is listed twice")
            seen_layers.add(ld.name)
            layer = _resolve_layer(
                sd,
                ld,
                experiments=experiments,
                known_matchers=known_matchers,
                known_rankers=known_rankers,
                problems=problems,
            )
            referenced.update(r.experiment_name for r in ld.normal_layer_args)
            if layer is not None:
                layers.append(layer)
        problems.extend(_check_scene_shape(sd.name, layers))
        scenes[sd.name] = Scene(sd.name, tuple(layers))

    for name, ed in experiments.items():
        if name not in referenced:
            # Allowed (an experiment ramped down to nothing stays defined), but said, since it may be a typo.
            log.warning("experiment %r (layer %r) is not used by any layer", name, ed.layer_name)
    for name, scene in scenes.items():
        scenes[name] = _default_summary_collections(scene, problems)
    if problems:
        raise ConfigError(problems)
    return RuntimeConfig(
        scenes=scenes,
        text=text,
        origin=origin,
        digest=hashlib.sha256(text.encode()).hexdigest()[:12],
        warnings=tuple(_ignored_arguments(doc)),
    )


def _default_summary_collections(scene: Scene, problems: list[str]) -> Scene:
    """A summary experiment (or a cross_encoder rank experiment) without mongoCollection reads the collection of
    the scene's match experiment."""
    collections = sorted(
        {e.args.milvus_args.collection_name for la in scene.layers_of("match") for e in la.experiments}  # type: ignore[union-attr]
    )
    layers = []
    for layer in scene.layers:
        exps = []
        for e in layer.experiments:
            needs_collection = isinstance(e.args, SummaryArgs) or (
                isinstance(e.args, RankArgs) and e.args.ranker_name == CROSS_ENCODER
            )
            if needs_collection and not e.args.mongo_collection:  # type: ignore[union-attr]
                if len(collections) != 1:
                    problems.append(
                        f"experiment {e.name!r}: no mongoCollection, and the scene's match experiments use "
                        f"{len(collections)} collections ({', '.join(collections) or 'none'}): set mongoCollection"
                    )
                    continue
                exps.append(dataclasses.replace(e, args=e.args.model_copy(update={"mongo_collection": collections[0]})))
                continue
            exps.append(e)
        layers.append(dataclasses.replace(layer, experiments=tuple(exps)))
    return dataclasses.replace(scene, layers=tuple(layers))


# Keys every layer understands beside its stage's arguments.
_LAYER_KEYS = {"stage", "bucketizer", "salt"}


def _known_keys() -> set[str]:
    keys = set(_LAYER_KEYS)
    for model in _ARGS_BY_STAGE.values():
        for name, f in model.model_fields.items():
            keys.update({name, f.alias} - {None})  # type: ignore[arg-type]
    return keys


def _ignored_arguments(doc: SceneConfigDoc) -> list[str]:
    """Arguments no stage reads (the reference's processorName, a typo): accepted, and said to be ignored."""
    known = _known_keys()
    where: dict[str, list[str]] = {}
    for sd in doc.scenes:
        for key in sd.extra_scene_args.keys() - known:
            where.setdefault(key, []).append(f"scene {sd.name}")
        for ld in sd.layers:
            for key in ld.extra_layer_args.keys() - known:
                where.setdefault(key, []).append(f"layer {ld.name}")
    for ed in doc.experiments:
        for key in ed.extra_experiment_args.keys() - known:
            where.setdefault(key, []).append(f"experiment {ed.experiment_name}")
    return [f"argument {key!r} is not used by mmsearch and is ignored ({', '.join(w)})" for key, w in where.items()]


def _resolve_layer(
    sd: SceneDoc,
    ld: LayerDoc,
    *,
    experiments: dict[str, ExperimentDoc],
    known_matchers: set[str],
    known_rankers: set[str],
    problems: list[str],
) -> Layer | None:
    where = f"scene {sd.name!r} layer {ld.name!r}"
    layer_args = {**sd.extra_scene_args, **ld.extra_layer_args}
    stage = _stage_of(ld, layer_args)
    if stage is None:
        problems.append(
            f"{where}: unknown stage; name the layer '<stage>.<...>' or set extraLayerArgs.stage "
            f"to one of {', '.join(STAGE_ORDER)}"
        )
        return None
    bucketizer = str(layer_args.get("bucketizer", "sha256"))
    if bucketizer not in ("sha256", "random"):
        problems.append(f"{where}: bucketizer must be 'sha256' or 'random', not {bucketizer!r}")
        return None
    if len({r.experiment_name for r in ld.normal_layer_args}) != len(ld.normal_layer_args):
        problems.append(f"{where}: an experiment is listed twice")
    exps: list[Experiment] = []
    for ref in ld.normal_layer_args:
        ed = experiments.get(ref.experiment_name)
        if ed is None:
            problems.append(f"{where}: experiment {ref.experiment_name!r} is not defined under experiments")
            continue
        if ed.layer_name != ld.name:
            problems.append(
                f"{where}: experiment {ref.experiment_name!r} belongs to layer {ed.layer_name!r}, not this one"
            )
            continue
        merged = {**layer_args, **ed.extra_experiment_args}
        try:
            args: StageArgs = _ARGS_BY_STAGE[stage].model_validate(merged)  # type: ignore[assignment]
        except ValidationError as exc:
            problems.extend(_fmt_validation(f"experiment {ref.experiment_name!r} ({stage})", exc))
            continue
        problems.extend(_check_names(ref.experiment_name, args, known_matchers, known_rankers))
        exps.append(Experiment(ref.experiment_name, ld.name, stage, ref.ratio, args))
    if not exps or len(exps) != len(ld.normal_layer_args):
        return None
    salt = str(layer_args.get("salt", ld.name))
    return Layer(ld.name, stage, bucketizer, salt, tuple(exps), bucket_bounds([e.ratio for e in exps]))  # type: ignore[arg-type]


def _check_names(exp: str, args: StageArgs, matchers: set[str], rankers: set[str]) -> list[str]:
    out = []
    if isinstance(args, MatchArgs):
        for m in args.matcher_names:
            if m not in matchers:
                out.append(f"experiment {exp!r}: unknown matcher {m!r} (known: {', '.join(sorted(matchers))})")
    if isinstance(args, RankArgs) and args.ranker_name not in rankers:
        out.append(f"experiment {exp!r}: unknown ranker {args.ranker_name!r} (known: {', '.join(sorted(rankers))})")
    if isinstance(args, RankArgs) and args.ranker_name == CROSS_ENCODER and not args.document_field:
        out.append(f"experiment {exp!r}: rankerName cross_encoder needs documentField (the document text it scores)")
    return out


def _check_scene_shape(scene: str, layers: list[Layer]) -> list[str]:
    """Stages run in the order qp, match, rank, summary; qp and match are required, each stage at most once."""
    out = []
    kinds = [la.stage for la in layers]
    for kind in STAGE_ORDER:
        if kinds.count(kind) > 1:
            out.append(f"scene {scene!r}: more than one {kind} layer")
    if kinds != sorted(kinds, key=STAGE_ORDER.index):
        out.append(f"scene {scene!r}: layers must run in the order {' -> '.join(STAGE_ORDER)} (got {kinds})")
    for required in ("qp", "match"):
        if required not in kinds:
            out.append(f"scene {scene!r}: a {required} layer is required")
    qp_models = {
        e.args.model_name for la in layers if la.stage == "qp" for e in la.experiments if isinstance(e.args, QpArgs)
    }
    image_query = any(
        isinstance(e.args, QpArgs) and e.args.input == "image"
        for la in layers
        if la.stage == "qp"
        for e in la.experiments
    )
    for la in layers:
        for e in la.experiments:
            if isinstance(e.args, MatchArgs) and image_query and "BM25Matcher" in e.args.matcher_names:
                out.append(f"experiment {e.name!r}: BM25Matcher needs query text, and scene {scene!r} queries by image")
            if isinstance(e.args, MatchArgs) and qp_models and e.args.model_name not in qp_models:
                out.append(
                    f"experiment {e.name!r}: modelName {e.args.model_name!r} differs from the qp layer's model(s) "
                    f"{sorted(qp_models)}: the tokenizer's tensors must be the model's inputs"
                )
    return out
