"""HighwayAPI (https://highwayapi.ai): Kling v3.0 over the Novita protocol (``novita_family.py``)."""

from __future__ import annotations

from kling_video_mcp.providers.base import SHORTEST_SHOT_3, EndpointRules, PromptRule, RulesTable
from kling_video_mcp.providers.novita_family import NovitaProtocol

# Each row's ``source`` says where its prompt/multi_prompt rule is written
# (docs/providers.md#highway-prompt-rule). Shots and inline images as on Novita's routes (see ``novita.py``).
RULES: RulesTable = {
    ("t2v", "std"): EndpointRules(source="HighwayAPI's std-t2v, like Novita's: no multi_prompt (docs/providers.md#highway-prompt-rule, inferred)"),
    ("t2v", "4k"): EndpointRules(
        source="HighwayAPI's 4k-t2v page: prompt and multi_prompt mutually exclusive (docs/providers.md#highway-prompt-rule)",
        prompt=PromptRule.ONE_OF, multi_prompt=True,
    ),
    ("t2v", "pro"): EndpointRules(
        source="HighwayAPI's pro-t2v page: mutually exclusive (docs/providers.md#highway-prompt-rule)",
        prompt=PromptRule.ONE_OF, multi_prompt=True,
    ),
    ("i2v", "std"): EndpointRules(
        source="HighwayAPI's std-i2v page; prompt optional with multi_prompt (docs/providers.md#highway-prompt-rule, inferred)",
        prompt=PromptRule.EITHER, multi_prompt=True, shot_seconds=SHORTEST_SHOT_3, inline_images=True,
    ),
    ("i2v", "4k"): EndpointRules(
        source="HighwayAPI's 4k-i2v page: multi_prompt mutually exclusive with prompt (docs/providers.md#highway-prompt-rule)",
        prompt=PromptRule.ONE_OF, multi_prompt=True, shot_seconds=SHORTEST_SHOT_3, inline_images=None,
    ),
    ("i2v", "pro"): EndpointRules(
        source="HighwayAPI's pro-i2v page, exclusive like its 4k-i2v (docs/providers.md#highway-prompt-rule, inferred)",
        prompt=PromptRule.ONE_OF, multi_prompt=True, inline_images=True,
    ),
}  # fmt: skip
"""HighwayAPI's Kling v3.0 routes."""


class Highway(NovitaProtocol):
    """HighwayAPI: ``HIGHWAY_API_KEY``, ``https://api.highwayapi.ai`` (docs/providers.md#highwayapi)."""

    name = "highway"
    label = "HighwayAPI"
    key_variables = ("HIGHWAY_API_KEY",)
    base_url_variable = "HIGHWAY_BASE_URL"
    default_base_url = "https://api.highwayapi.ai"
    rules_table = RULES
