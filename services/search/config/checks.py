"""Checks of a parsed config against the world: the model repository and the Milvus collections.

A model or collection that is simply absent disables its scene (with how to enable it) so that the other scenes
keep serving: a stack without CLIP weights still answers QA. A collection whose recorded model differs from the
experiment's model, or whose vector field or dimension does not match, is refused outright: it would return
confident nonsense.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mmsearch.collection_meta import CollectionMeta
from mmsearch.model_repo import ModelKind, ModelManifest
from services.search.config.model import CROSS_ENCODER, MatchArgs, QpArgs, RankArgs, RuntimeConfig, Scene
from services.search.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectionStatus:
    exists: bool
    meta: CollectionMeta | None = None  # None for a collection mmsearch did not write


DescribeCollection = Callable[[str], CollectionStatus]

_INGEST_HINT = {
    "faq_qa": "`mmsearch ingest qa`",
    "photos": "`mmsearch ingest images`",
}


def check_environment(
    config: RuntimeConfig,
    *,
    models: Mapping[str, ModelManifest],
    model_repo_root: str,
    describe_collection: DescribeCollection,
) -> RuntimeConfig:
    problems: list[str] = []
    warnings: list[str] = list(config.warnings)
    scenes: dict[str, Scene] = {}
    described: dict[str, CollectionStatus] = {}
    for scene in config.scenes.values():
        missing: list[str] = []
        for layer in scene.layers:
            for exp in layer.experiments:
                args = exp.args
                if isinstance(args, QpArgs | MatchArgs) and args.model_name not in models:
                    missing.append(
                        f"model {args.model_name!r} is not in the model repository {model_repo_root} "
                        f"(export it with `mmsearch export`, then the model server loads it)"
                    )
                    continue
                if isinstance(args, RankArgs) and args.ranker_name == CROSS_ENCODER:
                    found = models.get(args.model_name)
                    if found is None:
                        missing.append(
                            f"cross-encoder {args.model_name or '(no modelName)'!r} of experiment {exp.name!r} is not "
                            f"in the model repository {model_repo_root} (export one with `mmsearch export "
                            "cross-encoder`, and set modelName in the rank experiment)"
                        )
                    elif found.kind != ModelKind.CROSS_ENCODER:
                        problems.append(
                            f"experiment {exp.name!r}: rankerName cross_encoder needs a cross_encoder model, and "
                            f"{args.model_name!r} is a {found.kind} model (set modelName in the rank experiment: the "
                            "scene's modelName is the embedding model)"
                        )
                    continue
                if not isinstance(args, MatchArgs):
                    continue
                name = args.milvus_args.collection_name
                if name not in described:
                    described[name] = describe_collection(name)
                status = described[name]
                if not status.exists:
                    hint = _INGEST_HINT.get(name, "`mmsearch ingest`")
                    missing.append(f"collection {name!r} does not exist in Milvus (build it with {hint})")
                    continue
                problems.extend(_check_collection(exp.name, args, status.meta, models[args.model_name]))
                if status.meta is not None:
                    warnings.extend(_search_params_warnings(exp.name, args, status.meta))
        reason = "; ".join(dict.fromkeys(missing)) if missing else None
        # Not logged here: validation re-runs every few seconds while a scene is disabled; the config manager
        # reports disabled scenes when a config is applied and when their availability changes.
        scenes[scene.name] = dataclasses.replace(scene, disabled_reason=reason)
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(config, scenes=scenes, warnings=tuple(dict.fromkeys(warnings)))


# The search parameters each index type reads; any other is ignored by Milvus, which is worth saying.
_SEARCH_PARAMS = {"HNSW": {"ef"}, "IVF_FLAT": {"nprobe"}, "FLAT": set[str]()}


def _search_params_warnings(exp: str, args: MatchArgs, meta: CollectionMeta) -> list[str]:
    fits = _SEARCH_PARAMS.get(meta.index_type)
    if fits is None:
        return []
    name = args.milvus_args.collection_name
    takes = f"it takes {', '.join(sorted(fits))}" if fits else "it takes none"
    return [
        f"experiment {exp!r}: searchParams {param!r} does not apply to collection {name!r}'s {meta.index_type} "
        f"index and is ignored ({takes})"
        for param in sorted(set(args.milvus_args.search_params) - fits)
    ]


def _check_collection(exp: str, args: MatchArgs, meta: CollectionMeta | None, manifest: ModelManifest) -> list[str]:
    name = args.milvus_args.collection_name
    if meta is None:
        log.warning("collection %s records no mmsearch metadata; its model cannot be checked", name)
        return []
    out = []
    # A query tower may differ from the document tower it pairs with (CLIP text queries, image documents).
    accepted = {manifest.key, *([manifest.pairs_with] if manifest.pairs_with else [])}
    if meta.model_key not in accepted:
        out.append(
            f"experiment {exp!r}: collection {name!r} was built with model {meta.model_key!r} but the experiment "
            f"queries with {args.model_name!r}: re-index the collection or change modelName"
        )
    if meta.vector_field != args.milvus_args.vector_field:
        out.append(
            f"experiment {exp!r}: collection {name!r} has vector field {meta.vector_field!r}, "
            f"not {args.milvus_args.vector_field!r}"
        )
    if args.lexical_field and args.lexical_field not in meta.lexical_fields:
        have = ", ".join(meta.lexical_fields) or "none"
        out.append(
            f"experiment {exp!r}: BM25Matcher searches lexical field {args.lexical_field!r}, which collection "
            f"{name!r} does not have (lexical fields: {have}): ingest it with --lexical-field {args.lexical_field}"
        )
    if meta.dim != manifest.embedding_dim:
        out.append(
            f"experiment {exp!r}: collection {name!r} holds {meta.dim}-d vectors but model "
            f"{manifest.key!r} gives {manifest.embedding_dim}-d"
        )
    return out
