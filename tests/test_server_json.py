"""``server.json`` lists what the provider registry says: every provider's key variables and
``KLING_MCP_PROVIDER``'s choices (``python -m kling_video_mcp.providers.manifest`` rewrites it)."""

from __future__ import annotations

import json
from pathlib import Path

from kling_video_mcp.providers import PROVIDER_NAMES, PROVIDERS
from kling_video_mcp.providers.manifest import DESCRIPTION_MAX, main, updated

SERVER_JSON_PATH = Path(__file__).resolve().parents[1] / "server.json"


def test_server_json_agrees_with_the_registry():
    manifest = json.loads(SERVER_JSON_PATH.read_text())
    assert updated(json.loads(SERVER_JSON_PATH.read_text())) == manifest, (
        "server.json disagrees with the provider registry: run python -m kling_video_mcp.providers.manifest server.json"
    )
    (package,) = manifest["packages"]
    listed = {entry["name"]: entry for entry in package["environmentVariables"]}
    for provider in PROVIDERS:
        for variable in provider.key_variables:
            assert listed[variable]["isSecret"] is True, variable
            assert provider.label in listed[variable]["description"]
    assert listed["KLING_MCP_PROVIDER"]["choices"] == list(PROVIDER_NAMES)
    assert len(manifest["description"]) <= DESCRIPTION_MAX


def test_the_manifest_tool_writes_the_registry_entries_and_keeps_the_rest(tmp_path):
    """Provider entries missing or of no registered provider are put right; every other entry stays, in order."""
    manifest = json.loads(SERVER_JSON_PATH.read_text())
    (package,) = manifest["packages"]
    keys = [variable for provider in PROVIDERS for variable in provider.key_variables]
    others = [entry for entry in package["environmentVariables"] if entry["name"] not in {*keys, "KLING_MCP_PROVIDER"}]
    package["environmentVariables"] = [{"name": "GONE_API_KEY", "description": "x", "isSecret": True}, *others]
    stale = tmp_path / "server.json"
    stale.write_text(json.dumps(manifest))
    main([str(stale)])
    names = [entry["name"] for entry in json.loads(stale.read_text())["packages"][0]["environmentVariables"]]
    assert names == [*keys, "KLING_MCP_PROVIDER", *(entry["name"] for entry in others)]
