"""Tool parameter types: the public contract of the tools' input schemas.

Ranges, enums and lengths come from the Kling v3.0 API pages
(docs/providers.md#common-fields), so clients see them in the JSON schema (``minimum: 3, maximum: 15``,
``maxLength: 2500``, the aspect-ratio enum) and bad values are refused before any request.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from kling_video_mcp.models import KIND_LABELS, Kind, Mode, Shot
from kling_video_mcp.providers import PROVIDERS, EndpointRules, ProviderName, either
from kling_video_mcp.tasks.service import TASK_REFERENCE

_MODES: dict[Mode, str] = {"std": "Std", "pro": "Pro", "4k": "4K"}
"""Modes as the descriptions write them."""


def _where(takes: Callable[[EndpointRules], bool]) -> str:
    """The routes whose rules ``takes``, by provider: a provider's label alone when all of its
    routes do, else its label and those routes (``<label> Std and 4K image-to-video``)."""
    found = []
    for provider in PROVIDERS:
        if provider.makes_placeholders:
            continue
        routes = {route for route, rules in provider.rules_table.items() if takes(rules)}
        if routes == set(provider.rules_table):
            found.append(provider.label)
            continue
        kinds: list[Kind] = ["t2v", "i2v"]
        for kind in kinds:
            if modes := [_MODES[mode] for mode in _MODES if (kind, mode) in routes]:
                found.append(f"{provider.label} {either(modes, 'and')} {KIND_LABELS[kind]}")
    return either(found, "and")


def _shot_type_defaults() -> str:
    """What each provider that takes ``shot_type`` does without it: ``<label>: intelligent on Std and Pro, customize on 4K``."""
    found = []
    for provider in PROVIDERS:
        defaults: dict[str, list[str]] = {}
        for (kind, mode), rules in provider.rules_table.items():
            label = _MODES[mode]
            if kind == "t2v" and rules.shot_type_default is not None and label not in defaults.get(rules.shot_type_default, []):
                defaults.setdefault(rules.shot_type_default, []).append(label)
        if defaults and not provider.makes_placeholders:
            found.append(f"{provider.label}: " + ", ".join(f"{default} on {either(modes, 'and')}" for default, modes in defaults.items()))
    return "; ".join(found)


TASK_ID_RULE = "a task id is 1 to 200 printable ASCII characters without spaces"
_TASK_ID = re.compile(r"[!-~]{1,200}")


def _valid_task_id(value: str) -> str:
    """Task ids (ours, a provider's) are refused alike on every journal backend when they break
    :data:`TASK_ID_RULE` (PostgreSQL cannot even compare a text holding a NUL)."""
    if not _TASK_ID.fullmatch(value):
        raise ValueError(TASK_ID_RULE)
    return value


def _valid_task_reference(value: str | None) -> str | None:
    """An image given as ``task:<id>[#part]`` names a task id: the same rule applies to it."""
    if value is not None and value.startswith(TASK_REFERENCE):
        _valid_task_id(value.removeprefix(TASK_REFERENCE).partition("#")[0])
    return value


TaskIdText = Annotated[
    str, Field(min_length=1, max_length=200, json_schema_extra={"pattern": _TASK_ID.pattern}), AfterValidator(_valid_task_id)
]


Prompt = Annotated[
    str | None,
    Field(
        max_length=2500,
        description="What the video shows: scene, motion, camera, mood, sounds. At most 2500 characters. "
        "Required unless multi_prompt is given.",
    ),
]
NegativePrompt = Annotated[
    str | None, Field(max_length=2500, description="What to keep out of the picture and sound. At most 2500 characters.")
]
Duration = Annotated[int, Field(ge=3, le=15, description="Clip length in seconds, 3 to 15.")]
AspectRatioParam = Annotated[
    Literal["16:9", "9:16", "1:1"], Field(description="Frame shape: 16:9 landscape, 9:16 portrait, 1:1 square.")
]
CfgScale = Annotated[
    float | None,
    Field(ge=0, le=1, description="0 to 1: higher follows the prompt more strictly, lower moves more naturally (provider default 0.5)."),
]
Sound = Annotated[bool, Field(description="Also generate synchronized audio (can raise the price).")]
ModeParam = Annotated[
    Literal["std", "pro", "4k"],
    Field(description="Kling v3.0 tier: std (720p, cheapest), pro (1080p), 4k (2160p, dearest)."),
]
MultiPrompt = Annotated[
    list[Shot] | None,
    Field(
        min_length=1,
        max_length=6,
        description="Multi-shot video: 1 to 6 shots, each {prompt (at most 512 characters), duration in seconds}; "
        f"the shot durations must add up to `duration`. Each shot is at least 3 s on "
        f"{_where(lambda rules: rules.multi_prompt and rules.shot_seconds.shortest == 3)} "
        "(1 s elsewhere). Cannot be combined with end_image. Whether `prompt` may or must be "
        "given too depends on the provider and mode (an error names the rule and who accepts what).",
    ),
]
ShotTypeParam = Annotated[
    Literal["customize", "intelligent"] | None,
    Field(
        description=f"{_where(lambda rules: rules.shot_type)} only: how shots are cut. 'intelligent': the model cuts "
        f"shots itself from prompt; 'customize': your multi_prompt shots. Without it: {_shot_type_defaults()}. With "
        "multi_prompt and no shot_type, the server sends 'customize'."
    ),
]
ElementList = Annotated[
    list[str] | None,
    Field(
        max_length=3,
        description=f"{_where(lambda rules: rules.element_list)} only: up to 3 Kling element ids to keep consistent in the clip.",
    ),
]
ProviderParam = Annotated[
    ProviderName,
    Field(
        description="Who renders: "
        + either([f"{p.name} (free local placeholder clips)" if p.makes_placeholders else p.name for p in PROVIDERS])
        + "."
    ),
]
ImageRef = Annotated[
    str,
    AfterValidator(_valid_task_reference),
    Field(
        min_length=1,
        description="First frame: a local file path, a file:// URI, an http(s) URL or a data: URI (JPEG or PNG, "
        "at most 10 MB, both sides at least 300 px, aspect ratio between 1:2.5 and 2.5:1); or 'task:<task_id>' "
        "(same as 'task:<task_id>#last_frame'): the last frame of an earlier finished clip, for continuity "
        "between shots.",
    ),
]
EndImageRef = Annotated[
    str | None,
    AfterValidator(_valid_task_reference),
    Field(description="Optional last frame, in the same forms and with the same rules as image. Not with multi_prompt."),
]
ForceNew = Annotated[
    bool,
    Field(description="Submit even if an identical request was made in the last few minutes (otherwise that task is returned)."),
]
WaitSeconds = Annotated[
    int,
    Field(
        ge=0,
        le=50,
        description="Wait up to this many seconds for the task to finish before returning (0-50; progress "
        "notifications are sent meanwhile). Renders take minutes: check again if it is still running.",
    ),
]
MaxCost = Annotated[
    float | None, Field(ge=0, description="Refuse the request, sending nothing, if its estimated cost in USD is above this.")
]
DryRun = Annotated[bool, Field(description="Only check and price the request; send nothing.")]
TaskId = Annotated[TaskIdText | None, Field(description="The task_id returned by generate_video or animate_image.")]
TaskIds = Annotated[
    list[TaskIdText] | None,
    Field(min_length=1, max_length=50, description="Several task_ids at once (e.g. every shot of a storyboard): one row each."),
]
StatusFilter = Annotated[
    Literal["awaiting_confirmation", "queued", "running", "succeeded", "failed"] | None,
    Field(description="Only tasks in this state."),
]
AwaitingTaskId = Annotated[TaskIdText, Field(description="The task_id of a request awaiting confirmation.")]
Decision = Annotated[
    Literal["confirm", "decline"],
    Field(description="The person's answer: confirm sends the request (and spends), decline ends it as declined."),
]
Limit = Annotated[int, Field(ge=1, le=100, description="At most this many tasks, newest first.")]
RecoverProvider = Annotated[
    ProviderName | None,
    Field(description="Only to recover a task submitted elsewhere: its provider (task_id is then the provider's task id)."),
]
RecoverMode = Annotated[
    Literal["std", "pro", "4k"] | None, Field(description="Only to recover a task submitted elsewhere: its mode.")
]
AssemblyTaskIds = Annotated[
    list[TaskIdText],
    Field(
        min_length=2,
        max_length=20,
        description="2 to 20 finished tasks of this server, in the order they play: generated or animated clips, or "
        "earlier assemblies. A task may appear more than once (a repeated shot).",
    ),
]
TransitionParam = Annotated[
    Literal["cut", "crossfade"],
    Field(description="cut: one clip straight after the other (no re-encoding when the clips match); crossfade: "
          "each clip blends into the next over crossfade_seconds (re-encoded; the film is shorter by that per join)."),
]
CrossfadeSeconds = Annotated[
    float, Field(ge=0.2, le=2.0, description="Length of each crossfade in seconds, 0.2 to 2.0 (only with transition='crossfade').")
]
AudioParam = Annotated[
    Literal["keep", "mute"],
    Field(description="keep: the clips' sound, with silence under clips that have none; mute: a film without sound."),
]
Title = Annotated[
    str | None, Field(max_length=100, description="The film's title (at most 100 characters), used in its file name and sidecar.")
]
