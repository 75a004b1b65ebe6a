"""The local stack's two API keys: an admin key for the person at the terminal (writes, /ready's details, /metrics)
and the web UI's key (search, feedback, and documents for its "Add photos"). Search stays open without a key on
loopback, so the README's curl needs none.

The keys are generated into var/local/keys/ (mode 600) before any process starts, so the web UI reads its key at
start; the setup process stores them (salted hashes) in the stack's MongoDB before the search service starts. A
later start reuses both: the files and the stored keys survive restarts with the rest of var/.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mmsearch.api_keys import ApiKey
from mmsearch.files import write_text_atomic
from mmsearch.settings import MongoSettings, Scope, load_settings
from mmsearch.stores import mongo_client
from services.search.auth import key_store
from services.search.auth.keys import KeyRecord


@dataclass(frozen=True)
class LocalKey:
    name: str
    file_name: str
    scopes: tuple[Scope, ...]


ADMIN = LocalKey("local-admin", "admin.key", ("admin",))
WEB_UI = LocalKey("local-web-ui", "web-ui.key", ("search", "feedback", "documents"))  # documents: "Add photos"
LOCAL_KEYS = (ADMIN, WEB_UI)
# What callers without a key may do on the local stack (loopback only): search, as the README's curl does.
ANONYMOUS_SCOPES: tuple[Scope, ...] = ("search",)


def key_file(keys_dir: Path, key: LocalKey) -> Path:
    return keys_dir / key.file_name


def ensure_key_files(keys_dir: Path) -> None:
    """Generate each key file that is missing, readable by its owner only."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    for key in LOCAL_KEYS:
        path = key_file(keys_dir, key)
        if not path.is_file():
            write_text_atomic(path, f"{ApiKey.generate()}\n", private=True)


def store_keys(keys_dir: Path, mongo_uri: str) -> list[str]:
    """Store every local key MongoDB does not hold yet; returns one line per key for the setup log."""
    settings = load_settings()
    mongo = MongoSettings(uri=mongo_uri, database=settings.mongo.database)
    client = mongo_client(mongo, appname="mmsearch-local-setup")
    lines: list[str] = []
    try:
        coll = client[mongo.database][settings.auth.collection]
        key_store.ensure_indexes(coll)
        for local in LOCAL_KEYS:
            path = key_file(keys_dir, local)
            key = ApiKey.parse(path.read_text(encoding="utf-8").strip())
            stored = key_store.find(coll, key.key_id)
            now = key_store.now()
            if stored is None:
                key_store.insert(coll, KeyRecord.issue(key, name=local.name, scopes=local.scopes, now=now))
                state = "created"
            else:
                state = stored.state(now)
                if set(stored.scopes) != set(local.scopes):  # a stack made by an older release
                    key_store.set_scopes(coll, key.key_id, local.scopes)
                    state += f", scopes now {','.join(local.scopes)}"
            lines.append(f"{local.name} key {key.key_id} ({','.join(local.scopes)}): {state}, in {path}")
    finally:
        client.close()
    return lines
