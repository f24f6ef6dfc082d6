"""What a vendor gets, before it goes live (filled in by the preview work: see pages.py's route list)."""

from __future__ import annotations


def add_routes(server) -> None:
    """GET /tenants/{tenant}/targets/{target}/preview and its parts."""
