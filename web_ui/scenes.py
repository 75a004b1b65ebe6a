"""Which scenes the search service can answer, read from its GET /ready body.

The page uses this to show "text-to-image is not configured, here is how" before anyone searches, instead
of an error after. Scene names are the reference's (questionAnswer, textToImage) or the URL's (qa, t2i, i2i).
"""

from __future__ import annotations

from typing import Any

SCENE_ALIASES = {
    "questionanswer": "qa",
    "qa": "qa",
    "texttoimage": "t2i",
    "t2i": "t2i",
    "imagetoimage": "i2i",
    "i2i": "i2i",
    "searchbyimage": "i2i",
    "documents": "doc",
    "doc": "doc",
}


def _short(name: object) -> str | None:
    return SCENE_ALIASES.get(str(name).replace("_", "").replace("-", "").lower())


def _state(value: object) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"enabled": value}
    if isinstance(value, str):  # "enabled", or the reason the scene is disabled
        if value.lower() in ("ok", "ready", "enabled", "true"):
            return {"enabled": True}
        return {"enabled": False, "message": value[:500]}
    if isinstance(value, dict):
        enabled = value.get("enabled", value.get("ready", value.get("ok")))
        message = value.get("reason") or value.get("message") or value.get("hint") or value.get("detail")
        state: dict[str, Any] = {"enabled": bool(enabled) if enabled is not None else None}
        if message:
            state["message"] = str(message)[:500]
        return state
    return {"enabled": None}


def scene_states(ready: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"qa": {"enabled": bool | None, "message"?: str}, ...} for the scenes /ready mentions.

    The search service reports {"config": {"scenes": {"textToImage": "enabled" | "<why it is disabled>"}}}.
    """
    config = ready.get("config")
    raw = config.get("scenes") if isinstance(config, dict) and "scenes" in config else ready.get("scenes")
    out: dict[str, dict[str, Any]] = {}
    if isinstance(raw, dict):
        for name, value in raw.items():
            short = _short(name)
            if short:
                out[short] = _state(value)
    elif isinstance(raw, list):
        for entry in raw:
            if isinstance(entry, dict) and "name" in entry:
                short = _short(entry["name"])
                if short:
                    out[short] = _state(entry)
    # Search by image uses the same CLIP model as text-to-image; if /ready names only one, mirror it.
    if "t2i" in out and "i2i" not in out:
        out["i2i"] = dict(out["t2i"])
    return out
