"""Push failures, each saying what to fix; the previous collection keeps serving in every case."""

from __future__ import annotations

from offline.errors import OfflineError


class PushError(OfflineError):
    """The push was refused or failed; nothing the search side reads was changed."""


class StoreUnavailableError(PushError):
    """Milvus or MongoDB cannot be reached; the message names the URI and the setting that holds it."""


class ModelMismatchError(PushError):
    """The vectors come from a different model or dimension than the collection the alias serves."""
