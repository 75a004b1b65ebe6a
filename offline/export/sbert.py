"""Sentence-transformers model -> one ONNX graph (transformer + pooling [+ dense] [+ normalise]).

Inputs are exactly the tokenizer's model inputs (int64 [batch, sequence]); outputs are `sentence_embedding`
[batch, dim] and `token_embeddings` [batch, sequence, hidden]. The tokenizer.json goes beside the graph, and
the parity inputs are made by the same `mmsearch.runtime.text.TextPreprocessor` the online side uses.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsearch.model_repo import (
    ModelKind,
    ModelManifest,
    ModelRepository,
    TensorSpec,
    validate_key,
    write_manifest,
)
from mmsearch.runtime.text import Role
from offline.export.errors import ExportError
from offline.export.graph_io import declare_output_shapes
from offline.export.parity import PARITY_TEXTS, ParityCase, enforce_fp32
from offline.export.provenance import export_onnx, export_record
from offline.export.source import WEIGHT_FILES, require_files, resolve_source
from offline.export.text_inputs import normalizer_lowercases, tokenize
from offline.export.variants import VariantRequest, write_variants

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
EXPORT_SAMPLE = ["tracing sample", "a second, somewhat longer sample text"]
PARITY_DESCRIPTION = f"{len(PARITY_TEXTS)} texts of mixed length, English and Chinese, one padded batch"


@dataclass(frozen=True)
class SbertFolder:
    root: Path
    transformer_dir: Path  # where config.json, the weights and the tokenizer files live
    module_types: list[str]
    do_lower_case: bool
    max_seq_len: int | None


def inspect_folder(folder: Path) -> SbertFolder:
    """Check that `folder` is a sentence-transformers model; name the first missing file if not."""
    require_files(folder, "sentence-transformers model", [("modules.json",)])
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        types = [str(m["type"]) for m in modules]
        first = modules[0]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ExportError(f"{folder / 'modules.json'} is not a sentence-transformers modules list: {exc}") from exc
    if not types[0].endswith(".Transformer"):
        raise ExportError(f"{folder}: the first module is {types[0]}, expected a sentence_transformers Transformer")
    tdir = folder / str(first.get("path", ""))
    require_files(
        tdir,
        "sentence-transformers model",
        [
            ("config.json",),
            (*WEIGHT_FILES, "model.safetensors.index.json"),
            ("tokenizer.json", "vocab.txt", "vocab.json"),
        ],
    )
    st_config: dict[str, Any] = {}
    for name in ("sentence_bert_config.json", "sentence_transformers_config.json"):
        if (tdir / name).is_file():
            st_config = json.loads((tdir / name).read_text(encoding="utf-8"))
            break
    max_len = st_config.get("max_seq_length")
    return SbertFolder(
        root=folder,
        transformer_dir=tdir,
        module_types=types,
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        max_seq_len=int(max_len) if max_len else None,
    )


def export_sbert(
    source: str,
    repo: ModelRepository,
    key: str,
    *,
    force: bool = False,
    variants: VariantRequest | None = None,
    pairs_with: str | None = None,
    revision: str | None = None,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
) -> ModelManifest:
    """Export, check parity and publish `key`; raises ExportError (nothing published) on any problem.

    Prompts (asymmetric models such as e5 or bge): the arguments win, else the model's own sentence-transformers
    config (`prompts` in config_sentence_transformers.json: "query", and "document" or "passage").
    """
    validate_key(key)
    if key in repo and not force:
        raise ExportError(f"model {key!r} already exists in {repo.root}; pass --force to replace it")
    paired = _check_pairing(repo, pairs_with)
    resolved = resolve_source(source, revision=revision)
    info = inspect_folder(resolved.folder)

    from sentence_transformers import SentenceTransformer

    log.info("loading sentence-transformers model from %s", resolved.folder)
    model = SentenceTransformer(str(resolved.folder), device="cpu")
    model.eval()
    names = list(model.tokenizer.model_input_names)
    max_seq_len = int(model.max_seq_length) if model.max_seq_length else info.max_seq_len
    prompts = _prompts(model, query_prompt, document_prompt)

    with repo.writer(key, force=force) as staging:
        lowercase_in_tokenizer = _write_tokenizer(model, info, staging / TOKENIZER_FILE)
        draft = ModelManifest(
            key=key,
            kind=ModelKind.TEXT_EMBEDDING,
            inputs=[TensorSpec(name=n, dtype="int64", shape=["batch", "sequence"]) for n in names],
            outputs=[],
            embedding_dim=0,
            normalized=any(t.endswith(".Normalize") for t in info.module_types),
            max_seq_len=max_seq_len,
            do_lower_case=info.do_lower_case or lowercase_in_tokenizer,
            tokenizer_file=TOKENIZER_FILE,
            pairs_with=pairs_with,
            source=resolved.record,
            query_prompt=prompts.get("query"),
            document_prompt=prompts.get("document"),
        )
        inputs = tokenize(staging / TOKENIZER_FILE, draft, PARITY_TEXTS)
        _check_tokenizer_agrees(model, inputs)

        graph = SbertGraph(model, names)
        # Reference first: the legacy exporter leaves the in-memory model giving different outputs afterwards.
        reference, tokens = graph.reference(inputs)
        # With prompts, sentence-transformers' own encode(prompt=...) is the reference for our tokenizer's prefix.
        prompt_cases = [
            ParityCase(
                tokenize(staging / TOKENIZER_FILE, draft, PARITY_TEXTS, role),
                np.asarray(model.encode(PARITY_TEXTS, prompt=prompt, batch_size=len(PARITY_TEXTS)), dtype=np.float32),
                "sentence_embedding",
                f"{PARITY_DESCRIPTION}, {role} prompt {prompt!r} (vs sentence-transformers encode)",
            )
            for role, prompt in prompts.items()
        ]
        dim, hidden = int(reference.shape[1]), int(tokens.shape[2])
        if paired is not None and paired.embedding_dim != dim:
            raise ExportError(
                f"--pairs-with {pairs_with!r}: that model's embeddings are {paired.embedding_dim}-d, this one's {dim}-d"
            )
        onnx_path = staging / "model.onnx"
        # Traced on other shapes than the parity batch, so a shape frozen into the graph cannot pass unnoticed.
        graph.export(onnx_path, tokenize(staging / TOKENIZER_FILE, draft, EXPORT_SAMPLE))
        outputs = [
            TensorSpec(name="sentence_embedding", dtype="float32", shape=["batch", dim]),
            TensorSpec(name="token_embeddings", dtype="float32", shape=["batch", "sequence", hidden]),
        ]
        declare_output_shapes(onnx_path, outputs)
        case = ParityCase(inputs, reference, "sentence_embedding", PARITY_DESCRIPTION)
        parity = case.check("fp32", onnx_path)
        log.info("parity fp32: max abs diff %.2e, min cosine %.7f", parity.max_abs_diff, parity.min_cosine)
        enforce_fp32(parity, key)
        prompt_parity = [
            c.check(f"fp32:{role}-prompt", onnx_path) for role, c in zip(prompts, prompt_cases, strict=True)
        ]
        for p in prompt_parity:
            log.info("parity %s: max abs diff %.2e, min cosine %.7f", p.variant, p.max_abs_diff, p.min_cosine)
            enforce_fp32(p, key)
        extra = write_variants(onnx_path, variants or VariantRequest(), case)
        manifest = draft.model_copy(
            update={
                "outputs": outputs,
                "embedding_dim": dim,
                "variants": {v.name: v.file for v in extra},
                "parity": [parity, *prompt_parity, *(v.parity for v in extra)],
                "export": export_record(
                    modules=info.module_types,
                    lowercase_before_tokenizer=info.do_lower_case,
                    lowercase_in_tokenizer=lowercase_in_tokenizer,
                    variant_settings={v.name: v.settings for v in extra},
                ),
            }
        )
        write_manifest(staging, ModelManifest.model_validate(manifest.model_dump()))
    log.info("published %s (%d-d, normalized=%s) in %s", key, dim, manifest.normalized, repo.root)
    return manifest


class SbertGraph:
    """The SentenceTransformer as a function of positional token tensors, for tracing."""

    def __init__(self, model: Any, names: list[str]) -> None:
        import torch

        class _Module(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.st = model

            def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                out = self.st(dict(zip(names, tensors, strict=True)))
                return out["sentence_embedding"], out["token_embeddings"]

        self.module = _Module().eval()
        self.names = names

    def _args(self, inputs: dict[str, npt.NDArray[np.int64]]) -> tuple[Any, ...]:
        import torch

        return tuple(torch.from_numpy(inputs[n]) for n in self.names)

    def reference(self, inputs: dict[str, npt.NDArray[np.int64]]) -> tuple[npt.NDArray[np.float32], npt.NDArray[Any]]:
        import torch

        with torch.inference_mode():
            emb, tokens = self.module(*self._args(inputs))
        return emb.float().numpy(), tokens.float().numpy()

    def export(self, path: Path, inputs: dict[str, npt.NDArray[np.int64]]) -> None:
        axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in self.names}
        axes["sentence_embedding"] = {0: "batch"}
        axes["token_embeddings"] = {0: "batch", 1: "sequence"}
        export_onnx(
            self.module,
            self._args(inputs),
            path,
            input_names=self.names,
            output_names=["sentence_embedding", "token_embeddings"],
            dynamic_axes=axes,
        )


def _write_tokenizer(model: Any, info: SbertFolder, dest: Path) -> bool:
    """Copy tokenizer.json (or build it from the fast tokenizer); return whether it lower-cases itself.

    When the model lower-cases before tokenising (sentence-transformers `do_lower_case`) and its tokenizer does
    not, a Lowercase normaliser is added, so the file alone reproduces the model's text preprocessing.
    """
    from tokenizers import Tokenizer, normalizers

    src = info.transformer_dir / TOKENIZER_FILE
    if src.is_file():
        shutil.copyfile(src, dest)
    else:
        backend = getattr(model.tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ExportError(f"{info.transformer_dir}: no tokenizer.json and the tokenizer is not a fast tokenizer")
        backend.save(str(dest))
    tok = Tokenizer.from_file(str(dest))
    lowercases = normalizer_lowercases(json.loads(dest.read_text(encoding="utf-8")).get("normalizer"))
    if info.do_lower_case and not lowercases:
        steps = [normalizers.Lowercase()] + ([tok.normalizer] if tok.normalizer is not None else [])
        tok.normalizer = normalizers.Sequence(steps)
        tok.save(str(dest))
        lowercases = True
    return lowercases


def _check_tokenizer_agrees(model: Any, inputs: dict[str, npt.NDArray[np.int64]]) -> None:
    """The runtime's tokenisation of the parity texts must equal sentence-transformers' own."""
    # `preprocess` replaced `tokenize` in sentence-transformers 6.
    theirs = model.preprocess(PARITY_TEXTS) if hasattr(model, "preprocess") else model.tokenize(PARITY_TEXTS)
    for name, ours in inputs.items():
        expected = theirs[name].numpy()
        if expected.shape != ours.shape or not np.array_equal(expected, ours):
            raise ExportError(
                f"the exported tokenizer.json tokenises differently from the model's tokenizer ({name}: "
                f"{ours.shape} vs {expected.shape}); the online side would not reproduce the model"
            )


def _check_pairing(repo: ModelRepository, pairs_with: str | None) -> ModelManifest | None:
    if pairs_with is None:
        return None
    if pairs_with not in repo:
        raise ExportError(
            f"--pairs-with {pairs_with!r}: no such model in {repo.root}; export the image tower it pairs with first"
        )
    paired = repo.manifest(pairs_with)
    if paired.kind != ModelKind.CLIP_IMAGE:
        raise ExportError(f"--pairs-with {pairs_with!r} is a {paired.kind} model; name a CLIP image tower")
    return paired


def _prompts(model: Any, query: str | None, document: str | None) -> dict[Role, str]:
    """{"query": ..., "document": ...} for the roles that have a prompt: the arguments, else the model's config."""
    own: dict[str, str] = dict(getattr(model, "prompts", None) or {})
    found: dict[Role, str | None] = {
        "query": query if query is not None else own.get("query"),
        "document": document if document is not None else (own.get("document") or own.get("passage")),
    }
    chosen = {role: p for role, p in found.items() if p}
    if chosen:
        pooling = next((m for m in model if type(m).__name__ == "Pooling"), None)
        if pooling is not None and getattr(pooling, "include_prompt", True) is False:
            raise ExportError(
                "this model's pooling leaves the prompt's tokens out (include_prompt = false), which one ONNX graph "
                "over the prompted text cannot reproduce; export it without prompts or pool over them"
            )
    return chosen
