"""The task journal: one interface (:class:`Journal`), two backends.

``KLING_MCP_DATABASE_URL`` unset: the embedded SQLite file in ``KLING_MCP_STATE_DIR``
(:mod:`.sqlite`, zero setup). ``postgresql://…``: PostgreSQL (:mod:`.postgres`, the
``kling-video-mcp[postgres]`` extra), for several workers on one or several machines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from kling_video_mcp.config import Settings
from kling_video_mcp.journal.base import EventKind, Journal, LegacyNames, Listener, is_open, token_digest

__all__ = ["EventKind", "Journal", "LegacyNames", "Listener", "is_open", "legacy_names", "open_journal", "token_digest"]


def legacy_names(settings: Settings) -> LegacyNames:
    """The sign-in method of old owners whose name could be either method's (see :data:`~kling_video_mcp.journal.base.LegacyNames`)."""
    return "oauth" if settings.oauth_issuer is not None and settings.http_tokens_file is None else "file"


@asynccontextmanager
async def open_journal(settings: Settings) -> AsyncIterator[Journal]:
    """The journal ``settings`` name, open for the life of the context.

    Raises:
        RuntimeError: ``KLING_MCP_DATABASE_URL`` names PostgreSQL but psycopg is not installed.
    """
    url = settings.database_url
    if url is None:
        from kling_video_mcp.journal.sqlite import SqliteJournal

        journal = SqliteJournal(settings.journal_path, legacy_names(settings))
        try:
            yield journal
        finally:
            await journal.aclose()
        return
    try:
        from kling_video_mcp.journal.postgres import PostgresJournal
    except ImportError as exc:
        raise RuntimeError(
            "KLING_MCP_DATABASE_URL names a PostgreSQL database, but its driver is not installed: "
            "pip install 'kling-video-mcp[postgres]'"
        ) from exc
    async with PostgresJournal.open(url.get_secret_value(), legacy_names=legacy_names(settings)) as journal:
        yield journal
