"""What every HTTP client of rosterd (the CERS client, the webhook target) reads from an answer the same way."""

from __future__ import annotations


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
