"""Files a person can find: clip names that sort and tell what they are, and what their JSON sidecars say."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from kling_video_mcp.media.companions import SidecarBody
from kling_video_mcp.models import ClipFacts, TaskRecord

SLUG_CHARS = 40


def slug(text: str, limit: int = SLUG_CHARS) -> str:
    """ASCII, lower-case, dash-separated, at most ``limit`` characters (``clip`` if empty)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return words[:limit].rstrip("-") or "clip"


def clip_filename(record: TaskRecord) -> str:
    """``YYYYmmdd-HHMMSS_<provider>-<mode>_<prompt slug>_<task id head>.mp4``; for an
    assembly, ``YYYYmmdd-HHMMSS_final-cut_<title slug>_<task id head>.mp4``."""
    stamp = record.created_at.strftime("%Y%m%d-%H%M%S")
    if record.assembly is not None:
        return f"{stamp}_final-cut_{slug(record.assembly.title or 'film')}_{record.task_id[:12]}.mp4"
    request = record.request
    assert request is not None
    text = request.prompt or " ".join(shot.prompt for shot in request.multi_prompt or []) or "clip"
    return f"{stamp}_{record.provider}-{record.mode}_{slug(text)}_{record.task_id[:12]}.mp4"


SIDECAR_FIELDS = (
    "task_id", "provider", "provider_task_id", "mode", "kind", "endpoint", "request", "created_at",
    "finished_at", "estimated_cost_usd", "video_url", "sha256", "size_bytes", "clip_facts", "assembly",
)  # fmt: skip


def sidecar_body(record: TaskRecord) -> SidecarBody:
    """What ``<clip>.json`` holds for ``record``'s clip (given the clip's probed facts): the prompt,
    every parameter, ids, times, cost, sha256, the facts, and for a film its sources.
    :func:`~kling_video_mcp.media.companions.make_companions` writes it."""

    def body(facts: ClipFacts | None) -> dict[str, Any]:
        fields = record.model_dump(mode="json", include=set(SIDECAR_FIELDS))
        return fields | {"clip_facts": facts.model_dump(mode="json") if facts is not None else None}

    return body
