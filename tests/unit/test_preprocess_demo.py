"""The shipped demo corpora come out of their packages as clean normalised rows."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from offline.preprocess.demo import prepare_demo


def test_faq_demo(tmp_path: Path) -> None:
    out = tmp_path / "faq.jsonl"
    report = prepare_demo("faq", out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert report.rejected == 0
    assert len(rows) == report.written == 503
    assert rows[0]["question"] == "What is a bygglov (building permit)?"
    assert rows[0]["category"] == ["bygglov"]
    assert [r["id"] for r in rows] == list(range(1, 504))


def test_chatterbot_demo_has_english_and_chinese_pairs(tmp_path: Path) -> None:
    out = tmp_path / "cb.jsonl"
    report = prepare_demo("chatterbot", out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    langs = {r["category"][0] for r in rows}
    assert langs == {"english", "chinese"}
    assert report.written == len(rows) > 1000
    assert any(r["question"] == "你好" for r in rows)


def test_photos_demo_writes_decodable_images(tmp_path: Path) -> None:
    out = tmp_path / "photos.jsonl"
    report = prepare_demo("photos", out, base_url="http://127.0.0.1:8090/photos")
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    names = {r["name"] for r in rows}
    assert {"astronaut-eileen-collins.jpg", "cat-chelsea.jpg", "cup-of-coffee.jpg", "rocket-launch.jpg"} <= names
    assert report.rejected == 0
    with Image.open(next(r["image"] for r in rows if r["name"] == "cat-chelsea.jpg")) as img:
        assert img.size == (451, 300)
