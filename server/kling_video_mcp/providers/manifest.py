"""``server.json``'s provider entries, made from the registry.

The MCP registry's ``server.json`` lists the environment variables a client may set. Those
that concern providers (each key variable, and ``KLING_MCP_PROVIDER``'s choices) and the
one-line description come from :data:`~kling_video_mcp.providers.PROVIDERS`; every other
entry is kept as written. ``tests/test_server_json.py`` fails when the file and the
registry disagree; ``python -m kling_video_mcp.providers.manifest [server.json]`` rewrites
the file to agree.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from kling_video_mcp.providers import PROVIDER_NAMES, PROVIDERS, either

DESCRIPTION_MAX = 100
"""Characters: the registry schema's limit on ``description``."""


def provider_variables() -> list[dict[str, Any]]:
    """The entries for every registered provider's key variables and for ``KLING_MCP_PROVIDER``."""
    free = [provider for provider in PROVIDERS if not provider.key_variables]
    entries: list[dict[str, Any]] = []
    for provider in PROVIDERS:
        count = len(provider.key_variables)
        for index, variable in enumerate(provider.key_variables):
            which = f" ({index + 1} of {count}; set all {count})" if count > 1 else ""
            entries.append({"name": variable, "description": f"{provider.label} API key{which}.", "isSecret": True})
    if entries and free:
        entries[0]["description"] += (
            f" Set one provider's key to render for real; with none, the free {either([p.name for p in free])} "
            "makes placeholder clips."
        )
    fallback = f", else the {either([p.name for p in free])}" if free else ""
    entries.append({
        "name": "KLING_MCP_PROVIDER",
        "description": f"Default provider; unset means the first provider with its keys set{fallback}.",
        "choices": list(PROVIDER_NAMES),
    })  # fmt: skip
    return entries


def description() -> str:
    """The one-line description: the providers by label while that fits the registry's limit."""
    renderers = [provider.label for provider in PROVIDERS if provider.key_variables]
    free = "; free sandbox" if any(not provider.key_variables for provider in PROVIDERS) else ""
    named = f"Make videos with Kling v3.0 (Std, Pro, 4K) via {either(renderers)}{free}"
    return named if len(named) <= DESCRIPTION_MAX else f"Make videos with Kling v3.0 (Std, Pro, 4K) via {len(renderers)} hosts{free}"


def updated(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` (a parsed ``server.json``) with its provider entries and description made
    from the registry: provider entries first, then the others in their order."""
    registry_entries = provider_variables()
    ours = {entry["name"] for entry in registry_entries}
    for package in manifest["packages"]:
        others = [entry for entry in package.get("environmentVariables", []) if entry["name"] not in ours]
        package["environmentVariables"] = registry_entries + [entry for entry in others if not _stale(entry)]
    return manifest | {"description": description()}


def _stale(entry: dict[str, Any]) -> bool:
    """Whether an entry looks like a provider key (a secret ``*_API_KEY``) that no registered provider has."""
    return bool(entry.get("isSecret")) and entry["name"].endswith("_API_KEY")


def main(argv: list[str]) -> None:
    """Rewrite the ``server.json`` at ``argv[0]`` (default ``./server.json``) to agree with the registry."""
    path = Path(argv[0] if argv else "server.json")
    text = json.dumps(updated(json.loads(path.read_text())), indent=2, ensure_ascii=False)
    # Lists of plain values on one line, as the file is written by hand (``"choices": ["a", "b"]``).
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda match: "[" + re.sub(r",\s+", ", ", match.group(1)) + "]", text)
    path.write_text(text + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
