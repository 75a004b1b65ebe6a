"""The demo corpora the product ships: raw files from the dataset loaders, then the normal preprocessing."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from offline.datasets.chatterbot import write_chatterbot
from offline.datasets.faq import FIELD_MAP, write_faq
from offline.datasets.photos import write_photos
from offline.preprocess.images import preprocess_images
from offline.preprocess.qa import QAFormat, QAOptions, preprocess_qa
from offline.preprocess.rejects import PreprocessReport


class Demo(StrEnum):
    FAQ = "faq"  # Zaragoza English construction FAQ, 503 QA (CC BY 4.0)
    CHATTERBOT = "chatterbot"  # chatterbot-corpus English + Chinese conversation pairs (BSD-3)
    PHOTOS = "photos"  # scikit-image sample photos (public domain / CC0)


QA_DEMOS = (Demo.FAQ, Demo.CHATTERBOT)
IMAGE_DEMOS = (Demo.PHOTOS,)


def raw_dir(output: Path) -> Path:
    return output.parent / "raw"


def prepare_demo(
    demo: Demo | str, output: Path, *, work_dir: Path | None = None, base_url: str | None = None
) -> PreprocessReport:
    """Write the demo's raw files under `work_dir` (default: `raw/` beside the output) and preprocess them.

    For photos, the images are written to `<work_dir>/photos` and their URLs are `base_url/<file>` (default:
    file:// URLs of that folder, for local use; pass the URL the web server publishes them under).
    """
    demo = Demo(demo)
    raw = work_dir or raw_dir(output)
    if demo == Demo.FAQ:
        src = raw / "faq-en.jsonl"
        write_faq(src)
        return preprocess_qa(src, output, QAOptions.for_format(QAFormat.JSONL, FIELD_MAP))
    if demo == Demo.CHATTERBOT:
        src = raw / "chatterbot.jsonl"
        write_chatterbot(src)
        return preprocess_qa(src, output, QAOptions.for_format(QAFormat.JSONL))
    folder = raw / "photos"
    write_photos(folder)
    return preprocess_images(folder, base_url or folder.resolve().as_uri(), output)
