"""Owner folders (``tasks/owners.py``: :func:`owner_folder`): a pure function, no server.

Whatever an owner id holds (an OAuth ``sub`` such as ``auth0|65f0...``, slashes, dots, a NUL,
any length; ``oauth:<sub>`` and ``file:<name>``), its clips go to one folder directly inside the output folder, its own: no id
climbs out, and no two ids share one. The local owner keeps the output folder itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kling_video_mcp.tasks.owners import LOCAL_OWNER, owner_folder

NAMES = ["alice", "Alice", "bob.smith", "team-7_video", "a" * 64]
"""Token-file user names (the file allows only these safe names)."""
SUBJECTS = [
    *NAMES, "auth0|65f0c2d1e4", "google-oauth2|1234567890", "user@example.com", "Zoë", "名前",
    "../etc", "..", ".", "a/b", "a\\b", "/abs", "x\x00y", " ", "-dash", "a" * 65, "b" * 500, "file:alice",
]  # fmt: skip
"""OAuth ``sub`` values as issuers spell them, and as an attacker would try them."""
OWNERS = [f"oauth:{subject}" for subject in SUBJECTS] + [f"file:{name}" for name in NAMES]
"""Owner ids: the sign-in method, then the name it knows the caller by."""


def test_the_local_owner_keeps_the_output_folder_itself():
    assert owner_folder(LOCAL_OWNER) == ""


@pytest.mark.parametrize("owner", OWNERS)
def test_every_owner_gets_one_folder_directly_inside_the_output_folder(owner, tmp_path: Path):
    folder = owner_folder(owner)
    assert folder and folder not in (".", "..") and "/" not in folder and "\\" not in folder and "\x00" not in folder
    assert len(folder.encode()) <= 255  # one file name on every common file system
    assert (tmp_path / folder).resolve().parent == tmp_path.resolve()
    assert owner_folder(owner) == folder  # the same every time: a restarted server finds the clips


def test_no_two_owners_share_a_folder():
    folders = [owner_folder(owner) for owner in [LOCAL_OWNER, *OWNERS]]
    assert len(set(folders)) == len(folders)


def test_a_safe_name_is_recognisable_in_its_folder():
    assert "alice" in owner_folder("file:alice") and "65f0c2d1e4" in owner_folder("oauth:auth0|65f0c2d1e4")
