"""Access control of the search service: API keys with scopes (keys.py, stored by key_store.py), the check every
route makes (guard.py, wired in by route.py), rate limits (limits.py) and `mmsearch keys` (cli.py)."""
