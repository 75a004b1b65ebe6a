"""The reference's `scene-config` YAML, parsed into typed models and resolved into an immutable runtime config.

Arguments overlay as in the reference: extraSceneArgs, then the layer's extraLayerArgs, then the experiment's
extraExperimentArgs (later wins). The merged arguments are parsed into the typed arguments of the layer's stage,
so a typo in a key that a stage knows is an error before the config is used, not a KeyError under traffic.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class MatchArgs(_Args):
    model_name: str = Field(alias="modelName", min_length=1)
    vector_name: str = Field(default="sentence_embedding", alias="vectorName")
    matcher_names: list[str] = Field(alias="matcherNames", min_length=1)
    max_reservation: int = Field(default=200, alias="maxReservation", gt=0, le=16384)
    milvus_args: MilvusArgs = Field(alias="milvusArgs")
    # Fields a request may filter on (`filters` in the body), with their kind: "array" (ARRAY<VARCHAR>, matched
    # with ARRAY_CONTAINS) or "scalar"; a list means all scalar. Any other field is refused.
    filter_fields: dict[str, Literal["array", "scalar"]] = Field(default_factory=dict, alias="filterFields")

    @field_validator("filter_fields", mode="before")
    @classmethod
    def _list_is_scalar(cls, v: Any) -> Any:
        return dict.fromkeys(v, "scalar") if isinstance(v, list) else v


class RankArgs(_Args):
    ranker_name: str = Field(default="dummy", alias="rankerName", min_length=1)
    max_reservation: int = Field(default=200, alias="maxReservation", gt=0, le=16384)
    mmr_lambda: float = Field(default=0.7, alias="mmrLambda", ge=0, le=1)
    blend_weights: dict[str, float] = Field(default_factory=dict, alias="blendWeights")


class SummaryArgs(_Args):
    summary_fields: list[str] = Field(alias="summaryFields", min_length=1)
    mongo_collection: str = Field(alias="mongoCollection", min_length=1)


StageArgs = QpArgs | MatchArgs | RankArgs | SummaryArgs
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

    def experiments(self) -> Iterable[Experiment]:
        for scene in self.scenes.values():
            for layer in scene.layers:
                yield from layer.experiments


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
    matchers: Iterable[str],
    rankers: Iterable[str],
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
    if problems:
        raise ConfigError(problems)
    return RuntimeConfig(scenes=scenes, text=text, origin=origin, digest=hashlib.sha256(text.encode()).hexdigest()[:12])


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
    for la in layers:
        for e in la.experiments:
            if isinstance(e.args, MatchArgs) and qp_models and e.args.model_name not in qp_models:
                out.append(
                    f"experiment {e.name!r}: modelName {e.args.model_name!r} differs from the qp layer's model(s) "
                    f"{sorted(qp_models)}: the tokenizer's tensors must be the model's inputs"
                )
    return out
