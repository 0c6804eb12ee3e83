"""Novita AI (https://novita.ai): Kling v3.0 over the Novita protocol (``novita_family.py``)."""

from __future__ import annotations

from kling_video_mcp.providers.base import SHORTEST_SHOT_3, EndpointRules, PromptRule, RulesTable
from kling_video_mcp.providers.novita_family import NovitaProtocol

# Each row's ``source`` says where its prompt/multi_prompt rule is written (docs/providers.md#novita-rules
# and #highway-rules). Every multi_prompt is [{prompt, duration}] (docs/providers.md#multi-shot-prompts). Shots of 3-15 s on
# std-i2v and 4k-i2v (docs/providers.md#shot-lengths, PPIO's copy of the pages). Inline (base64) images: taken,
# uncertain on 4k-i2v (docs/providers.md#novita-inline-images: one integration sends that route public URLs only).
_TEXT_ONLY = EndpointRules(source="Novita's std-t2v and 4k-t2v pages (docs/providers.md#novita-prompt-rule): prompt required, no multi_prompt")

RULES: RulesTable = {
    ("t2v", "std"): _TEXT_ONLY,
    ("t2v", "4k"): _TEXT_ONLY,
    ("t2v", "pro"): EndpointRules(
        source="Novita's pro-t2v page: prompt and multi_prompt mutually exclusive (docs/providers.md#novita-prompt-rule)",
        prompt=PromptRule.ONE_OF, multi_prompt=True,
    ),
    ("i2v", "std"): EndpointRules(
        source="Novita's std-i2v page marks prompt required (docs/providers.md#novita-prompt-rule)",
        multi_prompt=True, shot_seconds=SHORTEST_SHOT_3, inline_images=True,
    ),
    ("i2v", "4k"): EndpointRules(
        source="Novita's 4k-i2v page marks prompt required (docs/providers.md#novita-prompt-rule)",
        multi_prompt=True, shot_seconds=SHORTEST_SHOT_3, inline_images=None,
    ),
    ("i2v", "pro"): EndpointRules(
        source="Novita's pro-i2v page: multi_prompt mutually exclusive with prompt (docs/providers.md#novita-prompt-rule)",
        prompt=PromptRule.ONE_OF, multi_prompt=True, inline_images=True,
    ),
}  # fmt: skip
"""Novita AI's Kling v3.0 routes."""


class Novita(NovitaProtocol):
    """Novita AI: ``NOVITA_API_KEY``, ``https://api.novita.ai`` (docs/providers.md#novita-ai)."""

    name = "novita"
    label = "Novita AI"
    key_variables = ("NOVITA_API_KEY",)
    base_url_variable = "NOVITA_BASE_URL"
    default_base_url = "https://api.novita.ai"
    rules_table = RULES
