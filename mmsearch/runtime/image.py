"""Encoded images to `pixel_values`, exactly as the manifest's recorded CLIP preprocessing says.

This reproduces transformers' (slow) CLIPImageProcessor step by step, so the online side needs neither
transformers nor torch: convert to RGB, resize the shortest edge, centre-crop, rescale, normalise, CHW.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from mmsearch.model_repo import ImagePreprocessing, ModelManifest, ModelRepoError, ModelRepository

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


class ImageDecodeError(ValueError):
    def __init__(self, index: int, reason: str) -> None:
        self.index = index
        self.reason = reason
        super().__init__(f"image {index}: {reason}")


class ImagePreprocessor:
    def __init__(self, manifest: ModelManifest, *, max_pixels: int = 50_000_000) -> None:
        if manifest.image_preprocessing is None:
            raise ModelRepoError(f"model {manifest.key!r} ({manifest.kind}) records no image preprocessing")
        self.manifest = manifest
        self.cfg: ImagePreprocessing = manifest.image_preprocessing
        self.max_pixels = max_pixels
        self._mean = np.asarray(self.cfg.mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(self.cfg.std, dtype=np.float32).reshape(3, 1, 1)
        if self.cfg.resample not in _RESAMPLE:
            raise ModelRepoError(f"model {manifest.key!r}: unknown resample {self.cfg.resample!r}")

    @classmethod
    def from_repo(cls, repo: ModelRepository, key: str, *, max_pixels: int = 50_000_000) -> ImagePreprocessor:
        return cls(repo.manifest(key), max_pixels=max_pixels)

    @property
    def input_name(self) -> str:
        return self.manifest.input_names[0]

    def decode(self, data: bytes, index: int = 0) -> Image.Image:
        if not data:
            raise ImageDecodeError(index, "empty image")
        try:
            with warnings.catch_warnings():
                # Pillow warns, then raises, on huge images; both mean "do not decode this".
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
                if img.width * img.height > self.max_pixels:
                    raise ImageDecodeError(
                        index, f"{img.width}x{img.height} pixels is over the limit of {self.max_pixels}"
                    )
                img.load()
        except ImageDecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageDecodeError(index, f"refused as a decompression bomb: {exc}") from exc
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise ImageDecodeError(index, f"not a readable image: {exc}") from exc
        return img

    def prep(self, images: list[bytes]) -> npt.NDArray[np.float32]:
        return self.prep_pil([self.decode(b, i) for i, b in enumerate(images)])

    def prep_pil(self, images: list[Image.Image]) -> npt.NDArray[np.float32]:
        if not images:
            raise ValueError("no images to preprocess")
        return np.stack([self._one(img) for img in images])

    def _one(self, img: Image.Image) -> npt.NDArray[np.float32]:
        cfg = self.cfg
        if cfg.convert_rgb and img.mode != "RGB":
            img = img.convert("RGB")
        width, height = img.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = cfg.resize_shortest_edge, int(cfg.resize_shortest_edge * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
        img = img.resize((new_w, new_h), resample=_RESAMPLE[cfg.resample])
        arr = np.asarray(img)  # HWC uint8
        crop = cfg.crop_size
        top, left = (new_h - crop) // 2, (new_w - crop) // 2
        if top < 0 or left < 0:  # upscaled image smaller than the crop: pad like transformers does
            padded = np.zeros((max(new_h, crop), max(new_w, crop), 3), dtype=arr.dtype)
            pt, pl = max(0, -top), max(0, -left)
            padded[pt : pt + new_h, pl : pl + new_w] = arr
            arr, top, left = padded, max(top, 0), max(left, 0)
        arr = arr[top : top + crop, left : left + crop]
        chw = (arr.astype(np.float64) * cfg.rescale_factor).astype(np.float32).transpose(2, 0, 1)
        return (chw - self._mean) / self._std
