"""Cross-field and per-provider rules, checked before anything is sent or spent.

Single-field rules (ranges, enums, lengths) live in the tool schemas; this module checks
what needs several fields or the provider's endpoint rules (``providers.RULES``).
"""

from __future__ import annotations

from collections.abc import Callable

from kling_video_mcp.errors import InvalidRequest
from kling_video_mcp.models import KIND_LABELS, MODE_LABELS, GenerationRequest
from kling_video_mcp.providers import LABELS, RULES, EndpointRules


def _who_takes(request: GenerationRequest, takes: Callable[[EndpointRules], bool]) -> str:
    names = [name for name, table in RULES.items() if takes(table[(request.kind, request.mode)])]
    where = f"{MODE_LABELS[request.mode]} {KIND_LABELS[request.kind]}"
    if not names:
        return f"no provider takes it for {where}"
    return f"for {where} it is taken by: {', '.join(names)}"


def problems(request: GenerationRequest) -> list[str]:
    """Every rule ``request`` breaks, each naming the field and the rule (empty if none)."""
    rules = RULES[request.provider][(request.kind, request.mode)]
    endpoint = f"{LABELS[request.provider]} {MODE_LABELS[request.mode]} {KIND_LABELS[request.kind]}"
    found: list[str] = []
    if not request.prompt and not request.multi_prompt:
        found.append("prompt: required (or give multi_prompt for a multi-shot video).")
    if request.multi_prompt:
        if rules.multi_prompt is None:
            found.append(
                f"multi_prompt: {endpoint} does not take multi-shot prompts; "
                f"{_who_takes(request, lambda r: r.multi_prompt is not None)}."
            )
        elif request.prompt and not rules.prompt_with_multi_prompt:
            found.append(
                f"prompt and multi_prompt: {endpoint} takes one or the other, not both "
                "(put the whole story in the shots, or drop multi_prompt); "
                f"both together: {_who_takes(request, lambda r: r.prompt_with_multi_prompt)}."
            )
        total = sum(shot.duration for shot in request.multi_prompt)
        if total != request.duration:
            found.append(
                f"multi_prompt: the shot durations add up to {total} s but duration is {request.duration} s; "
                "they must be equal (Kling multi-shot rule)."
            )
        if request.end_image:
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
