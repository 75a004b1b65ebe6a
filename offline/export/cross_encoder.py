"""Cross-encoder -> ONNX: a sentence-transformers `CrossEncoder` folder or any Hugging Face
`*ForSequenceClassification` model scores (query, document) pairs.

Inputs are the tokenizer's model inputs for a pair (int64 [batch, sequence]); the output is `logits` [batch,
labels]. The manifest (kind `cross_encoder`) records how logits become a score: the activation (none, sigmoid or
softmax) and, with several labels, which label is "relevant". The parity pairs are tokenised by the same
`mmsearch.runtime.text.TextPreprocessor.prep_pairs` the tokenizer service uses, and checked against the
model's own tokenizer and against PyTorch's logits (exact order of the scores, logits within FP32_MAX_ABS_DIFF).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from mmsearch.model_repo import (
    ModelKind,
    ModelManifest,
    ModelRepository,
    Parity,
    TensorSpec,
    validate_key,
    write_manifest,
)
from offline.export.errors import ExportError
from offline.export.graph_io import declare_output_shapes
from offline.export.parity import PARITY_TEXTS, ParityCase, ort_session
from offline.export.provenance import export_onnx, export_record
from offline.export.rank_agreement import DEFAULT_GATE, RankSample, enforce_gate, rank_agreement
from offline.export.source import WEIGHT_FILES, require_files, resolve_source
from offline.export.text_inputs import normalizer_lowercases
from offline.export.variants import VariantRequest, VariantResult, write_variants

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
Activation = Literal["none", "sigmoid", "softmax"]
# A cross-encoder's logits are unbounded (often 5..15), so the gate is an absolute difference, not a cosine
# (a [batch, 1] output has no direction to compare).
FP32_MAX_ABS_DIFF = 1e-3

# Queries with candidate documents of mixed length, English and Chinese, one of them longer than most models'
# maximum so the document-only truncation is exercised.
PARITY_QUERY_DOCS: list[tuple[str, list[str]]] = [
    (
        "how do I apply for a building permit?",
        [
            "Apply online with the city's form; a permit takes about ten weeks.",
            "Cats sleep up to sixteen hours a day.",
            "Building permits are issued by the planning office after a review of the drawings. " * 40,
        ],
    ),
    ("如何申请建筑许可证？", ["向市政府规划办公室提交申请表和图纸。", "今天天气很好。"]),
    ("hello", ["hi there", "Mixed 中英文 text with numbers 12345!"]),
]
PARITY_DESCRIPTION = "7 (query, document) pairs of mixed length, English and Chinese, one truncated, one padded batch"
EXPORT_SAMPLE: list[tuple[str, list[str]]] = [("tracing sample", ["a document", "a second, longer document text"])]


def export_cross_encoder(
    source: str,
    repo: ModelRepository,
    key: str,
    *,
    force: bool = False,
    variants: VariantRequest | None = None,
    revision: str | None = None,
    activation: Activation | None = None,
    score_label: int | None = None,
    rank_sample: RankSample | None = None,
    min_top10_overlap: float = DEFAULT_GATE,
) -> ModelManifest:
    """Export, check parity and publish `key`; raises ExportError (nothing published) on any problem.

    activation / score_label: the arguments win, else the model's own sentence-transformers config
    (`activation_fn`), else sigmoid for one label and softmax over label 1 for two or more.
    rank_sample / min_top10_overlap: the rank gate of the int8 / fp16 variants (rank_agreement.py); the default
    sample ranks the parity texts.
    """
    validate_key(key)
    if key in repo and not force:
        raise ExportError(f"model {key!r} already exists in {repo.root}; pass --force to replace it")
    resolved = resolve_source(source, revision=revision)
    folder = resolved.folder
    require_files(
        folder,
        "sequence-classification (cross-encoder) model",
        [("config.json",), (*WEIGHT_FILES, "model.safetensors.index.json"), ("tokenizer.json",)],
    )
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    log.info("loading sequence-classification model from %s", folder)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder))
    model.eval()
    # From the loaded model: config.json leaves the label count out when it is transformers' default (2).
    labels = int(model.config.num_labels)
    chosen, label = _score_rule(config, labels, activation, score_label)
    hf_tokenizer = AutoTokenizer.from_pretrained(str(folder))
    names = [n for n in hf_tokenizer.model_input_names if n in ("input_ids", "attention_mask", "token_type_ids")]
    max_len = _max_len(config, hf_tokenizer)

    with repo.writer(key, force=force) as staging:
        shutil.copyfile(folder / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        tokenizer_json = json.loads((staging / TOKENIZER_FILE).read_text(encoding="utf-8"))
        draft = ModelManifest(
            key=key,
            kind=ModelKind.CROSS_ENCODER,
            inputs=[TensorSpec(name=n, dtype="int64", shape=["batch", "sequence"]) for n in names],
            outputs=[TensorSpec(name="logits", dtype="float32", shape=["batch", labels])],
            embedding_output="logits",
            embedding_dim=labels,
            normalized=False,
            max_seq_len=max_len,
            do_lower_case=normalizer_lowercases(tokenizer_json.get("normalizer")),
            tokenizer_file=TOKENIZER_FILE,
            activation=chosen,
            score_label=label,
            source=resolved.record,
        )
        inputs = pair_tensors(staging / TOKENIZER_FILE, draft, PARITY_QUERY_DOCS)
        _check_tokenizer_agrees(hf_tokenizer, inputs, max_len)
        graph = _Graph(model, names)
        reference = graph.logits(inputs)
        onnx_path = staging / "model.onnx"
        # Traced on other shapes than the parity batch, so a shape frozen into the graph cannot pass unnoticed.
        graph.export(onnx_path, pair_tensors(staging / TOKENIZER_FILE, draft, EXPORT_SAMPLE))
        declare_output_shapes(onnx_path, draft.outputs)
        case = ParityCase(inputs, reference, "logits", PARITY_DESCRIPTION)
        parity = case.check("fp32", onnx_path)
        log.info("parity fp32: max abs diff %.2e", parity.max_abs_diff)
        _enforce(parity, key, reference, onnx_path, inputs)
        extra = write_variants(onnx_path, variants or VariantRequest(), case)
        sample = rank_sample or builtin_rank_sample()
        ranked = [
            _rank_gated(key, v, fp32=onnx_path, staging=staging, draft=draft, sample=sample, gate=min_top10_overlap)
            for v in extra
        ]
        manifest = draft.model_copy(
            update={
                "variants": {v.name: v.file for v in extra},
                "parity": [parity, *ranked],
                "export": export_record(
                    architecture=(config.get("architectures") or ["?"])[0],
                    labels=labels,
                    variant_settings={v.name: v.settings for v in extra},
                ),
            }
        )
        write_manifest(staging, ModelManifest.model_validate(manifest.model_dump()))
    log.info("published cross-encoder %s (%d label(s), %s) in %s", key, labels, chosen, repo.root)
    return manifest


def builtin_rank_sample() -> RankSample:
    """Every parity text and document ranked against each parity query and text: the default rank sample. The
    document longer than the model's window is left out: padded to it, every query's batch would cost 512 tokens a
    pair for nothing the gate needs."""
    texts = [*PARITY_TEXTS, *(d for _, docs in PARITY_QUERY_DOCS for d in docs)]
    pool = list(dict.fromkeys(t for t in texts if len(t) < 1000))
    queries = list(dict.fromkeys([*(q for q, _ in PARITY_QUERY_DOCS), *PARITY_TEXTS]))
    return RankSample(
        [(q, pool) for q in queries],
        f"{len(queries)} queries x {len(pool)} documents: the export's parity texts, each ranked against all",
    )


def _rank_gated(
    key: str,
    variant: VariantResult,
    *,
    fp32: Path,
    staging: Path,
    draft: ModelManifest,
    sample: RankSample,
    gate: float,
) -> Parity:
    from tokenizers import Tokenizer

    from mmsearch.runtime.pair_scores import pair_scores
    from mmsearch.runtime.text import TextPreprocessor

    prep = TextPreprocessor(Tokenizer.from_file(str(staging / TOKENIZER_FILE)), draft)
    sessions: dict[Path, Any] = {}

    def score(path: Path, query: str, docs: list[str]) -> npt.NDArray[Any]:
        if path not in sessions:
            sessions[path] = ort_session(path)
        inputs = prep.prep_pairs([(query, d) for d in docs]).tensors
        (logits,) = sessions[path].run(["logits"], {i.name: inputs[i.name] for i in sessions[path].get_inputs()})
        return pair_scores(np.asarray(logits, dtype=np.float32), draft)

    agreement = rank_agreement(score, fp32, staging / variant.file, sample=sample, gate=gate)
    log.info(
        "rank agreement %s: keeps %.2f of fp32's top %d (lowest %.2f) on %s; gate %g",
        variant.name,
        agreement.mean_overlap,
        agreement.k,
        agreement.min_overlap,
        agreement.inputs,
        gate,
    )
    enforce_gate(key, variant.name, agreement)
    return variant.parity.model_copy(update={"rank": agreement})


def pair_tensors(
    tokenizer_file: Path, manifest: ModelManifest, groups: list[tuple[str, list[str]]]
) -> dict[str, npt.NDArray[np.int64]]:
    """One padded batch of every (query, document) pair of `groups`, tokenised by the runtime's preprocessor."""
    from tokenizers import Tokenizer

    from mmsearch.runtime.text import TextPreprocessor

    prep = TextPreprocessor(Tokenizer.from_file(str(tokenizer_file)), manifest)
    return prep.prep_pairs([(q, d) for q, docs in groups for d in docs]).tensors


def _score_rule(
    config: dict[str, Any], labels: int, activation: Activation | None, score_label: int | None
) -> tuple[Activation, int]:
    own = str((config.get("sentence_transformers") or {}).get("activation_fn") or "")
    if activation is None:
        if own.endswith("Sigmoid"):
            activation = "sigmoid"
        elif own.endswith("Identity"):
            activation = "none"
        elif own.endswith("Softmax"):
            activation = "softmax"
        else:
            activation = "sigmoid" if labels == 1 else "softmax"
    if score_label is None:
        score_label = 0 if labels == 1 else 1
    if not 0 <= score_label < labels:
        raise ExportError(f"--score-label {score_label}: the model has {labels} label(s) (0..{labels - 1})")
    if activation == "softmax" and labels < 2:
        raise ExportError("--activation softmax needs a model with two or more labels; this one has one")
    return activation, score_label


def _max_len(config: dict[str, Any], hf_tokenizer: Any) -> int | None:
    limits = [int(config["max_position_embeddings"])] if config.get("max_position_embeddings") else []
    tok_max = getattr(hf_tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:  # transformers' "no limit" is a huge number
        limits.append(tok_max)
    return min(limits) if limits else None


def _check_tokenizer_agrees(hf_tokenizer: Any, ours: dict[str, npt.NDArray[np.int64]], max_len: int | None) -> None:
    """The runtime's pair tokenisation must equal the model's own tokenizer with truncation="only_second"."""
    pairs = [(q, d) for q, docs in PARITY_QUERY_DOCS for d in docs]
    theirs = hf_tokenizer(
        [q for q, _ in pairs],
        [d for _, d in pairs],
        truncation="only_second" if max_len else False,
        max_length=max_len,
        padding=True,
        return_tensors="np",
    )
    for name, mine in ours.items():
        expected = np.asarray(theirs[name])
        if expected.shape != mine.shape or not np.array_equal(expected, mine):
            raise ExportError(
                f"the exported tokenizer.json tokenises (query, document) pairs differently from the model's "
                f"tokenizer ({name}: {mine.shape} vs {expected.shape}); the online side would not reproduce the model"
            )


def _enforce(
    parity: Parity,
    key: str,
    reference: npt.NDArray[np.float32],
    onnx_path: Path,
    inputs: dict[str, npt.NDArray[np.int64]],
) -> None:
    from offline.export.parity import run_onnx

    candidate = run_onnx(onnx_path, inputs, "logits")
    same_order = all(
        np.array_equal(np.argsort(-reference[:, j], kind="stable"), np.argsort(-candidate[:, j], kind="stable"))
        for j in range(reference.shape[1])
    )
    if not parity.max_abs_diff <= FP32_MAX_ABS_DIFF or not same_order:  # also catches NaN
        raise ExportError(
            f"export of {key!r} failed its parity check: ONNX Runtime vs PyTorch logits max abs diff "
            f"{parity.max_abs_diff:.2e} (limit {FP32_MAX_ABS_DIFF:g}), same order: {same_order}, on "
            f"{parity.inputs}. The graph does not reproduce the model; nothing was published"
        )


class _Graph:
    """The classifier as a function of positional token tensors, for tracing."""

    def __init__(self, model: Any, names: list[str]) -> None:
        import torch

        class _Module(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
                out: torch.Tensor = self.model(**dict(zip(names, tensors, strict=True))).logits
                return out

        self.module = _Module().eval()
        self.names = names

    def _args(self, inputs: dict[str, npt.NDArray[np.int64]]) -> tuple[Any, ...]:
        import torch

        return tuple(torch.from_numpy(inputs[n]) for n in self.names)

    def logits(self, inputs: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        import torch

        with torch.inference_mode():
            out = self.module(*self._args(inputs))
        return np.asarray(out.float().numpy(), dtype=np.float32)

    def export(self, path: Path, inputs: dict[str, npt.NDArray[np.int64]]) -> None:
        axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in self.names}
        axes["logits"] = {0: "batch"}
        export_onnx(
            self.module, self._args(inputs), path, input_names=self.names, output_names=["logits"], dynamic_axes=axes
        )
