"""Image uploads of /i2i: size limit first, then the content type and the file's magic bytes.

Nothing is decoded here (the tokenizer service decodes, with its own pixel limit); this only refuses what is
too large or plainly not an image, with the status that says so.
"""

from __future__ import annotations

from fastapi import UploadFile

from services.search.errors import InvalidQueryError, SearchError

IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp"}
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"RIFF", b"BM")


class UploadTooLargeError(SearchError):
    status_code = 413
    kind = "upload_too_large"


class UnsupportedImageError(SearchError):
    status_code = 415
    kind = "unsupported_image"


async def read_image(upload: UploadFile, max_mb: int) -> bytes:
    limit = max_mb * 1024 * 1024
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise UploadTooLargeError(f"image larger than {max_mb} MB")
    if not data:
        raise InvalidQueryError("the uploaded image is empty")
    ctype = (upload.content_type or "").split(";")[0].strip().lower()
    if (ctype and ctype != "application/octet-stream" and ctype not in IMAGE_TYPES) or not data.startswith(_MAGIC):
        raise UnsupportedImageError(
            f"not a supported image (content type {ctype or 'none'}): send JPEG, PNG, GIF, WebP or BMP"
        )
    return data
