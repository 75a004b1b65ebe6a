"""An image folder to normalised image rows; files that are not readable images are rejected with the reason.

Every file is opened and fully decoded with Pillow here, so `index` never meets a corrupt image half-way
through a shard. Ids number the files in sorted relative-path order, so re-running over the same folder gives
the same ids.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from urllib.parse import quote

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from mmsearch.files import atomic_text_writer
from offline.preprocess.qa import PreprocessError
from offline.preprocess.records import ImageRecord
from offline.preprocess.rejects import PreprocessReport, Reject, default_rejects_path, write_rejects

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"})
MAX_PIXELS = 50_000_000  # same bound as the online image preprocessing (settings.tokenizer.max_image_pixels)


def check_image(path: Path, max_pixels: int = MAX_PIXELS) -> str | None:
    """None if Pillow can decode the whole file, else why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > max_pixels:
                    return f"{img.width}x{img.height} pixels is over the limit of {max_pixels}"
                img.verify()  # structure and checksums; does not decode pixel data
            with Image.open(path) as img:
                img.load()  # decode: catches truncated pixel data that verify() lets through
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"refused as a decompression bomb: {exc}"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return f"not a readable image: {exc}"
    return None


def image_url(base_url: str, name: str) -> str:
    return base_url.rstrip("/") + "/" + quote(name)


def preprocess_images(
    folder: Path, base_url: str, output: Path, *, rejects_path: Path | None = None, max_pixels: int = MAX_PIXELS
) -> PreprocessReport:
    if not folder.is_dir():
        raise PreprocessError(f"image folder {folder} does not exist")
    if not base_url.strip():
        raise PreprocessError("--base-url is empty: give the URL prefix the images are served under")
    report = PreprocessReport(output=output, rejects_file=rejects_path or default_rejects_path(output))
    root = folder.resolve()
    out_res = output.resolve()
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts) and p != out_res
    )
    with atomic_text_writer(output) as out:
        # The id is the file's position among all files, rejected ones included, so fixing one bad file later
        # does not renumber the others.
        for ordinal, path in enumerate(tqdm(files, desc="preprocess images", unit="files", disable=None), 1):
            name = path.relative_to(root).as_posix()
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                exts = ", ".join(sorted(IMAGE_SUFFIXES))
                report.rejects.append(Reject(name, "not an image file", f"extension is not one of {exts}"))
                continue
            problem = check_image(path, max_pixels)
            if problem:
                report.rejects.append(Reject(name, "unreadable image", problem))
                continue
            rec = ImageRecord(id=ordinal, name=name, image=str(path), url=image_url(base_url, name))
            out.write(rec.model_dump_json() + "\n")
            report.written += 1
    write_rejects(report.rejects_file, report.rejects)
    return report
