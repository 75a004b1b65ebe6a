"""Demo corpora of the local stack, written under var/demo/ by the loaders in offline.datasets.

- FAQ: the English Zaragoza construction FAQ (CC BY 4.0) as raw jsonl (fields q, a, category; see
  offline.datasets.faq.FIELD_MAP), ingested as corpus faq_qa.
- Photos: scikit-image's sample photographs (public domain / CC0) as image files, ingested as corpus photos
  when a CLIP model is there.
Written only when missing, so a second start does not rewrite them.
"""

from __future__ import annotations

from pathlib import Path

FAQ_FILE = "faq-en.raw.jsonl"


def write_faq(demo_dir: Path) -> Path:
    out = demo_dir / FAQ_FILE
    if not out.is_file():
        from offline.datasets.faq import write_faq as write

        write(out)
    return out


def write_photos(demo_dir: Path) -> Path:
    folder = demo_dir / "photos"
    if not (folder.is_dir() and any(folder.iterdir())):
        from offline.datasets.photos import write_photos as write

        write(folder)
    return folder
