"""What every HTTP client of rosterd (the CERS client, the webhook target) reads from an answer the same way, and
the low-level aiohttp server its own HTTP listeners (health, the OneRoster API) share."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from aiohttp import web


def retry_after_seconds(value: str | None) -> float | None:
    """An HTTP Retry-After header in seconds; None when absent or an HTTP date (the backoff policy decides)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def shortened(text: str, limit: int = 300) -> str:
    """A receiver's answer as one line fit for a delivery's error: whitespace folded, at most `limit` chars."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


class _PlainErrors(web.RequestHandler):
    """aiohttp answers a malformed request with its parser's message, which quotes the offending bytes; this
    answers with the status phrase alone."""

    __slots__ = ()

    def handle_error(self, request, status=500, exc=None, message=None):  # aiohttp's signature
        return super().handle_error(request, status, exc, f"{status} {HTTPStatus(status).phrase}\n")


class PlainServer(web.Server):
    """web.Server(handler) without access logs and with plain parser errors."""

    def __call__(self) -> web.RequestHandler:
        return _PlainErrors(self, loop=asyncio.get_running_loop(), access_log=None)
