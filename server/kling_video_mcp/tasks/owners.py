"""Whose task is it: owner names, and the folder each owner's clips go to.

An owner is the name of whoever made a task: the OAuth ``sub`` of the caller's token, the
user's name in the token file, or :data:`LOCAL_OWNER` (stdio, ``KLING_MCP_HTTP_TOKEN``, or an
HTTP server without sign-in). Every read of a task on a caller's behalf is filtered by it.
"""

from __future__ import annotations

import hashlib
import re

from kling_video_mcp.models import LOCAL_OWNER
from kling_video_mcp.tasks.files import slug

__all__ = ["LOCAL_OWNER", "owner_folder"]

_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def owner_folder(owner: str) -> str:
    """The subfolder of the output folder that ``owner``'s clips go to (``""``: the folder itself).

    The local owner keeps the output folder itself, as before owners existed. A name that is a
    safe folder name (letters, digits, ``._-``, at most 64) is used as it is; any other (an
    OAuth ``sub`` such as ``auth0|65f0...``) becomes a slug plus a hash of the whole name, so
    two owners never share a folder and no name climbs out of the output folder.
    """
    if owner == LOCAL_OWNER:
        return ""
    if _FOLDER_NAME.fullmatch(owner):
        return owner
    return f"{slug(owner, 40)}-{hashlib.sha256(owner.encode()).hexdigest()[:12]}"
