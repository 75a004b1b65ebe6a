"""Image folder preprocessing: ids, URLs, and corrupt files rejected with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from offline.preprocess.cli import preprocess
from offline.preprocess.images import preprocess_images


def _img(path: Path, color: tuple[int, int, int], fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 24, 3), color, dtype=np.uint8)).save(path, format=fmt)


def test_folder_to_rows_with_corrupt_files_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    _img(folder / "b red.png", (255, 0, 0), "PNG")
    _img(folder / "a.jpg", (0, 255, 0), "JPEG")
    _img(folder / "sub" / "c.gif", (0, 0, 255), "GIF")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = (folder / "a.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    (folder / ".hidden.png").write_bytes(b"ignored")
    out = tmp_path / "images.jsonl"

    report = preprocess_images(folder, "http://img.example/demo/", out)

    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["name"]) for r in rows] == [(1, "a.jpg"), (2, "b red.png"), (5, "sub/c.gif")]
    assert rows[1]["url"] == "http://img.example/demo/b%20red.png"
    assert Path(rows[2]["image"]) == (folder / "sub" / "c.gif").resolve()
    reasons = {r.where: r.reason for r in report.rejects}
    assert reasons == {
        "broken.jpg": "unreadable image",
        "notes.txt": "not an image file",
        "truncated.jpg": "unreadable image",
    }
    assert report.written == 3


def test_cli_images_and_missing_folder(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    _img(folder / "x.png", (1, 2, 3), "PNG")
    out = tmp_path / "o.jsonl"
    runner = CliRunner()
    res = runner.invoke(preprocess, ["images", "--dir", str(folder), "--base-url", "http://h/i", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text(encoding="utf-8"))["url"] == "http://h/i/x.png"
    res = runner.invoke(preprocess, ["images", "--dir", str(tmp_path / "none"), "--base-url", "u", "-o", str(out)])
    assert res.exit_code != 0
    assert "does not exist" in res.output
