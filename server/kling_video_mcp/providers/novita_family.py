"""Novita AI and HighwayAPI: one wire protocol, told apart by data.

Both serve ``POST /v3/async/kling-v3.0-{std,pro,4k}-{t2v,i2v}`` answering ``{"task_id"}``
and ``GET /v3/async/task-result?task_id=`` (providers.md §1, §2). They differ only in
which endpoints take ``multi_prompt`` and how (:data:`NOVITA_RULES`, :data:`HIGHWAY_RULES`).
"""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import httpx2

from kling_video_mcp.config import Mode, ProviderName, Settings
from kling_video_mcp.errors import KlingError, UnknownOutcome
from kling_video_mcp.models import GenerationRequest, ImageSource, Kind, ProviderUpdate, TaskStatus, utcnow
from kling_video_mcp.providers.base import EndpointRules, ProviderAdapter, RulesTable, Submitted
from kling_video_mcp.providers.http import classify_error, json_body

_NONE = EndpointRules(multi_prompt=None, prompt_with_multi_prompt=False)

NOVITA_RULES: RulesTable = {
    # providers.md §1.3: the std and 4k t2v pages have no multi_prompt; Pro t2v takes string[]
    # exclusive with prompt; std/4k i2v take [{prompt, duration}]; Pro i2v takes string[].
    ("t2v", "std"): _NONE,
    ("t2v", "4k"): _NONE,
    ("t2v", "pro"): EndpointRules(multi_prompt="prompts", prompt_with_multi_prompt=False),
    ("i2v", "std"): EndpointRules(multi_prompt="shots", prompt_with_multi_prompt=True),
    ("i2v", "4k"): EndpointRules(multi_prompt="shots", prompt_with_multi_prompt=True),
    ("i2v", "pro"): EndpointRules(multi_prompt="prompts", prompt_with_multi_prompt=True),
}

HIGHWAY_RULES: RulesTable = {
    # providers.md §2.3 and §6.2: 4k/pro take multi_prompt objects, mutually exclusive with
    # prompt; std t2v takes none; std i2v takes objects alongside prompt.
    ("t2v", "std"): _NONE,
    ("t2v", "4k"): EndpointRules(multi_prompt="shots", prompt_with_multi_prompt=False),
    ("t2v", "pro"): EndpointRules(multi_prompt="shots", prompt_with_multi_prompt=False),
    ("i2v", "std"): EndpointRules(multi_prompt="shots", prompt_with_multi_prompt=True),
    ("i2v", "4k"): EndpointRules(multi_prompt="shots", prompt_with_multi_prompt=False),
    ("i2v", "pro"): EndpointRules(multi_prompt="shots", prompt_with_multi_prompt=False),
}

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
            body[field] = image.url or _data_uri(image)
        if request.multi_prompt:
            form = self.rules(request.kind, request.mode).multi_prompt
            body["multi_prompt"] = (
                [shot.prompt for shot in request.multi_prompt]
                if form == "prompts"
                else [shot.model_dump() for shot in request.multi_prompt]
            )
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
        response = await self._http.submit(f"/v3/async/{endpoint}", json=body)
        task_id = json_body(response).get("task_id")
        if not task_id:
            raise UnknownOutcome(f"{self.label} accepted the submit but its answer carried no task_id.")
        notes: tuple[str, ...] = ()
        if request.multi_prompt and self.rules(request.kind, request.mode).multi_prompt == "prompts":
            notes = (f"{self.label} {request.mode} takes shot prompts without durations; it divides the time itself.",)
        return Submitted(provider_task_id=str(task_id), notes=notes)

    async def fetch(self, provider_task_id: str, endpoint: str) -> ProviderUpdate:
        response = await self._http.request("GET", "/v3/async/task-result", params={"task_id": provider_task_id})
        body = json_body(response)
        if "task" not in body and isinstance(body.get("data"), dict):
            body = body["data"]  # HighwayAPI may wrap the result in "data" (providers.md §7.2)
        task = body.get("task") if isinstance(body.get("task"), dict) else {}
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
