"""File names for clips: sortable by creation time, and telling what they are."""

from __future__ import annotations

import re
import unicodedata

from kling_video_mcp.models import TaskRecord

SLUG_CHARS = 40


def slug(text: str, limit: int = SLUG_CHARS) -> str:
    """ASCII, lower-case, dash-separated, at most ``limit`` characters (``clip`` if empty)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return words[:limit].rstrip("-") or "clip"


def clip_filename(record: TaskRecord) -> str:
    """``YYYYmmdd-HHMMSS_<provider>-<mode>_<prompt slug>_<task id head>.mp4``."""
    request = record.request
    text = request.prompt or " ".join(shot.prompt for shot in request.multi_prompt or []) or "clip"
    stamp = record.created_at.strftime("%Y%m%d-%H%M%S")
    return f"{stamp}_{record.provider}-{record.mode}_{slug(text)}_{record.task_id[:12]}.mp4"
