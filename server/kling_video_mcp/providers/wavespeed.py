"""WaveSpeedAI: ``POST /api/v3/kwaivgi/kling-v3.0-{mode}/{text,image}-to-video``.

Answers come in the envelope ``{code, message, data}``; results are read from
``GET /api/v3/predictions/{id}/result``; local images go up first through
``POST /api/v3/media/upload/binary`` and are passed as the returned ``download_url``
(docs/providers.md#wavespeedai).

Cancelling: the adapter does not call WaveSpeed's task-deletion endpoint (docs/providers.md#wavespeed-cancel),
so :meth:`~kling_video_mcp.providers.base.Provider.cancel` keeps its "cannot cancel" default.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx2

from kling_video_mcp.errors import KlingError, ProviderError, UnknownOutcome
from kling_video_mcp.models import GenerationRequest, ImageSource, Kind, Mode, ProviderUpdate, TaskStatus
from kling_video_mcp.providers.base import (
    SHORTEST_SHOT_3, EndpointRules, KeyCheck, PromptRule, Provider, RulesTable, Submitted, Webhook, market_prices,
)  # fmt: skip
from kling_video_mcp.providers.http import classify_error, json_body
from kling_video_mcp.providers.novita_family import content_refusal

def _route(mode: Mode, prompt: PromptRule, source: str) -> EndpointRules:
    return EndpointRules(
        source=source,
        prompt=prompt,
        multi_prompt=True,
        shot_seconds=SHORTEST_SHOT_3,  # docs/providers.md#wavespeed-shot-lengths
        inline_images=False,  # base64 unknown; local images are uploaded: docs/providers.md#wavespeed-inline-images
        # docs/providers.md#wavespeed-shot-type: Std and Pro cut shots themselves unless told "customize"; the 4K page says customize.
        shot_type_default="customize" if mode == "4k" else "intelligent",
        element_list=True,
    )


_EXCLUSIVE = "docs/providers.md#wavespeed-prompt-rule: either prompt or multi_prompt, not both"
WAVESPEED_RULES: RulesTable = {
    ("t2v", "std"): _route("std", PromptRule.ONE_OF, _EXCLUSIVE),
    ("t2v", "pro"): _route("pro", PromptRule.ONE_OF, _EXCLUSIVE),
    ("t2v", "4k"): _route("4k", PromptRule.REQUIRED, "docs/providers.md#wavespeed-prompt-rule: the 4K t2v page makes prompt the only required field"),
    ("i2v", "std"): _route("std", PromptRule.ONE_OF, _EXCLUSIVE),
    ("i2v", "pro"): _route("pro", PromptRule.ONE_OF, _EXCLUSIVE),
    ("i2v", "4k"): _route("4k", PromptRule.ONE_OF, _EXCLUSIVE),
}
"""WaveSpeedAI's Kling v3.0 routes (docs/providers.md#wavespeed-rules)."""

MULTI_SHOT_TYPE = "customize"
"""The ``shot_type`` that makes WaveSpeed read ``multi_prompt`` (docs/providers.md#wavespeed-shot-type)."""

_STATUSES: dict[str, TaskStatus] = {
    "created": "queued",
    "pending": "queued",
    "processing": "running",
    "completed": "succeeded",
    "failed": "failed",
    "cancelled": "failed",
    "timeout": "failed",
    "deleted": "failed",  # deleted from the account (its dashboard or API): it will never finish
}
"""docs/providers.md#wavespeed-task-result; any other status counts as still running."""

_MODERATION_CODE = 1200  # task-level error codes, docs/providers.md#wavespeed-task-result


_WAVESPEED_PAGE = {"4k": "WaveSpeedAI Kling v3.0 4K page", "std": "WaveSpeedAI Kling v3.0 Std page"}


class WaveSpeed(Provider):
    """WaveSpeedAI: ``WAVESPEED_API_KEY``, ``https://api.wavespeed.ai`` (docs/providers.md#wavespeedai)."""

    name = "wavespeed"
    label = "WaveSpeedAI"
    key_variables = ("WAVESPEED_API_KEY",)
    base_url_variable = "WAVESPEED_BASE_URL"
    default_base_url = "https://api.wavespeed.ai"
    rules_table = WAVESPEED_RULES
    # docs/providers.md#wavespeed-price: 4K $0.42/s "regardless of whether audio is on or off" (the 4K page);
    # Std $0.42 per default 5 s run, silent (the Std page); Std with sound and Pro are not published.
    prices = market_prices({
        ("4k", False): _WAVESPEED_PAGE["4k"], ("4k", True): _WAVESPEED_PAGE["4k"], ("std", False): _WAVESPEED_PAGE["std"],
    })  # fmt: skip
    webhook = Webhook("query", ("webhook",), "docs/providers.md#wavespeed-webhooks: the webhook goes in a query parameter")
    uploads_images = True

    def classify_error(self, response: httpx2.Response) -> KlingError:
        body = json_body(response)
        return classify_error(
            response, reason=str(body.get("error_code") or ""), message=str(body.get("message") or ""), provider=self.label, key_env=self.key_hint
        )

    def body_error(self, response: httpx2.Response) -> KlingError | None:
        """A 200 whose envelope ``code`` is not 200 is an error (docs/providers.md#wavespeed-http-200-errors, as WaveSpeed's
        own MCP server and n8n node read it)."""
        body = json_body(response)
        if body.get("code", 200) == 200:
            return None
        return self.body_error_from(
            response, code=body.get("code"), reason=str(body.get("error_code") or ""), message=str(body.get("message") or "")
        )

    @staticmethod
    def endpoint(kind: Kind, mode: Mode) -> str:
        task = "text-to-video" if kind == "t2v" else "image-to-video"
        return f"kwaivgi/kling-v3.0-{mode}/{task}"

    async def upload(self, image: ImageSource) -> str:
        """Upload local image bytes; returns the ``download_url`` to pass as the image."""
        assert image.data is not None
        extension = (image.mime_type or "image/png").split("/")[-1].replace("jpeg", "jpg")
        response = await self._http.request(
            "POST",
            "/api/v3/media/upload/binary",
            files={"file": (f"image.{extension}", image.data, image.mime_type or "application/octet-stream")},
        )
        url = (json_body(response).get("data") or {}).get("download_url")
        if not url:
            raise ProviderError(f"{self.label} could not take the image {image.label}: its answer carried no download_url.")
        return str(url)

    async def body(self, request: GenerationRequest, images: dict[str, ImageSource]) -> dict[str, Any]:
        """The JSON body of the submit (uploading local images first)."""
        body: dict[str, Any] = {"duration": request.duration, "sound": request.sound}
        for field in ("prompt", "negative_prompt", "cfg_scale", "shot_type"):
            if (value := getattr(request, field)) is not None:
                body[field] = value
        if request.kind == "t2v" and request.aspect_ratio:
            body["aspect_ratio"] = request.aspect_ratio
        for field, image in images.items():
            body[field] = image.url or await self.upload(image)
        if request.multi_prompt:
            body["multi_prompt"] = [shot.model_dump() for shot in request.multi_prompt]
            body.setdefault("shot_type", MULTI_SHOT_TYPE)
        if request.element_list:
            # Item shape {element_id} as a third-party integration sends it (docs/providers.md#wavespeed-element-list).
            body["element_list"] = [{"element_id": element} for element in request.element_list]
        return body

    async def submit(
        self, request: GenerationRequest, images: dict[str, ImageSource], *, webhook_url: str | None = None
    ) -> Submitted:
        body = await self.body(request, images)
        params = self.webhook_params(webhook_url, body)
        response = await self._http.submit(
            f"/api/v3/{self.endpoint(request.kind, request.mode)}", json=body, params=params
        )
        task_id = (json_body(response).get("data") or {}).get("id")
        if not task_id:
            raise UnknownOutcome(f"{self.label} accepted the submit but its answer carried no task id.")
        return Submitted(provider_task_id=str(task_id))

    async def check_key(self) -> KeyCheck:
        """``GET /api/v3/balance`` (docs/providers.md#wavespeed-key-check): free, and it says what is left to spend."""
        response = await self._http.request("GET", "/api/v3/balance")
        balance = (json_body(response).get("data") or {}).get("balance")
        return KeyCheck(f"balance ${balance:.2f}" if isinstance(balance, (int, float)) else "")

    async def poll(self, provider_task_id: str) -> ProviderUpdate:
        # Encoded as one path segment: an odd id ("../../x?inject=1") must not reach another route.
        response = await self._http.request("GET", f"/api/v3/predictions/{quote(provider_task_id, safe='')}/result")
        data = json_body(response).get("data")
        if not isinstance(data, dict):
            raise ProviderError(f"{self.label} answered the poll without a prediction; asking again later.", retryable=True)
        status = _STATUSES.get(str(data.get("status")), "running")
        outputs = data.get("outputs") or []
        first = outputs[0] if outputs else None
        # Kling's outputs are URL strings; some other models return {"url": ...} (docs/providers.md#wavespeed-task-result).
        video_url = first.get("url") if isinstance(first, dict) else first
        if status == "succeeded" and not isinstance(video_url, str):
            raise ProviderError(f"{self.label} reported success with an output this server cannot read: {first!r:.200}.")
        error = str(data.get("error") or "")
        refused = data.get("code") == _MODERATION_CODE or content_refusal(error)
        return ProviderUpdate(
            status=status,
            progress_percent=100.0 if status == "succeeded" else None,
            video_url=video_url if isinstance(video_url, str) else None,
            error=(error or f"The task ended as {data.get('status')!r}.") if status == "failed" else None,
            error_code=("content_policy" if refused else "provider_error") if status == "failed" else None,
        )
