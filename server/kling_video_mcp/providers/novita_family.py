"""The Novita wire protocol, which Novita AI (``novita.py``) and HighwayAPI (``highway.py``) share.

Both serve ``POST /v3/async/kling-v3.0-{std,pro,4k}-{t2v,i2v}`` answering ``{"task_id"}``
and ``GET /v3/async/task-result?task_id=`` (docs/providers.md#novita-ai and #highwayapi). They differ only in their
description (name, keys, base URL, per-route rules with their sources), which each sets on
its subclass of :class:`NovitaProtocol`.

Cancelling: neither documents a way to cancel a task (docs/providers.md#novita-ai and #highwayapi), so
:meth:`~kling_video_mcp.providers.base.Provider.cancel` keeps its "cannot cancel" default.
"""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import httpx2

from kling_video_mcp.errors import InvalidRequest, KlingError, NotFound, ProviderError, UnknownOutcome
from kling_video_mcp.models import GenerationRequest, ImageSource, Kind, Mode, ProviderUpdate, TaskStatus, utcnow
from kling_video_mcp.providers.base import KeyCheck, Provider, Submitted, Webhook, market_prices
from kling_video_mcp.providers.http import classify_error, json_body

_STATUSES: dict[str, TaskStatus] = {
    "TASK_STATUS_QUEUED": "queued",
    "TASK_STATUS_PROCESSING": "running",
    "TASK_STATUS_SUCCEED": "succeeded",
    "TASK_STATUS_FAILED": "failed",
    "TASK_STATUS_CANCELED": "failed",
}
"""docs/providers.md#novita-task-result; any other status counts as still running."""

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
    a string, ``eta`` as a number: parse both leniently, docs/providers.md#novita-task-result); ``None`` if it is neither."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class NovitaProtocol(Provider):
    """A provider that speaks the Novita protocol; subclasses give its description."""

    prices = market_prices()  # neither publishes a USD price (docs/providers.md#prices)
    webhook = Webhook(
        "body", ("extra", "webhook", "url"),
        "Novita's generic V3 async webhook, docs/providers.md#novita-webhooks (HighwayAPI is Novita-compatible); whether "
        "Kling v3.0 routes honour it is unconfirmed, so the watcher's safety-net polls cover it",
    )  # fmt: skip

    def classify_error(self, response: httpx2.Response) -> KlingError:
        body = json_body(response)
        body = body.get("data") if isinstance(body.get("data"), dict) and "reason" not in body else body
        return classify_error(
            response, reason=str(body.get("reason") or ""), message=str(body.get("message") or ""), provider=self.label, key_env=self.key_hint
        )

    def body_error(self, response: httpx2.Response) -> KlingError | None:
        """A 200 with neither a submit's ``task_id`` nor a result's ``task`` but an error's ``message``,
        ``reason`` or ``code`` is that error (e.g. ``{"message": "insufficient balance"}``, docs/providers.md#novita-http-200-errors)."""
        body = json_body(response)
        inner = body.get("data") if isinstance(body.get("data"), dict) else {}  # HighwayAPI may wrap: docs/providers.md#highway-task-result
        if "task_id" in body or "task" in body or "task" in inner or not body.keys() & {"message", "reason", "code"}:
            return None
        return self.body_error_from(
            response, code=body.get("code"), reason=str(body.get("reason") or ""), message=str(body.get("message") or "")
        )

    @staticmethod
    def endpoint(kind: Kind, mode: Mode) -> str:
        return f"kling-v3.0-{mode}-{kind}"

    def body(self, request: GenerationRequest, images: dict[str, ImageSource]) -> dict[str, Any]:
        """The JSON body of the submit, in the provider's field names (docs/providers.md#novita-fields-sent)."""
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
        params = self.webhook_params(webhook_url, body)
        try:
            response = await self._http.submit(f"/v3/async/{endpoint}", json=body, params=params)
        except InvalidRequest as exc:
            # Where inline images are uncertain (docs/providers.md#novita-inline-images), a refusal naming an inline image is that.
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

    async def poll(self, provider_task_id: str) -> ProviderUpdate:
        response = await self._http.request("GET", "/v3/async/task-result", params={"task_id": provider_task_id})
        body = json_body(response)
        if "task" not in body and isinstance(body.get("data"), dict):
            body = body["data"]  # HighwayAPI may wrap the result in "data" (docs/providers.md#highway-task-result)
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
