"""WaveSpeedAI: ``POST /api/v3/kwaivgi/kling-v3.0-{mode}/{text,image}-to-video``.

Answers come in the envelope ``{code, message, data}``; results are read from
``GET /api/v3/predictions/{id}/result``; local images go up first through
``POST /api/v3/media/upload/binary`` and are passed as the returned ``download_url``
(providers.md §3).
"""

from __future__ import annotations

from typing import Any

import httpx2

from kling_video_mcp.config import Mode, ProviderName, Settings
from kling_video_mcp.errors import KlingError, ProviderError, UnknownOutcome
from kling_video_mcp.models import GenerationRequest, ImageSource, Kind, ProviderUpdate, TaskStatus
from kling_video_mcp.providers.base import EndpointRules, ProviderAdapter, RulesTable, Submitted
from kling_video_mcp.providers.http import classify_error, json_body
from kling_video_mcp.providers.novita_family import content_refusal

_EXCLUSIVE = EndpointRules(multi_prompt="shots", prompt_with_multi_prompt=False, shot_type=True, element_list=True)

WAVESPEED_RULES: RulesTable = {
    # providers.md §3.3: std/pro t2v and every i2v take "either prompt or multi_prompt, but
    # not both"; 4K t2v requires prompt and also takes multi_prompt.
    ("t2v", "std"): _EXCLUSIVE,
    ("t2v", "pro"): _EXCLUSIVE,
    ("t2v", "4k"): EndpointRules(multi_prompt="shots", prompt_with_multi_prompt=True, shot_type=True, element_list=True),
    ("i2v", "std"): _EXCLUSIVE,
    ("i2v", "pro"): _EXCLUSIVE,
    ("i2v", "4k"): _EXCLUSIVE,
}

_STATUSES: dict[str, TaskStatus] = {
    "created": "queued",
    "pending": "queued",
    "processing": "running",
    "completed": "succeeded",
    "failed": "failed",
    "cancelled": "failed",
    "timeout": "failed",
}
"""providers.md §3.5 and §7.1; any other status counts as still running."""

_MODERATION_CODE = 1200  # providers.md §3.5 task-level error codes


class WaveSpeedAdapter(ProviderAdapter):
    """Adapter for the WaveSpeed protocol, against ``base_url`` with ``api_key``."""

    rules_table = WAVESPEED_RULES

    def __init__(
        self,
        client: httpx2.AsyncClient,
        settings: Settings,
        *,
        name: ProviderName = "wavespeed",
        base_url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        self.name = name
        self._http = self._connect(client, settings, base_url=base_url, api_key=api_key)

    @staticmethod
    def _classify(response: httpx2.Response, *, provider: str, key_env: str) -> KlingError:
        body = json_body(response)
        return classify_error(
            response, reason=str(body.get("error_code") or ""), message=str(body.get("message") or ""), provider=provider, key_env=key_env
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
        body = json_body(response)
        url = (body.get("data") or {}).get("download_url")
        if body.get("code") != 200 or not url:
            # The upload API reports some failures as HTTP 200 with code != 200 (providers.md §3.7).
            raise ProviderError(f"{self.label} could not take the image {image.label}: {body.get('message') or 'no download_url'}.")
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
        if request.element_list:
            # Item shape {element_id} as a third-party integration sends it (providers.md §3.3).
            body["element_list"] = [{"element_id": element} for element in request.element_list]
        return body

    async def submit(
        self, request: GenerationRequest, images: dict[str, ImageSource], *, webhook_url: str | None = None
    ) -> Submitted:
        body = await self.body(request, images)
        # providers.md §3.8: the webhook goes in a query parameter.
        params = {"webhook": webhook_url} if webhook_url else None
        response = await self._http.submit(
            f"/api/v3/{self.endpoint(request.kind, request.mode)}", json=body, params=params
        )
        task_id = (json_body(response).get("data") or {}).get("id")
        if not task_id:
            raise UnknownOutcome(f"{self.label} accepted the submit but its answer carried no task id.")
        return Submitted(provider_task_id=str(task_id))

    async def fetch(self, provider_task_id: str, endpoint: str) -> ProviderUpdate:
        response = await self._http.request("GET", f"/api/v3/predictions/{provider_task_id}/result")
        data = json_body(response).get("data")
        data = data if isinstance(data, dict) else {}
        status = _STATUSES.get(str(data.get("status")), "running")
        outputs = data.get("outputs") or []
        error = str(data.get("error") or "")
        refused = data.get("code") == _MODERATION_CODE or content_refusal(error)
        return ProviderUpdate(
            status=status,
            progress_percent=100.0 if status == "succeeded" else None,
            video_url=str(outputs[0]) if outputs else None,
            error=(error or f"The task ended as {data.get('status')!r}.") if status == "failed" else None,
            error_code=("content_policy" if refused else "provider_error") if status == "failed" else None,
        )
