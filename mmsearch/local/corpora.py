"""Demo corpora of the local stack, written under var/demo/ from the PyPI packages that ship them.

- FAQ: the English Zaragoza construction FAQ (CC BY 4.0), as normalised QA jsonl
  {"id", "question", "answer", "category": [...]} (ids are 1..N in the package's order, stable across runs).
- Photos: scikit-image's sample photographs (public domain / CC0) as PNG files.
Written only when missing, so a second start does not touch them (and ingestion can be skipped).
"""

from __future__ import annotations

import json
from pathlib import Path

FAQ_FILE = "faq-en.jsonl"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def write_faq(demo_dir: Path) -> Path:
    out = demo_dir / FAQ_FILE
    if out.is_file():
        return out
    import zaragoza_construction_faq

    demo_dir.mkdir(parents=True, exist_ok=True)
    rows = zaragoza_construction_faq.load(lang="en")
    tmp = out.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for n, row in enumerate(rows, start=1):
            record = {"id": n, "question": row["q"], "answer": row["a"], "category": [row["category"]]}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return out


def write_photos(demo_dir: Path) -> Path:
    folder = demo_dir / "photos"
    if folder.is_dir() and any(folder.iterdir()):
        return folder
    import numpy as np
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        pixels = np.asarray(getattr(skimage.data, name)())
        if pixels.ndim == 2:
            pixels = np.stack([pixels] * 3, axis=-1)
        Image.fromarray(pixels[..., :3].astype(np.uint8)).save(folder / f"{name}.png")
    return folder
