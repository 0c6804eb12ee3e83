"""Cross-field and per-provider rules, checked before anything is sent or spent.

Single-field rules (ranges, enums, lengths) live in the tool schemas; this module checks
what needs several fields or the provider's endpoint rules (each provider's ``rules_table``, where each
rule cites its source).
"""

from __future__ import annotations

from collections.abc import Callable

from kling_video_mcp.errors import InvalidRequest
from kling_video_mcp.models import KIND_LABELS, MODE_LABELS, GenerationRequest
from kling_video_mcp.providers import PROVIDERS, EndpointRules, PromptRule, provider_class


def _who_takes(request: GenerationRequest, takes: Callable[[EndpointRules], bool]) -> str:
    """Where ``takes`` holds for the request's kind, as ``provider mode`` pairs (this mode first)."""
    modes = sorted(MODE_LABELS, key=lambda mode: mode != request.mode)
    routes = [
        f"{provider.name} {mode}"
        for mode in modes
        for provider in PROVIDERS
        if not provider.makes_placeholders and takes(provider.rules(request.kind, mode))
    ]
    what = KIND_LABELS[request.kind]
    return f"for {what} it is taken by: {', '.join(routes)}" if routes else f"no provider takes it for {what}"


def _shot_problems(request: GenerationRequest, rules: EndpointRules, endpoint: str) -> list[str]:
    assert request.multi_prompt is not None
    length = rules.shot_seconds
    found = [
        f"multi_prompt[{index}].duration: shot {index + 1} is {shot.duration} s; {endpoint} takes shots of "
        f"{length.shortest} to {length.longest} s each ({length.source})."
        for index, shot in enumerate(request.multi_prompt)
        if not length.shortest <= shot.duration <= length.longest
    ]
    total = sum(shot.duration for shot in request.multi_prompt)
    if total != request.duration:
        found.append(
            f"multi_prompt: the shot durations add up to {total} s but duration is {request.duration} s; "
            "they must be equal (Kling multi-shot rule)."
        )
    return found


def _prompt_problems(request: GenerationRequest, rules: EndpointRules, endpoint: str) -> list[str]:
    if not request.multi_prompt:
        return [] if request.prompt else ["prompt: required (or give multi_prompt for a multi-shot video)."]
    if not rules.multi_prompt:
        return [
            f"multi_prompt: {endpoint} does not take multi-shot prompts; {_who_takes(request, lambda r: r.multi_prompt)}."
        ]
    if request.prompt and rules.prompt is PromptRule.ONE_OF:
        return [
            f"prompt and multi_prompt: {endpoint} takes one or the other, not both ({rules.source}); put the whole "
            "story in the shots, or drop multi_prompt. Both together: "
            f"{_who_takes(request, lambda r: r.multi_prompt and r.prompt is not PromptRule.ONE_OF)}."
        ]
    if not request.prompt and rules.prompt is PromptRule.REQUIRED:
        return [
            f"prompt: {endpoint} requires it even with multi_prompt ({rules.source}); add a prompt that describes "
            "the whole clip."
        ]
    return []


def problems(request: GenerationRequest) -> list[str]:
    """Every rule ``request`` breaks, each naming the field and the rule (empty if none)."""
    provider = provider_class(request.provider)
    rules = provider.rules(request.kind, request.mode)
    endpoint = f"{provider.label} {MODE_LABELS[request.mode]} {KIND_LABELS[request.kind]}"
    found = _prompt_problems(request, rules, endpoint)
    if request.multi_prompt and rules.multi_prompt:
        found += _shot_problems(request, rules, endpoint)
        if request.shot_type not in (None, "customize") and rules.shot_type:
            found.append(
                f"shot_type: {request.shot_type!r} lets the model cut the shots itself from prompt; multi_prompt "
                "needs 'customize' (or leave shot_type unset and the server sends it) (docs/providers.md#shot-type)."
            )
    if request.multi_prompt and request.end_image:
        found.append("end_image: cannot be used together with multi_prompt (a rule of every provider).")
    if request.shot_type is not None and not rules.shot_type:
        found.append(f"shot_type: {endpoint} does not take it; {_who_takes(request, lambda r: r.shot_type)}.")
    if request.element_list and not rules.element_list:
        found.append(f"element_list: {endpoint} does not take it; {_who_takes(request, lambda r: r.element_list)}.")
    return found


def check(request: GenerationRequest) -> None:
    """Raise :class:`InvalidRequest` listing every broken rule, if any."""
    if found := problems(request):
        raise InvalidRequest("Invalid request, nothing was sent: " + " ".join(found))
