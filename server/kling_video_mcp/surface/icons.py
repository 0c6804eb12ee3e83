"""Icons for the server and its tools (SEP-973), as ``data:`` URIs so they work over stdio too.

Clients fetch no URL for them: VS Code, for one, shows only ``data:`` or ``file:`` icons for
a stdio server (https://github.com/microsoft/vscode/issues/265892). Each is a small SVG: a white glyph on a blue rounded
square, readable on light and dark themes alike, so one icon serves both.
"""

from __future__ import annotations

import base64

from mcp.types import Icon

_FRAME = '<rect width="24" height="24" rx="5" fill="#1f6feb"/>'
_GLYPHS = {
    # A clapperboard: the server.
    "server": '<path d="M5 10h14v8a1 1 0 0 1-1 1H6a1 1 0 0 1-1-1z" fill="#fff"/>'
    '<path d="M5 6.5 18 4l.6 3L5.6 9.5z" fill="#fff"/>',
    # A play triangle with a spark: making a video from words.
    "generate_video": '<path d="M8 6v12l9-6z" fill="#fff"/><path d="M18 3l.7 1.8L20.5 5.5l-1.8.7L18 8l-.7-1.8'
    'L15.5 5.5l1.8-.7z" fill="#fff"/>',
    # A picture whose mountain turns into a play triangle: an image set in motion.
    "animate_image": '<rect x="4" y="5" width="16" height="14" rx="1.5" fill="none" stroke="#fff" stroke-width="2"/>'
    '<path d="M10 9v6l5-3z" fill="#fff"/>',
    # A clock: how a render is getting on.
    "check_task": '<circle cx="12" cy="12" r="7" fill="none" stroke="#fff" stroke-width="2"/>'
    '<path d="M12 8v4l3 2" fill="none" stroke="#fff" stroke-width="2" stroke-linecap="round"/>',
    # A list: the journal's tasks.
    "list_tasks": '<path d="M9 7h10M9 12h10M9 17h10" stroke="#fff" stroke-width="2" stroke-linecap="round"/>'
    '<circle cx="5.5" cy="7" r="1.3" fill="#fff"/><circle cx="5.5" cy="12" r="1.3" fill="#fff"/>'
    '<circle cx="5.5" cy="17" r="1.3" fill="#fff"/>',
    # Three frames joined into one strip: the final cut (for assemble_video).
    "assemble_video": '<rect x="3" y="7" width="18" height="10" rx="1.5" fill="#fff"/>'
    '<path d="M9 7v10M15 7v10" stroke="#1f6feb" stroke-width="1.5"/>',
    # A coin with a tick: a person's yes to spending.
    "confirm_spend": '<circle cx="12" cy="12" r="7.5" fill="none" stroke="#fff" stroke-width="2"/>'
    '<path d="M8.5 12.2l2.4 2.4 4.8-5" fill="none" stroke="#fff" stroke-width="2" stroke-linecap="round" '
    'stroke-linejoin="round"/>',
}


def svg(name: str) -> str:
    """The SVG document of the icon ``name`` (``server`` or a tool's name)."""
    return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">{_FRAME}{_GLYPHS[name]}</svg>'


def icons(name: str) -> list[Icon]:
    """The icon list for ``name``, one scalable SVG as a ``data:`` URI.

    Raises:
        KeyError: there is no icon called ``name``.
    """
    data = base64.b64encode(svg(name).encode()).decode("ascii")
    return [Icon(src=f"data:image/svg+xml;base64,{data}", mime_type="image/svg+xml", sizes=["any"])]
