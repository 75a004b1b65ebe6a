"""Checks on an uploaded photo before it is forwarded: its size, and its type decided by its bytes, not its name."""

from __future__ import annotations

from dataclasses import dataclass

from werkzeug.datastructures import FileStorage

from web_ui.search_client import SearchError

ALLOWED_TYPES = "JPEG, PNG, GIF or WebP"


@dataclass(frozen=True)
class Photo:
    data: bytes
    content_type: str
    filename: str


def sniff_image_type(head: bytes) -> str | None:
    """The MIME type of a JPEG, PNG, GIF or WebP file from its first bytes; None for anything else."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(head) >= 12 and head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def read_photo(upload: FileStorage | None, *, max_bytes: int) -> Photo:
    """The uploaded photo, or a SearchError (400, 413, 415) that says what is wrong with it."""
    if upload is None or not upload.filename:
        raise SearchError(400, "bad_request", "Choose a photo to upload (form field 'image').")
    data = upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SearchError(413, "too_large", f"The photo is larger than {max_bytes // (1024 * 1024)} MB.")
    if not data:
        raise SearchError(400, "bad_request", "The uploaded file is empty.")
    content_type = sniff_image_type(data[:16])
    if content_type is None:
        raise SearchError(415, "unsupported_type", f"Only {ALLOWED_TYPES} photos can be searched.")
    return Photo(data=data, content_type=content_type, filename=upload.filename[:200])
