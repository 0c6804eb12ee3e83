"""Whose task is it: owner ids, the names they show, and the folder each owner's clips go to.

An owner id says how its owner signed in, so two sign-in methods can never name one person:

- ``oauth:<sub>``: the caller of an OAuth access token, by its ``sub`` (:func:`oauth_owner`);
- ``file:<name>``: a user of the token file, by their name there (:func:`token_file_owner`);
- :data:`LOCAL_OWNER` (``local``): stdio, ``KLING_MCP_HTTP_TOKEN``, or an HTTP server without
  sign-in. No sign-in method can produce it (every other id has a prefix).

A token-file name equal to some issuer's ``sub`` is therefore another user, with other tasks, other
budgets and another folder. Every read of a task on a caller's behalf is filtered by the id.
Journals from before the prefixes are migrated by ``journal/sqlite.py`` and ``journal/postgres.py``.
"""

from __future__ import annotations

import hashlib
import re

from kling_video_mcp.models import LOCAL_OWNER
from kling_video_mcp.tasks.files import slug

__all__ = ["LOCAL_OWNER", "oauth_owner", "owner_folder", "owner_name", "token_file_owner"]

OAUTH = "oauth"
TOKEN_FILE = "file"
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A name that is a safe folder name on every system: the token file's rule for user names."""


def oauth_owner(subject: str) -> str:
    """The owner id of the OAuth user whose token's ``sub`` is ``subject``."""
    return f"{OAUTH}:{subject}"


def token_file_owner(name: str) -> str:
    """The owner id of the token-file user called ``name``."""
    return f"{TOKEN_FILE}:{name}"


def owner_name(owner: str) -> str:
    """The name an owner id shows in messages: the ``sub`` or token-file name without its prefix."""
    return owner.partition(":")[2] or owner


def owner_folder(owner: str) -> str:
    """The subfolder of the output folder that ``owner``'s clips go to (``""``: the folder itself).

    Out: one safe file name (letters, digits, ``._-@``), never ``.`` or ``..``, different for
    every owner id:

    - the local owner keeps the output folder itself, as before owners existed;
    - a token-file user gets their name as it is (the token file allows only safe names);
    - any other owner (an OAuth user) gets ``<method>@<name>``, where ``<name>`` is the ``sub``
      if it is a safe name, else a slug plus a hash of the whole ``sub`` (``auth0|65f0...``).
      A token-file name never contains ``@``, so no OAuth user shares a token-file user's folder.
    """
    if owner == LOCAL_OWNER:
        return ""
    method, _, name = owner.partition(":")
    if method == TOKEN_FILE and SAFE_NAME.fullmatch(name):
        return name
    if not SAFE_NAME.fullmatch(name):
        name = f"{slug(name, 40)}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return f"{slug(method, 16)}@{name}"
