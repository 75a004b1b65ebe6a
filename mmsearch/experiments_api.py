"""`GET /experiments` of a running search service, as the offline tools read it (`mmsearch eval` for what it may
pin, `mmsearch ab report` for the configured ratios): the A/B config in force, scenes -> layers -> experiments.
Also how those tools send an API key (scope search) to a service that asks for one."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mmsearch.api_keys import ApiKey, KeyFormatError

F = TypeVar("F", bound=Callable[..., Any])

API_KEY_FILE_ENV = "MMSEARCH_API_KEY_FILE"


def api_key_file_option(scope: str = "search") -> Callable[[F], F]:
    """--api-key-file: a file holding a key with `scope`, for a search service with keys on."""
    local = (
        "none needed where search is open without a key (the local stack)"
        if scope == "search"
        else "the local stack's admin key is var/local/keys/admin.key"
    )
    return click.option(
        "--api-key-file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=API_KEY_FILE_ENV,
        default=None,
        help=f"A file holding an API key with scope {scope} (env {API_KEY_FILE_ENV}); {local}.",
    )


def api_key_headers(api_key_file: Path | None) -> dict[str, str]:
    if api_key_file is None:
        return {}
    try:
        key = ApiKey.parse(api_key_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.ClickException(f"cannot read --api-key-file {api_key_file}: {exc.strerror}") from exc
    except KeyFormatError as exc:
        raise click.ClickException(f"--api-key-file {api_key_file} holds {exc}") from exc
    return {"Authorization": f"Bearer {key}"}


class ExperimentsUnavailableError(Exception):
    """`reachable` is False when nothing answered at the URL (the caller says how to start or point at it)."""

    def __init__(self, message: str, *, reachable: bool) -> None:
        super().__init__(message)
        self.reachable = reachable


def get_experiments(search_url: str, timeout: float = 10.0, headers: dict[str, str] | None = None) -> dict[str, Any]:
    url = f"{search_url.rstrip('/')}/experiments"
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - a URL the operator gave
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
            body: dict[str, Any] = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")[:300]
        raise ExperimentsUnavailableError(f"{url} answered {exc.code}: {text}", reachable=True) from exc
    except (OSError, ValueError) as exc:
        raise ExperimentsUnavailableError(
            f"cannot reach the search service at {search_url} ({exc})", reachable=False
        ) from exc
    return body
