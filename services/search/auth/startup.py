"""What the search service settles about access control before it serves: the bootstrap key, and whether it may
listen where it was told to with the auth mode it was given."""

from __future__ import annotations

import ipaddress
import logging

from mmsearch.api_keys import ApiKey, KeyFormatError
from mmsearch.settings import AuthSettings

log = logging.getLogger(__name__)


class AuthStartError(RuntimeError):
    """The service must not start so; the message says what to change."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, auth: AuthSettings) -> None:
    """Refuse to serve every route open to the network: auth off on an address other than loopback needs
    --insecure-no-auth (auth.insecure_no_auth). Warn when a key-less scope is open to the network."""
    if auth.mode == "off" and not is_loopback(host):
        if not auth.insecure_no_auth:
            raise AuthStartError(
                f"refusing to listen on {host} with auth.mode off: every route, writes included, would be open to "
                "anyone who reaches it. Run with keys (MMSEARCH_AUTH__MODE=keys and a bootstrap key in "
                "MMSEARCH_AUTH__BOOTSTRAP_KEY_FILE; create others with `mmsearch keys create`), or, on a network "
                "you trust, pass --insecure-no-auth"
            )
        log.warning("auth is OFF on %s (--insecure-no-auth): every route is open to whoever reaches it", host)
    if auth.mode == "keys" and auth.anonymous_scopes and not is_loopback(host):
        log.warning(
            "requests without a key may use %s on %s (auth.anonymous_scopes), rate-limited per client address",
            ", ".join(auth.anonymous_scopes),
            host,
        )


def bootstrap_key(auth: AuthSettings) -> ApiKey | None:
    """The bootstrap admin key from its file (wins) or value; None when neither is set."""
    text: str | None = None
    where = "auth.bootstrap_key"
    if auth.bootstrap_key_file is not None:
        where = f"auth.bootstrap_key_file {auth.bootstrap_key_file}"
        try:
            text = auth.bootstrap_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AuthStartError(f"cannot read {where}: {exc.strerror}") from exc
    elif auth.bootstrap_key is not None:
        text = auth.bootstrap_key.get_secret_value().strip()
    if not text:
        return None
    try:
        return ApiKey.parse(text)
    except KeyFormatError as exc:
        raise AuthStartError(f"{where} holds {exc} (make one with `mmsearch keys generate`)") from exc
