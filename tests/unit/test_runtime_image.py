"""Image preprocessing reproduces transformers' CLIPImageProcessor on real photos, and refuses bad bytes."""

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from transformers import CLIPImageProcessor

from mmsearch.model_repo import ImagePreprocessing, ModelKind, ModelManifest, ModelSource, TensorSpec
from mmsearch.runtime.image import ImageDecodeError, ImagePreprocessor
from tests.fixtures.models import CLIP_CONFIG_DIR as CLIP_DIR


def _manifest() -> ModelManifest:
    return ModelManifest(
        key="img",
        kind=ModelKind.CLIP_IMAGE,
        inputs=[TensorSpec(name="pixel_values", dtype="float32", shape=["batch", 3, 224, 224])],
        outputs=[TensorSpec(name="sentence_embedding", dtype="float32", shape=["batch", 512])],
        embedding_dim=512,
        normalized=True,
        image_preprocessing=ImagePreprocessing(
            resize_shortest_edge=224,
            crop_size=224,
            resample="bicubic",
            mean=[0.48145466, 0.4578275, 0.40821073],
            std=[0.26862954, 0.26130258, 0.27577711],
        ),
        source=ModelSource(folder=str(CLIP_DIR)),
    )


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_matches_clip_image_processor_on_real_photos() -> None:
    photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket(), skdata.camera()]
    ours = ImagePreprocessor(_manifest()).prep([_png(p) for p in photos])
    processor = CLIPImageProcessor.from_pretrained(str(CLIP_DIR))
    pil: list[Image.Image] = [Image.open(io.BytesIO(_png(p))) for p in photos]
    ref = processor(images=pil, return_tensors="np")["pixel_values"]
    assert ours.shape == ref.shape == (5, 3, 224, 224)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_undecodable_and_empty_bytes_name_the_image() -> None:
    pre = ImagePreprocessor(_manifest())
    good = _png(skdata.chelsea())
    with pytest.raises(ImageDecodeError, match="image 1: not a readable image"):
        pre.prep([good, b"definitely not an image"])
    with pytest.raises(ImageDecodeError, match="image 0: empty image"):
        pre.prep([b""])


def test_decompression_bomb_is_refused_before_decoding() -> None:
    pre = ImagePreprocessor(_manifest(), max_pixels=1_000_000)
    buf = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buf, format="PNG")  # a few KB on the wire, 25 Mpx decoded
    with pytest.raises(ImageDecodeError, match="5000x5000 pixels is over the limit"):
        pre.prep([buf.getvalue()])
