"""Texts to the token tensors a model's ONNX graph takes, from the tokenizer.json in its repository folder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from mmsearch.model_repo import ModelManifest, ModelRepoError, ModelRepository

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Which of the model's prompts goes in front of a text (asymmetric models): queries, or corpus documents.
Role = Literal["query", "document"]
_PAD_CANDIDATES = ("[PAD]", "<pad>", "<|endoftext|>")


@dataclass(frozen=True)
class TextBatch:
    tensors: dict[str, npt.NDArray[np.int64]]  # named exactly as the model's ONNX inputs
    truncated: list[bool]


class TextPreprocessor:
    def __init__(self, tokenizer: Tokenizer, manifest: ModelManifest) -> None:
        unknown = [n for n in manifest.input_names if n not in TOKEN_INPUTS]
        if unknown:
            raise ModelRepoError(f"model {manifest.key!r} takes {unknown}, which a text tokenizer cannot produce")
        self.manifest = manifest
        self.names = manifest.input_names
        self._tok = tokenizer
        # The exported tokenizer.json may carry its own padding/truncation; ours must follow the manifest.
        self._tok.no_padding()
        if manifest.max_seq_len:
            self._tok.enable_truncation(max_length=manifest.max_seq_len)
        else:
            self._tok.no_truncation()
        pad_token = _pad_token(tokenizer, manifest)
        pad_id = tokenizer.token_to_id(pad_token)
        self._tok.enable_padding(pad_id=pad_id, pad_token=pad_token)
        self._pairs: Tokenizer | None = None
        self._pad = (pad_id, pad_token)

    @classmethod
    def from_repo(cls, repo: ModelRepository, key: str, manifest: ModelManifest | None = None) -> TextPreprocessor:
        """`manifest`: the one the caller already read, so model and tokenizer come from the same version."""
        manifest = manifest or repo.manifest(key)
        if not manifest.tokenizer_file:
            raise ModelRepoError(f"model {key!r} ({manifest.kind}) has no tokenizer; it does not take text")
        return cls(Tokenizer.from_file(str(repo.path(key) / manifest.tokenizer_file)), manifest)

    def prep(self, texts: list[str], *, role: Role | None = None) -> TextBatch:
        """Token tensors for `texts`; `role` prepends the model's query or document prompt (none if it has none).

        The prompt counts towards the model's maximum length, as in sentence-transformers.
        """
        if not texts:
            raise ValueError("no texts to tokenize")
        prompt = {"query": self.manifest.query_prompt, "document": self.manifest.document_prompt}.get(role or "")
        return self._batch(self._tok.encode_batch([prompt + t for t in texts] if prompt else texts))

    def prep_pairs(self, pairs: list[tuple[str, str]]) -> TextBatch:
        """Token tensors for (query, document) pairs, as a cross-encoder takes them: `[CLS] query [SEP] document
        [SEP]` with segment ids, cut to the model's maximum length from the document only (Hugging Face's
        truncation="only_second"). A query too long to leave the document any room is cut too, rather than failing
        as Hugging Face would."""
        if not pairs:
            raise ValueError("no (query, document) pairs to tokenize")
        if self._pairs is None:
            self._pairs = _pair_tokenizer(self._tok, self.manifest.max_seq_len, self._pad, "only_second")
        try:
            encodings = self._pairs.encode_batch(pairs)
        except Exception as exc:  # tokenizers raises a bare Exception for "sequence to truncate too short"
            if "truncat" not in str(exc).lower():
                raise
            fallback = _pair_tokenizer(self._tok, self.manifest.max_seq_len, self._pad, "longest_first")
            encodings = fallback.encode_batch(pairs)
        return self._batch(encodings)

    def _batch(self, encodings: list[Encoding]) -> TextBatch:
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        tensors = {name: np.asarray(columns[name], dtype=np.int64) for name in self.names}
        return TextBatch(tensors=tensors, truncated=[bool(e.overflowing) for e in encodings])


def _pair_tokenizer(base: Tokenizer, max_len: int | None, pad: tuple[int | None, str], strategy: str) -> Tokenizer:
    tok = Tokenizer.from_str(base.to_str())
    tok.no_padding()
    if max_len:
        tok.enable_truncation(max_length=max_len, strategy=strategy)
    else:
        tok.no_truncation()
    tok.enable_padding(pad_id=pad[0], pad_token=pad[1])
    return tok


def _pad_token(tokenizer: Tokenizer, manifest: ModelManifest) -> str:
    configured = tokenizer.padding
    if configured and configured.get("pad_token"):
        return str(configured["pad_token"])
    for candidate in _PAD_CANDIDATES:
        if tokenizer.token_to_id(candidate) is not None:
            return candidate
    raise ModelRepoError(f"model {manifest.key!r}: cannot tell its padding token from {manifest.tokenizer_file}")
