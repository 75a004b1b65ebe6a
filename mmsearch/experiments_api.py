"""`GET /experiments` of a running search service, as the offline tools read it (`mmsearch eval` for what it may
pin, `mmsearch ab report` for the configured ratios): the A/B config in force, scenes -> layers -> experiments."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class ExperimentsUnavailableError(Exception):
    """`reachable` is False when nothing answered at the URL (the caller says how to start or point at it)."""

    def __init__(self, message: str, *, reachable: bool) -> None:
        super().__init__(message)
        self.reachable = reachable


def get_experiments(search_url: str, timeout: float = 10.0) -> dict[str, Any]:
    url = f"{search_url.rstrip('/')}/experiments"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - a URL the operator gave
            body: dict[str, Any] = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")[:300]
        raise ExperimentsUnavailableError(f"{url} answered {exc.code}: {text}", reachable=True) from exc
    except (OSError, ValueError) as exc:
        raise ExperimentsUnavailableError(
            f"cannot reach the search service at {search_url} ({exc})", reachable=False
        ) from exc
    return body
