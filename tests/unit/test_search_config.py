"""A/B config: parsing the reference's scene-config YAML, the overlay, structural and environment validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mmsearch.collection_meta import CollectionMeta
from mmsearch.model_repo import ModelKind, ModelManifest, ModelSource, TensorSpec
from services.search.config.checks import CollectionStatus, check_environment
from services.search.config.manager import parse_config
from services.search.config.model import MatchArgs, RankArgs, RuntimeConfig, SummaryArgs
from services.search.errors import ConfigError

DEFAULT = Path(__file__).resolve().parents[2] / "deploy" / "ab-config.yaml"


def _doc() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(DEFAULT.read_text())  # type: ignore[no-any-return]


def _parse(doc: dict) -> RuntimeConfig:  # type: ignore[type-arg]
    return parse_config(yaml.safe_dump(doc), "test")


def _problems(doc: dict) -> str:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as info:
        _parse(doc)
    return "\n".join(info.value.problems)


def _manifest(key: str, dim: int = 384, pairs_with: str | None = None) -> ModelManifest:
    return ModelManifest(
        key=key,
        kind=ModelKind.TEXT_EMBEDDING,
        inputs=[TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"])],
        outputs=[TensorSpec(name="sentence_embedding", dtype="float32", shape=["batch", dim])],
        embedding_dim=dim,
        normalized=True,
        pairs_with=pairs_with,
        source=ModelSource(note="test"),
    )


def _meta(model: str = "minilm", dim: int = 384, field: str = "question_emb") -> CollectionMeta:
    """faq_qa as ingest builds it for the demo config: questions also searchable by BM25."""
    return CollectionMeta(
        model_key=model,
        dim=dim,
        vector_field=field,
        metric="IP",
        index_type="FLAT",
        corpus="faq_qa",
        count=3,
        lexical_fields=("question",),
        analyzer="standard",
    )


CHATTERBOT = CollectionStatus(True, _meta().model_copy(update={"corpus": "chatterbot_qa"}))
NO_DOCUMENTS = CollectionStatus(False)  # the demo's document corpus is not ingested: its scene is disabled


def test_default_config_parses_with_overlay_and_ab_layer() -> None:
    cfg = parse_config(DEFAULT.read_text(), "file")
    qa = cfg.scenes["questionAnswer"]
    assert [la.stage for la in qa.layers] == ["qp", "match", "rank", "summary"]
    match = qa.layer("match.qa")
    assert match is not None
    args = match.experiments[0].args
    assert isinstance(args, MatchArgs)
    # extraSceneArgs reach the stage: modelName and maxReservation come from the scene.
    assert args.model_name == "minilm"
    assert args.max_reservation == 50
    assert args.milvus_args.collection_name == "faq_qa"
    assert args.milvus_args.vector_field == "question_emb"
    assert args.filter_fields == {"category": "array"}
    rank = qa.layer("rank.qa")
    assert rank is not None
    assert [e.name for e in rank.experiments] == ["rank.qa.dummy", "rank.qa.mmr"]
    assert rank.bounds == (5000, 10000)
    summary = qa.layer("summary.qa")
    assert summary is not None
    sargs = summary.experiments[0].args
    assert isinstance(sargs, SummaryArgs)
    assert sargs.summary_fields == ["question", "answer", "category"]
    assert set(cfg.scenes) == {"questionAnswer", "chitchat", "documents", "textToImage", "imageToImage"}


def test_experiment_args_override_layer_and_scene_args() -> None:
    doc = _doc()
    scene = doc["scene-config"]["scenes"][0]
    scene["extraSceneArgs"]["mmrLambda"] = 0.1
    scene["layers"][2]["extraLayerArgs"]["mmrLambda"] = 0.2  # rank.qa
    cfg = _parse(doc)
    rank = cfg.scenes["questionAnswer"].layer("rank.qa")
    assert rank is not None
    by_name = {e.name: e.args for e in rank.experiments}
    assert isinstance(by_name["rank.qa.dummy"], RankArgs)
    assert isinstance(by_name["rank.qa.mmr"], RankArgs)
    assert by_name["rank.qa.dummy"].mmr_lambda == 0.2  # the layer beats the scene
    assert by_name["rank.qa.mmr"].mmr_lambda == 0.7  # the experiment beats both


def test_reference_style_search_params_json_string() -> None:
    doc = _doc()
    exp = next(e for e in doc["scene-config"]["experiments"] if e["experimentName"] == "match.qa.base")
    exp["extraExperimentArgs"]["milvusArgs"]["searchParams"] = '{"nprobe":128}'
    exp["extraExperimentArgs"]["milvusArgs"]["outFields"] = "id, question"
    args = _parse(doc).scenes["questionAnswer"].layers[1].experiments[0].args
    assert isinstance(args, MatchArgs)
    assert args.milvus_args.search_params == {"nprobe": 128}
    assert args.milvus_args.out_fields == ["id", "question"]


def test_unknown_experiment_reference_is_rejected() -> None:
    doc = _doc()
    doc["scene-config"]["scenes"][0]["layers"][2]["normalLayerArgs"].append(
        {"experimentName": "rank.qa.nope", "ratio": 0.2}
    )
    assert "experiment 'rank.qa.nope' is not defined" in _problems(doc)


def test_experiment_of_another_layer_is_rejected() -> None:
    doc = _doc()
    doc["scene-config"]["scenes"][0]["layers"][2]["normalLayerArgs"][0]["experimentName"] = "qp.qa.base"
    out = _problems(doc)
    assert "belongs to layer 'qp.qa'" in out


@pytest.mark.parametrize("ratio", [0, -0.5])
def test_non_positive_ratio_is_rejected(ratio: float) -> None:
    doc = _doc()
    doc["scene-config"]["scenes"][0]["layers"][2]["normalLayerArgs"][1]["ratio"] = ratio
    assert "ratio" in _problems(doc)


def test_unknown_ranker_and_matcher_are_rejected() -> None:
    doc = _doc()
    for e in doc["scene-config"]["experiments"]:
        if e["experimentName"] == "rank.qa.mmr":
            e["extraExperimentArgs"]["rankerName"] = "xgboost"
        if e["experimentName"] == "match.qa.base":
            e["extraExperimentArgs"]["matcherNames"] = ["ANNMatcher", "RecencyMatcher"]
    out = _problems(doc)
    assert "unknown ranker 'xgboost'" in out
    assert "unknown matcher 'RecencyMatcher'" in out


def test_unknown_stage_and_bucketizer_are_rejected() -> None:
    doc = _doc()
    layers = doc["scene-config"]["scenes"][0]["layers"]
    layers[0]["name"] = "prep.qa"  # neither a stage prefix nor extraLayerArgs.stage
    for e in doc["scene-config"]["experiments"]:
        if e["layerName"] == "qp.qa":
            e["layerName"] = "prep.qa"
    layers[1]["extraLayerArgs"]["bucketizer"] = "md5"
    out = _problems(doc)
    assert "unknown stage" in out
    assert "bucketizer must be 'sha256' or 'random'" in out


def test_stage_out_of_order_and_missing_required_args() -> None:
    doc = _doc()
    layers = doc["scene-config"]["scenes"][0]["layers"]
    layers[2], layers[1] = layers[1], layers[2]
    for e in doc["scene-config"]["experiments"]:
        if e["experimentName"] == "summary.qa.base":
            del e["extraExperimentArgs"]["summaryFields"]
    out = _problems(doc)
    assert "must run in the order" in out
    assert "summaryFields" in out


def test_not_yaml_and_wrong_top_level() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("scene-config: [", "t")
    with pytest.raises(ConfigError, match="scene-config"):
        parse_config("- 1\n- 2\n", "t")


def test_unused_experiment_is_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    doc = _doc()
    doc["scene-config"]["experiments"].append(
        {"layerName": "rank.qa", "experimentName": "rank.qa.orphan", "extraExperimentArgs": {}}
    )
    with caplog.at_level("WARNING"):
        _parse(doc)
    assert "rank.qa.orphan" in caplog.text


def test_missing_model_or_collection_disables_only_that_scene() -> None:
    cfg = parse_config(DEFAULT.read_text(), "file")
    status = {
        "faq_qa": CollectionStatus(True, _meta()),
        "chatterbot_qa": CHATTERBOT,
        "documents": NO_DOCUMENTS,
        "photos": CollectionStatus(False),
    }
    out = check_environment(
        cfg, models={"minilm": _manifest("minilm")}, model_repo_root="/repo", describe_collection=status.__getitem__
    )
    assert out.scenes["questionAnswer"].disabled_reason is None
    reason = out.scenes["textToImage"].disabled_reason
    assert reason is not None
    assert "model 'clip-text' is not in the model repository /repo" in reason
    assert "mmsearch export" in reason
    # With the models present, the missing collection is what disables the scene, with how to build it.
    models = {"minilm": _manifest("minilm"), "clip-text": _manifest("clip-text", 512, "clip-image")}
    models["clip-image"] = _manifest("clip-image", 512, "clip-text")
    out = check_environment(cfg, models=models, model_repo_root="/repo", describe_collection=status.__getitem__)
    reason = out.scenes["textToImage"].disabled_reason
    assert reason is not None
    assert "collection 'photos' does not exist" in reason
    assert "mmsearch ingest images" in reason


def test_collection_built_with_another_model_is_refused() -> None:
    cfg = parse_config(DEFAULT.read_text(), "file")
    status = {
        "faq_qa": CollectionStatus(True, _meta(model="other-sbert", dim=768)),
        "chatterbot_qa": CHATTERBOT,
        "documents": NO_DOCUMENTS,
        "photos": CollectionStatus(False),
    }
    with pytest.raises(ConfigError) as info:
        check_environment(
            cfg, models={"minilm": _manifest("minilm")}, model_repo_root="/r", describe_collection=status.__getitem__
        )
    text = "\n".join(info.value.problems)
    assert "built with model 'other-sbert'" in text
    assert "768-d" in text


def test_query_tower_paired_with_document_tower_is_accepted() -> None:
    cfg = parse_config(DEFAULT.read_text(), "file")
    photos = CollectionMeta(
        model_key="clip-image",
        dim=512,
        vector_field="image_emb",
        metric="IP",
        index_type="FLAT",
        corpus="photos",
        count=3,
    )
    status = {
        "faq_qa": CollectionStatus(True, _meta()),
        "chatterbot_qa": CHATTERBOT,
        "documents": CollectionStatus(
            True,
            _meta().model_copy(
                update={
                    "corpus": "documents",
                    "vector_field": "passage_emb",
                    "encode_template": "{title}. {text}",
                    "lexical_fields": ("passage",),
                }
            ),
        ),
        "photos": CollectionStatus(True, photos),
    }
    models = {
        "minilm": _manifest("minilm"),
        "clip-text": _manifest("clip-text", 512, "clip-image"),
        "clip-image": _manifest("clip-image", 512, "clip-text"),
    }
    out = check_environment(cfg, models=models, model_repo_root="/r", describe_collection=status.__getitem__)
    assert all(s.disabled_reason is None for s in out.scenes.values())


# --- configs written for the reference, and what a config says it ignores ----------------------------

REFERENCE_SHAPED = """
scene-config:
  scenes:
    - name: questionAnswer
      extraSceneArgs: {}
      layers:
        - name: qp.qa
          normalLayerArgs:
            - {experimentName: qp.qa.base, ratio: 1.0}
        - name: match.qa
          extraLayerArgs: {bucketizer: sha256}
          normalLayerArgs:
            - {experimentName: match.qa.base, ratio: 0.5}
            - {experimentName: match.qa.v2,   ratio: 0.5}
        - name: rank.qa
          normalLayerArgs:
            - {experimentName: rank.qa.base, ratio: 1.0}
        - name: summary.qa
          normalLayerArgs:
            - {experimentName: summary.qa.base, ratio: 1.0}
  experiments:
    - layerName: qp.qa
      experimentName: qp.qa.base
      extraExperimentArgs: {modelName: minilm, processorName: qa_processor}
    - layerName: match.qa
      experimentName: match.qa.base
      extraExperimentArgs:
        modelName: minilm
        vectorName: sentence_embedding
        matcherNames: [ANNMatcher]
        maxReservation: 200
        milvusArgs: {collectionName: faq_qa, outFields: id, vectorField: question_emb,
                     searchParams: '{"nprobe":128}'}
    - layerName: match.qa
      experimentName: match.qa.v2
      extraExperimentArgs:
        modelName: minilm
        vectorName: sentence_embedding
        matcherNames: [ANNMatcher]
        maxReservation: 100
        milvusArgs: {collectionName: faq_qa, outFields: id, vectorField: question_emb,
                     searchParams: '{"nprobe":64}'}
    - layerName: rank.qa
      experimentName: rank.qa.base
      extraExperimentArgs: {rankerName: dummy, maxReservation: 200}
    - layerName: summary.qa
      experimentName: summary.qa.base
      extraExperimentArgs: {summaryFields: [question, answer, category]}
"""


def test_a_config_in_the_reference_shape_works_with_names_changed_only() -> None:
    cfg = parse_config(REFERENCE_SHAPED, "reference")
    summary = cfg.scenes["questionAnswer"].layer("summary.qa")
    assert summary is not None
    args = summary.experiments[0].args
    assert isinstance(args, SummaryArgs)
    assert args.mongo_collection == "faq_qa"  # no mongoCollection: the match experiment's collection
    # The reference's processorName means nothing here: said, not silently dropped.
    assert cfg.warnings == ("argument 'processorName' is not used by mmsearch and is ignored (experiment qp.qa.base)",)
    checked = check_environment(
        cfg,
        models={"minilm": _manifest("minilm")},
        model_repo_root="/models",
        describe_collection=lambda name: CollectionStatus(True, _meta().model_copy(update={"index_type": "HNSW"})),
    )
    # nprobe is IVF's; on an HNSW collection Milvus ignores it, which the operator should know.
    assert [w for w in checked.warnings if "searchParams" in w] == [
        "experiment 'match.qa.base': searchParams 'nprobe' does not apply to collection 'faq_qa''s HNSW index "
        "and is ignored (it takes ef)",
        "experiment 'match.qa.v2': searchParams 'nprobe' does not apply to collection 'faq_qa''s HNSW index "
        "and is ignored (it takes ef)",
    ]


def test_summary_without_a_collection_needs_one_match_collection() -> None:
    doc = yaml.safe_load(REFERENCE_SHAPED)
    v2 = next(e for e in doc["scene-config"]["experiments"] if e["experimentName"] == "match.qa.v2")
    v2["extraExperimentArgs"]["milvusArgs"]["collectionName"] = "faq_qa_v2"
    assert "match experiments use 2 collections (faq_qa, faq_qa_v2): set mongoCollection" in _problems(doc)


def test_bm25_on_a_collection_without_that_lexical_field_is_refused() -> None:
    cfg = parse_config(DEFAULT.read_text(), "file")
    with pytest.raises(ConfigError) as info:
        check_environment(
            cfg,
            models={"minilm": _manifest("minilm")},
            model_repo_root="/models",
            describe_collection=lambda name: CollectionStatus(
                name == "faq_qa", _meta().model_copy(update={"lexical_fields": ()})
            ),
        )
    assert "BM25Matcher searches lexical field 'question', which collection 'faq_qa' does not have (lexical " in (
        str(info.value)
    )
    assert "--lexical-field question" in str(info.value)


def test_bm25_needs_query_text() -> None:
    doc = _doc()
    for e in doc["scene-config"]["experiments"]:
        if e["experimentName"] == "match.i2i.base":
            e["extraExperimentArgs"].update(matcherNames=["ANNMatcher", "BM25Matcher"], lexicalField="name")
    assert "BM25Matcher needs query text, and scene 'imageToImage' queries by image" in _problems(doc)
