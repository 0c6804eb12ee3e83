"""Novita AI and HighwayAPI: one wire protocol, told apart by data.

Both serve ``POST /v3/async/kling-v3.0-{std,pro,4k}-{t2v,i2v}`` answering ``{"task_id"}``
and ``GET /v3/async/task-result?task_id=`` (providers.md §1, §2). They differ only in
their per-route rules (:data:`NOVITA_RULES`, :data:`HIGHWAY_RULES`), each citing its source.
"""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import httpx2

from kling_video_mcp.config import Mode, ProviderName, Settings
from kling_video_mcp.errors import InvalidRequest, KlingError, NotFound, ProviderError, UnknownOutcome
from kling_video_mcp.models import GenerationRequest, ImageSource, Kind, ProviderUpdate, TaskStatus, utcnow
from kling_video_mcp.providers.base import (
    SHORTEST_SHOT_3, EndpointRules, KeyCheck, PromptRule, ProviderAdapter, RulesTable, Submitted,
)  # fmt: skip
from kling_video_mcp.providers.http import classify_body_error, classify_error, json_body

# Each row's ``source`` says where its prompt/multi_prompt rule is written (providers.md, with
# §10 winning over §1-§9). Every multi_prompt is [{prompt, duration}] (§10.1). Shots of 3-15 s on
# std-i2v and 4k-i2v (§10.4, PPIO's copy of the pages). Inline (base64) images: taken per §1.3,
# uncertain on 4k-i2v (§10.6: one integration sends that route public URLs only).
_TEXT_ONLY = EndpointRules(source="Novita's std-t2v and 4k-t2v pages (shared/specs): prompt required, no multi_prompt")

NOVITA_RULES: RulesTable = {
    ("t2v", "std"): _TEXT_ONLY,
    ("t2v", "4k"): _TEXT_ONLY,
    ("t2v", "pro"): EndpointRules(
        source="Novita's pro-t2v page: prompt and multi_prompt mutually exclusive (providers.md §1.3, §10.1)",
        prompt=PromptRule.ONE_OF, multi_prompt=True,
    ),
    ("i2v", "std"): EndpointRules(
        source="Novita's std-i2v page marks prompt required (providers.md §10.7)",
        multi_prompt=True, shot_seconds=SHORTEST_SHOT_3, inline_images=True,
    ),
    ("i2v", "4k"): EndpointRules(
        source="Novita's 4k-i2v page marks prompt required (shared/specs, providers.md §10.7)",
        multi_prompt=True, shot_seconds=SHORTEST_SHOT_3, inline_images=None,
    ),
    ("i2v", "pro"): EndpointRules(
        source="Novita's pro-i2v page: multi_prompt mutually exclusive with prompt (providers.md §10.2)",
        prompt=PromptRule.ONE_OF, multi_prompt=True, inline_images=True,
    ),
}  # fmt: skip
"""Novita AI's Kling v3.0 routes."""

HIGHWAY_RULES: RulesTable = {
    ("t2v", "std"): EndpointRules(source="HighwayAPI's std-t2v, like Novita's: no multi_prompt (providers.md §2.2) [I]"),
    ("t2v", "4k"): EndpointRules(
        source="HighwayAPI's 4k-t2v page: prompt and multi_prompt mutually exclusive (shared/specs)",
        prompt=PromptRule.ONE_OF, multi_prompt=True,
    ),
    ("t2v", "pro"): EndpointRules(
        source="HighwayAPI's pro-t2v page: mutually exclusive (providers.md §2.3)",
        prompt=PromptRule.ONE_OF, multi_prompt=True,
    ),
    ("i2v", "std"): EndpointRules(
        source="HighwayAPI's std-i2v page; prompt optional with multi_prompt (providers.md §2.3, §6.2 [I])",
        prompt=PromptRule.EITHER, multi_prompt=True, shot_seconds=SHORTEST_SHOT_3, inline_images=True,
    ),
    ("i2v", "4k"): EndpointRules(
        source="HighwayAPI's 4k-i2v page: multi_prompt mutually exclusive with prompt (providers.md §2.3)",
        prompt=PromptRule.ONE_OF, multi_prompt=True, shot_seconds=SHORTEST_SHOT_3, inline_images=None,
    ),
    ("i2v", "pro"): EndpointRules(
        source="HighwayAPI's pro-i2v page, exclusive like its 4k-i2v (providers.md §10.1, §6.2 [I])",
        prompt=PromptRule.ONE_OF, multi_prompt=True, inline_images=True,
    ),
}  # fmt: skip
"""HighwayAPI's Kling v3.0 routes."""

_STATUSES: dict[str, TaskStatus] = {
    "TASK_STATUS_QUEUED": "queued",
    "TASK_STATUS_PROCESSING": "running",
    "TASK_STATUS_SUCCEED": "succeeded",
    "TASK_STATUS_FAILED": "failed",
    "TASK_STATUS_CANCELED": "failed",
}
"""providers.md §7.1; any other status counts as still running."""

_CONTENT_WORDS = ("moderation", "sensitive", "inappropriate", "illegal", "nsfw")


def content_refusal(reason: str) -> bool:
    """Whether a task's failure reason reads as a content-policy refusal."""
    lowered = reason.lower()
    return any(word in lowered for word in _CONTENT_WORDS)


KEY_CHECK_TASK_ID = "kling-video-mcp-key-check-00000000"
"""A task id no provider hands out, for checking a key without spending anything."""


def _data_uri(image: ImageSource) -> str:
    assert image.data is not None and image.mime_type is not None
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def _number(value: Any) -> float | None:
    """A number the provider sent as a number or a string (``video_url_ttl`` is documented as
    a string, ``eta`` as a number: parse both leniently, §1.4); ``None`` if it is neither."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class NovitaFamilyAdapter(ProviderAdapter):
    """Adapter for a Novita-protocol provider, configured by its name and rules table."""

    _RULES: dict[ProviderName, RulesTable] = {"novita": NOVITA_RULES, "highway": HIGHWAY_RULES}

    def __init__(self, name: ProviderName, client: httpx2.AsyncClient, settings: Settings) -> None:
        self.name = name
        self.rules_table = self._RULES[name]
        self._http = self._connect(client, settings)

    @staticmethod
    def _classify(response: httpx2.Response, *, provider: str, key_env: str) -> KlingError:
        body = json_body(response)
        body = body.get("data") if isinstance(body.get("data"), dict) and "reason" not in body else body
        return classify_error(
            response, reason=str(body.get("reason") or ""), message=str(body.get("message") or ""), provider=provider, key_env=key_env
        )

    @staticmethod
    def _body_error(response: httpx2.Response, *, provider: str, key_env: str) -> KlingError | None:
        """A 200 with neither a submit's ``task_id`` nor a result's ``task`` but an error's ``message``,
        ``reason`` or ``code`` is that error (e.g. ``{"message": "insufficient balance"}``, providers.md §10.5)."""
        body = json_body(response)
        inner = body.get("data") if isinstance(body.get("data"), dict) else {}  # HighwayAPI may wrap (§7.2)
        if "task_id" in body or "task" in body or "task" in inner or not body.keys() & {"message", "reason", "code"}:
            return None
        return classify_body_error(
            response, code=body.get("code"), reason=str(body.get("reason") or ""),
            message=str(body.get("message") or ""), provider=provider, key_env=key_env,
        )  # fmt: skip

    @staticmethod
    def endpoint(kind: Kind, mode: Mode) -> str:
        return f"kling-v3.0-{mode}-{kind}"

    def body(self, request: GenerationRequest, images: dict[str, ImageSource]) -> dict[str, Any]:
        """The JSON body of the submit, in the provider's field names (docs in ``shared/specs``)."""
        body: dict[str, Any] = {"duration": request.duration, "sound": request.sound}
        for field in ("prompt", "negative_prompt", "cfg_scale"):
            if (value := getattr(request, field)) is not None:
                body[field] = value
        if request.kind == "t2v" and request.aspect_ratio:
            body["aspect_ratio"] = request.aspect_ratio
        for field, image in images.items():
            if image.url is None and self.rules(request.kind, request.mode).inline_images is False:
                raise self.inline_image_refused(request, field)
            body[field] = image.url or _data_uri(image)
        if request.multi_prompt:
            body["multi_prompt"] = [shot.model_dump() for shot in request.multi_prompt]
        return body

    async def submit(
        self, request: GenerationRequest, images: dict[str, ImageSource], *, webhook_url: str | None = None
    ) -> Submitted:
        endpoint = self.endpoint(request.kind, request.mode)
        body = self.body(request, images)
        if webhook_url:
            # providers.md §1.5 (Novita's generic V3 async webhook; HighwayAPI is Novita-compatible).
            # Whether Kling v3.0 routes honour it is unconfirmed (§10): the watcher's safety-net polls cover that.
            body["extra"] = {"webhook": {"url": webhook_url}}
        try:
            response = await self._http.submit(f"/v3/async/{endpoint}", json=body)
        except InvalidRequest as exc:
            # Where inline images are uncertain (§10.6), a refusal naming an inline image is that.
            named = sorted(images, key=len, reverse=True)  # "end_image" before "image", which it contains
            inline = [field for field in named if images[field].url is None and field in exc.message]
            if inline and self.rules(request.kind, request.mode).inline_images is not True:
                raise self.inline_image_refused(request, inline[0], exc.message) from exc
            raise
        task_id = json_body(response).get("task_id")
        if not task_id:
            raise UnknownOutcome(f"{self.label} accepted the submit but its answer carried no task_id.")
        return Submitted(provider_task_id=str(task_id))

    async def check_key(self) -> KeyCheck:
        """Look up a task id that cannot exist: "not found" means the key works (the lookup is free)."""
        try:
            await self._http.request("GET", "/v3/async/task-result", params={"task_id": KEY_CHECK_TASK_ID})
        except NotFound:
            pass  # the expected answer: the key was good enough to be told so
        return KeyCheck()

    async def fetch(self, provider_task_id: str, endpoint: str) -> ProviderUpdate:
        response = await self._http.request("GET", "/v3/async/task-result", params={"task_id": provider_task_id})
        body = json_body(response)
        if "task" not in body and isinstance(body.get("data"), dict):
            body = body["data"]  # HighwayAPI may wrap the result in "data" (providers.md §7.2)
        task = body.get("task")
        if not isinstance(task, dict):
            raise ProviderError(f"{self.label} answered the poll without a task object; asking again later.", retryable=True)
        status = _STATUSES.get(str(task.get("status")), "running")
        videos = body.get("videos") if isinstance(body.get("videos"), list) else []
        video = videos[0] if videos and isinstance(videos[0], dict) else {}
        ttl = _number(video.get("video_url_ttl"))
        reason = str(task.get("reason") or "")
        return ProviderUpdate(
            status=status,
            progress_percent=100.0 if status == "succeeded" else _number(task.get("progress_percent")),
            eta_seconds=_number(task.get("eta")),
            video_url=video.get("video_url") or None,
            url_expires_at=utcnow() + timedelta(seconds=ttl) if ttl else None,
            error=(reason or "The provider reported the task as failed without a reason.") if status == "failed" else None,
            error_code=("content_policy" if content_refusal(reason) else "provider_error") if status == "failed" else None,
        )
