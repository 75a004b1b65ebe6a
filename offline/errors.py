"""The one error base of the offline jobs, and the one place that turns an error into a command's last line.

Every offline error (export, preprocess, index, push, ingest) derives from OfflineError, and its message says
what to fix. The commands run their work inside `reported()`, which prints that message and exits 1 (click's
usage for a ClickException); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from mmsearch.model_repo import ModelRepoError


class OfflineError(Exception):
    """An offline job was refused or failed; the message says why and what to do."""


@contextmanager
def reported() -> Iterator[None]:
    """Offline errors, and model-repository errors (a shared-core type) met on the way, as one CLI error line."""
    try:
        yield
    except (OfflineError, ModelRepoError) as exc:
        raise click.ClickException(str(exc)) from exc
