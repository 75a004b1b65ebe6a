"""Conversation pairs from chatterbot-corpus (BSD-3): each utterance and the reply that follows it.

Written as raw jsonl ``{"id", "question", "answer", "category": [language, topic]}``, English and Chinese,
ids numbered in (language, file, conversation) order so re-running gives the same ids.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from mmsearch.files import atomic_text_writer

log = logging.getLogger(__name__)

LANGUAGES = ("english", "chinese")


class ConversationFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    categories: list[str] = []
    # Mostly lists of turns; a few files hold a bare string where a conversation should be.
    conversations: list[object] = []


@dataclass(frozen=True)
class Pair:
    question: str
    answer: str
    language: str
    topic: str


def corpus_dir() -> Path:
    from chatterbot_corpus import corpus

    return Path(corpus.DATA_DIRECTORY)


def load_pairs(languages: tuple[str, ...] = LANGUAGES) -> list[Pair]:
    pairs: list[Pair] = []
    skipped = 0
    for lang in languages:
        folder = corpus_dir() / lang
        if not folder.is_dir():
            raise FileNotFoundError(f"chatterbot-corpus has no language {lang!r} (looked in {folder})")
        for file in sorted(folder.glob("*.yml")):
            try:
                doc = ConversationFile.model_validate(yaml.safe_load(file.read_text(encoding="utf-8")) or {})
            except (yaml.YAMLError, ValidationError) as exc:
                raise ValueError(f"{file}: not a chatterbot conversation file: {exc}") from exc
            topic = doc.categories[0] if doc.categories else file.stem
            for conv in doc.conversations:
                if not isinstance(conv, list):
                    skipped += 1
                    continue
                # Some entries hold non-text (numbers, nested lists); those turns cannot be a question or answer.
                turns = [t.strip() if isinstance(t, str) else None for t in conv]
                for q, a in itertools.pairwise(turns):
                    if q and a:
                        pairs.append(Pair(q, a, lang, topic))
                    else:
                        skipped += 1
    if skipped:
        log.info("chatterbot-corpus: skipped %d turn pairs or entries that were empty or not text", skipped)
    return pairs


def write_chatterbot(path: Path, languages: tuple[str, ...] = LANGUAGES) -> int:
    pairs = load_pairs(languages)
    with atomic_text_writer(path) as out:
        for n, p in enumerate(pairs, start=1):
            row = {"id": n, "question": p.question, "answer": p.answer, "category": [p.language, p.topic]}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(pairs)
