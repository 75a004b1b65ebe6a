"""Response headers that keep the page safe even if data slips through: a strict Content-Security-Policy
(no inline scripts or styles, the browser may only talk to this origin), no MIME sniffing, no framing."""

from __future__ import annotations

from flask import Response


def content_security_policy(image_sources: list[str]) -> str:
    img = " ".join(["'self'", "data:", "blob:", *image_sources])
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {img}",
            "connect-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


def add_security_headers(response: Response, csp: str) -> Response:
    headers = response.headers
    headers["Content-Security-Policy"] = csp
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    # Result images may live on other hosts: don't tell them what the user searched for.
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if response.mimetype == "application/json":
        headers["Cache-Control"] = "no-store"
    return response
