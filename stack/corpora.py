"""Demo corpora of the local stack, written under var/demo/ by the loaders in offline.datasets.

- FAQ: the English Zaragoza construction FAQ (CC BY 4.0) as raw jsonl (fields q, a, category; see
  offline.datasets.faq.FIELD_MAP), ingested as corpus faq_qa.
- Chatterbot: chatterbot-corpus's English and Chinese utterance -> reply pairs (BSD-3) as jsonl (question,
  answer, category), ingested as corpus chatterbot_qa (scene chitchat of the demo A/B config).
- Photos: scikit-image's sample photographs (public domain / CC0) as image files, ingested as corpus photos
  when a CLIP model is there.
Written only when missing, so a second start does not rewrite them.
"""

from __future__ import annotations

from pathlib import Path

FAQ_FILE = "faq-en.raw.jsonl"
CHATTERBOT_FILE = "chatterbot.raw.jsonl"


def write_faq(demo_dir: Path) -> Path:
    out = demo_dir / FAQ_FILE
    if not out.is_file():
        from offline.datasets.faq import write_faq as write

        write(out)
    return out


def write_chatterbot(demo_dir: Path) -> Path:
    out = demo_dir / CHATTERBOT_FILE
    if not out.is_file():
        from offline.datasets.chatterbot import write_chatterbot as write

        write(out)
    return out


def write_photos(demo_dir: Path) -> Path:
    folder = demo_dir / "photos"
    if not (folder.is_dir() and any(folder.iterdir())):
        from offline.datasets.photos import write_photos as write

        write(folder)
    return folder
