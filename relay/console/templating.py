"""The console's templates and static files. Jinja2 is imported and the environment built on the
first console request, so that a relay start (and a Lambda cold start) does not pay for it."""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay.http.api import ApiResponse

if TYPE_CHECKING:
    from jinja2 import Environment

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
# The vendored libraries (see static/README.md); the version is in the name.
HTMX = "htmx-2.0.11.min.js"
UPLOT = "uPlot-1.6.32.iife.min.js"
UPLOT_CSS = "uPlot-1.6.32.min.css"

CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    # No inline script anywhere: the pages load only the console's own files.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline';"
        " img-src 'self' data:; connect-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@functools.cache
def environment() -> Environment:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ts=ts, clock=clock, excerpt=excerpt, ms=ms)
    env.globals.update(static=static_url, HTMX=HTMX, UPLOT=UPLOT, UPLOT_CSS=UPLOT_CSS)
    return env


def render(name: str, code: int = 200, /, **context: Any) -> ApiResponse:
    """An HTML response from template ``name``; never cached (it shows live data)."""
    html = environment().get_template(name).render(**context)
    return ApiResponse(
        code,
        html.encode(),
        {
            "Content-Type": "text/html; charset=utf-8",
            "Cache-Control": "no-store",
            **SECURITY_HEADERS,
        },
    )


@functools.cache
def static_file(name: str) -> tuple[bytes, str] | None:
    """A file of ``static/`` and its content type; None unless it is one of them."""
    path = STATIC / name
    content_type = CONTENT_TYPES.get(path.suffix)
    if content_type is None or "/" in name or name.startswith(".") or not path.is_file():
        return None
    return path.read_bytes(), content_type


@functools.cache
def static_url(name: str) -> str:
    """The URL of a static file, with a digest of its content: browsers may keep it forever."""
    found = static_file(name)
    digest = hashlib.sha256(found[0] if found else b"").hexdigest()[:10]
    return f"/console/static/{name}?v={digest}"


# --- filters ---------------------------------------------------------------------------------


def ts(value: int | None) -> str:
    """Milliseconds since the epoch as UTC date and time."""
    if value is None:
        return "—"
    return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(value: int | None) -> str:
    """Milliseconds since the epoch as a UTC time of day, to the millisecond."""
    if value is None:
        return "—"
    moment = datetime.fromtimestamp(value / 1000, UTC)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def ms(value: float | None) -> str:
    """A duration in milliseconds, readable."""
    if value is None:
        return "—"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 120_000:
        return f"{value / 1000:.2f} s"
    return f"{value / 60_000:.1f} min"


def excerpt(value: str | None, limit: int = 500) -> str:
    """The start of a long text, with a note of how much was left out."""
    if not value:
        return ""
    if len(value) <= limit:
        return value
    return value[:limit] + f"… ({len(value) - limit:,} more characters)"
