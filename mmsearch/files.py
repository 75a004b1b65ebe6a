"""The one atomic file writer: a reader never sees a half-written file, an interrupted writer leaves none behind.

The data goes to a temporary file in the target's own folder (so the rename never crosses a file system), is
flushed and fsynced, and only then renamed over the target. Shards, manifests, demo photos, corpus files, the
search service's last good config and API key files (`private`: readable by their owner only, from the first
byte) are all written this way.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO, TextIO, cast


@contextmanager
def _atomic(path: Path, mode: str, *, private: bool = False) -> Iterator[IO[Any]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    # A private file is created mode 600, so no other user can read it even while it is being written.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_text_writer(path: Path, *, private: bool = False) -> Iterator[TextIO]:
    """Write UTF-8 text to `path` atomically: `with atomic_text_writer(p) as f: f.write(...)`."""
    with _atomic(path, "w", private=private) as out:
        yield cast(TextIO, out)


@contextmanager
def atomic_binary_writer(path: Path) -> Iterator[BinaryIO]:
    """Write bytes to `path` atomically (numpy arrays, images)."""
    with _atomic(path, "wb") as out:
        yield cast(BinaryIO, out)


def write_text_atomic(path: Path, text: str, *, private: bool = False) -> None:
    """`private`: the file is readable by its owner only (mode 600), as a secret must be."""
    with atomic_text_writer(path, private=private) as out:
        out.write(text)
