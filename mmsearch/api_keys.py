"""The printed form of an mmsearch API key: `mms_<key id>_<secret>`.

A recognisable prefix (secret scanners and people can tell it from other tokens), a key id of 8 random bytes that
names the key everywhere (logs, metrics, `keys list`, exposures), and a secret of 32 random bytes, both lower-case
hex. Shared by the search service (which checks keys), `mmsearch keys` (which makes them) and the clients that send
one (the web UI, `mmsearch eval`); how keys are stored lives with the search service (services/search/auth/).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

PREFIX = "mms"
KEY_ID_BYTES = 8
SECRET_BYTES = 32
KEY_PATTERN = re.compile(rf"{PREFIX}_([0-9a-f]{{{KEY_ID_BYTES * 2}}})_([0-9a-f]{{{SECRET_BYTES * 2}}})")
KEY_LENGTH = len(PREFIX) + 2 + 2 * (KEY_ID_BYTES + SECRET_BYTES)
KEY_FORM = f"{PREFIX}_<{KEY_ID_BYTES * 2} hex digits>_<{SECRET_BYTES * 2} hex digits>"


class KeyFormatError(ValueError):
    """Not a key of ours. The message never repeats the text it was given."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    secret: str

    @classmethod
    def generate(cls) -> ApiKey:
        return cls(secrets.token_hex(KEY_ID_BYTES), secrets.token_hex(SECRET_BYTES))

    @classmethod
    def parse(cls, text: str) -> ApiKey:
        # Length first: a huge header is refused unread (surrounding whitespace, as from a file, is allowed).
        match = KEY_PATTERN.fullmatch(text.strip()) if len(text) <= KEY_LENGTH + 16 else None
        if match is None:
            raise KeyFormatError(f"not an mmsearch API key: a key reads {KEY_FORM}")
        return cls(match.group(1), match.group(2))

    def __str__(self) -> str:
        return f"{PREFIX}_{self.key_id}_{self.secret}"

    def __repr__(self) -> str:  # a key in a traceback or a debug print shows its id only
        return f"ApiKey(key_id={self.key_id!r}, secret=<hidden>)"
