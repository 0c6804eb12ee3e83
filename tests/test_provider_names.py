"""No server module outside ``providers/`` and ``emulator/`` names a provider: they read the
registry (``kling_video_mcp.providers.PROVIDERS``), so adding a provider touches its own files only."""

from __future__ import annotations

import re
from pathlib import Path

from kling_video_mcp.providers import PROVIDERS

PACKAGE = Path(__file__).resolve().parents[1] / "server" / "kling_video_mcp"
OWN_FOLDERS = ("providers", "emulator")
ALLOWED = {
    "surface/results.py": {"sandbox"},  # the result field ``sandbox`` (a bool), part of the tools' output schema
}


MODEL_WORDS = {"kling"}
"""The model every provider runs (Kling v3.0, and this server's own name): not a provider's name,
though Kling's own API is also a provider called ``kling``; its key variables still count."""


def provider_words() -> set[str]:
    """Each provider's name, label and key variables, as they could be spelled in code or text."""
    words = {word.lower() for provider in PROVIDERS for word in (provider.name, provider.label, *provider.key_variables)}
    return words - MODEL_WORDS


def test_no_module_outside_providers_names_a_provider():
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(provider_words(), key=len, reverse=True))) + r")\b", re.IGNORECASE)
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.split("/")[0] in OWN_FOLDERS:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            named = {match.lower() for match in pattern.findall(line)} - ALLOWED.get(relative, set())
            if named:
                found.append(f"{relative}:{number}: {', '.join(sorted(named))}: {line.strip()}")
    assert found == [], "name providers through the registry instead:\n" + "\n".join(found)
