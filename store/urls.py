"""Database URLs as SQLAlchemy wants them, and as messages may show them."""

from __future__ import annotations

from switchyard.base.redaction import masked_url


def normalize_url(url: str) -> str:
    """`postgres://` and `postgresql://` use psycopg 3; other URLs are left as they are."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def masked(url: str) -> str:
    """The URL, normalized, with its password hidden, for messages."""
    return masked_url(normalize_url(url))
