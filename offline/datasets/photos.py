"""The scikit-image sample photos (public domain / CC0) written out as image files, for the image demo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mmsearch.files import atomic_binary_writer

# skimage.data function -> file name that says what is in the picture. Colour photos first; the grayscale
# ones are real photos too and exercise the grayscale -> RGB path of the image preprocessing.
PHOTOS: dict[str, str] = {
    "astronaut": "astronaut-eileen-collins.jpg",
    "chelsea": "cat-chelsea.jpg",
    "coffee": "cup-of-coffee.jpg",
    "rocket": "rocket-launch.jpg",
    "hubble_deep_field": "hubble-deep-field.jpg",
    "immunohistochemistry": "immunohistochemistry-stain.jpg",
    "retina": "retina-fundus.jpg",
    "camera": "cameraman.png",
    "coins": "greek-coins.png",
    "moon": "moon-surface.png",
    "clock": "wall-clock.png",
    "page": "book-page.png",
    "text": "text-sample.png",
    "brick": "brick-wall.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
}


def write_photos(folder: Path, names: list[str] | None = None) -> list[Path]:
    """Write the photos into `folder` (created); returns the files written, in a stable order."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for func in names or list(PHOTOS):
        if func not in PHOTOS:
            raise KeyError(f"unknown sample photo {func!r}; known: {', '.join(PHOTOS)}")
        arr = np.asarray(getattr(data, func)())
        target = folder / PHOTOS[func]
        with atomic_binary_writer(target) as out:
            Image.fromarray(arr).save(out, format="JPEG" if target.suffix == ".jpg" else "PNG", quality=92)
        written.append(target)
    return written
