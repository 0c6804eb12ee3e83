"""WaveSpeedAI (docs/providers.md#wavespeedai and #the-emulator).

Routes (relative to ``/wavespeed``):

- ``POST /api/v3/kwaivgi/kling-v3.0-{std,pro,4k}/{text-to-video,image-to-video}`` -> prediction ``created``
- ``GET /api/v3/predictions/{id}/result`` and ``GET /api/v3/predictions/{id}`` -> the prediction
- ``POST /api/v3/media/upload/binary`` (multipart ``file``) -> ``data.download_url``
- ``GET /api/v3/balance``, ``POST /api/v3/model/price`` (docs/providers.md#emulator-routes)
- anything else -> 404 ``model not found``

Every answer is the envelope ``{"code", "message", "data"}``; failed predictions
are still HTTP 200 / ``code`` 200 with ``data.status`` ``failed`` (docs/providers.md#wavespeed-task-result), while an ``ok_error``
fault answers HTTP 200 with the envelope ``code`` set to an error status (docs/providers.md#http-200-errors). Shots are
3-15 s, and ``multi_prompt`` is refused unless ``shot_type`` is (or defaults to)
``customize``: the default is ``intelligent`` on Std and Pro, ``customize`` on 4K (docs/providers.md#wavespeed-shot-type).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .errors import ApiError
from .flavor import ErrorCatalogue, Flavor, parse_object, read_form
from .media import sniff_image
from .rules import WAVESPEED_MODELS, WAVESPEED_RULES, Model
from .tasks import Outcome, Phase, Task

UNAUTHORIZED = "Unauthorized: invalid authentication"

WAVESPEED_ERRORS: ErrorCatalogue = {
    # docs/providers.md#wavespeed-errors; WaveSpeed has no ``reason``, so the second item is unused.
    "missing_key": (401, "", UNAUTHORIZED),
    "unknown_key": (401, "", UNAUTHORIZED),
    "forbidden_key": (403, "", "Forbidden: your account may be suspended"),
    "rate_limited": (429, "", "Too Many Requests"),
    "bad_body": (400, "", "request body must be a JSON object"),
    "illegal_prompt": (400, "", 'field "prompt" contains sensitive content'),
    "illegal_image": (400, "", 'field "image" contains sensitive content'),
    "balance": (400, "", "Insufficient balance, please top up"),
    "create_failed": (500, "", "Failed to create task"),
    "result_failed": (500, "", "Failed to get prediction result"),
    "unavailable": (503, "", "Service Unavailable"),
    "task_not_found": (404, "", "prediction not found"),
    "api_not_found": (404, "", "model not found"),
}

STATUSES = {Phase.QUEUED: "created", Phase.RUNNING: "processing", Phase.SUCCEEDED: "completed", Phase.FAILED: "failed"}

FAILURES = {
    # task-level codes: docs/providers.md#wavespeed-task-result.
    Outcome.MODERATION: (1200, "The content contains sensitive information."),
    Outcome.MEDIA: (1402, "Failed to download image from the provided URL."),
    Outcome.INTERNAL: (5000, "Internal error, please try again later."),
    Outcome.TIMEOUT: (5004, "The prediction timed out."),
}

UPLOAD_EXTENSIONS = {
    "jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp", "gif": "gif", "bmp": "bmp", "tif": "tiff", "tiff": "tiff"
}
"""Upload image formats (docs/providers.md#wavespeed-uploads); the key is a sniffed format or a file-name extension, the value the stored extension."""

PRICE_PER_SECOND = {"std": 0.084, "pro": 0.112, "4k": 0.42}
"""USD per generated second (docs/providers.md#prices; 4K is WaveSpeed's published price)."""

SYNC_POLL_SECONDS = 0.05


class WaveSpeed(Flavor):
    name = "wavespeed"
    rules = WAVESPEED_RULES
    errors = WAVESPEED_ERRORS
    balance_before_fields = True

    def provider_routes(self) -> list[BaseRoute]:
        submits = [
            Route(f"/api/v3/{name}", self.endpoint("submit", partial(self._submit, model)), methods=["POST"])
            for name, model in WAVESPEED_MODELS.items()
        ]
        poll = self.endpoint("poll", self._poll)
        return [
            Route("/api/v3/predictions/{task_id}/result", poll, methods=["GET"]),
            Route("/api/v3/predictions/{task_id}", poll, methods=["GET"]),
            Route("/api/v3/media/upload/binary", self.endpoint("upload", self._upload), methods=["POST"]),
            Route("/api/v3/balance", self.endpoint(None, self._balance), methods=["GET"]),
            Route("/api/v3/model/price", self.endpoint(None, self._price), methods=["POST"]),
            *submits,
        ]

    def render_error(self, error: ApiError) -> Response:
        body = error.body if error.body is not None else {"code": error.status, "message": error.message, "data": None}
        return JSONResponse(body, error.status, headers=error.headers)

    def render_ok_error(self, error: ApiError) -> Response:
        """The envelope with ``code`` = the error's status, on an HTTP 200 (docs/providers.md#wavespeed-http-200-errors)."""
        return JSONResponse({"code": error.status, "message": error.message, "data": None}, headers=error.headers)

    def error(self, kind: str) -> ApiError:
        if kind == "balance":
            _status, reason, message = self.errors[kind]
            return ApiError(self.config.wavespeed_balance_status, reason, message)
        return super().error(kind)

    async def _submit(self, model: Model, request: Request, body: bytes) -> Response:
        """Validate, create the task, arm its webhook; hold the answer in sync mode (docs/providers.md#emulator-validation)."""
        caller, submission, directives = self.accept(request, body, model)
        task = await self.emulator.create_task(self.name, uuid.uuid4().hex, caller.key, submission, directives)
        # docs/providers.md#wavespeed-webhooks: a `webhook` query parameter; the submit page also lists a body `webhook_url` (accept both).
        payload = parse_object(body) or {}
        if url := request.query_params.get("webhook") or payload.get("webhook_url"):
            self.emulator.send_webhook(task, str(url), lambda task, now: self.prediction(request, task, now))
        if not submission.sync:
            # The reply describes the task as created, however fast the clock is running.
            return _success(self.prediction(request, task, task.created_at))
        return _success(await self._wait_for(request, task))

    async def _wait_for(self, request: Request, task: Task) -> dict[str, Any]:
        """Hold the answer until the task ends or the sync window closes (docs/providers.md#wavespeed-fields-sent)."""
        config = self.config
        deadline = self.emulator.now() + config.scaled(config.sync_timeout_seconds)
        while (now := self.emulator.now()) < deadline and task.phase(now) in (Phase.QUEUED, Phase.RUNNING):
            await anyio.sleep(min(SYNC_POLL_SECONDS, deadline - now))
        data = self.prediction(request, task, now)
        if task.phase(now) in (Phase.QUEUED, Phase.RUNNING):
            seconds = int(config.sync_timeout_seconds)
            message = f"Sync mode timed out after {seconds} seconds. The prediction is still processing asynchronously."
            data.update(status="processing", code=5004, error=message)
        return data

    async def _poll(self, request: Request, _body: bytes) -> Response:
        caller = self.admit(request, submission=False)
        task = self.find(request.path_params["task_id"], caller)
        return _success(self.prediction(request, task, self.emulator.now()))

    def prediction(self, request: Request, task: Task, now: float) -> dict[str, Any]:
        """The ``data`` object of ``task`` at ``now`` (docs/providers.md#wavespeed-task-result)."""
        phase = task.phase(now)
        data: dict[str, Any] = {
            "id": task.id,
            "model": task.model,
            "outputs": [],
            "urls": {"get": f"{self.flavor_base(request)}/api/v3/predictions/{task.id}/result"},
            "has_nsfw_contents": [],
            "status": STATUSES[phase],
            "created_at": _iso(task.created_at),
            "error": "",
            "timings": {"inference": 0},
        }
        if phase is Phase.SUCCEEDED:
            url = self.result_url(request, task, now)
            data["outputs"] = [{"url": url} if self.config.wavespeed_output_objects else url]
            data["has_nsfw_contents"] = [False]
            data["timings"]["inference"] = int((task.finishes_at - task.starts_at) * 1000)
        elif phase is Phase.FAILED:
            outcome = task.final_outcome
            data["code"], data["error"] = FAILURES[outcome]
            if outcome is Outcome.TIMEOUT:
                data["status"] = "timeout"
        return data

    async def _upload(self, request: Request, _body: bytes) -> Response:
        """docs/providers.md#wavespeed-uploads: multipart ``file``; unsupported types are HTTP 200 with ``code`` 500."""
        self.admit(request, submission=False)
        form = await read_form(request)
        upload = form.get("file") if form is not None else None
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "", 'field "file" is required')
        data = await upload.read()
        filename = upload.filename or ""
        kind = sniff_image(data) or filename.rpartition(".")[2].lower()
        if kind not in UPLOAD_EXTENSIONS:
            return JSONResponse({"code": 500, "message": "Upload failed: invalid file type"})
        name = self.emulator.store.add_upload(data, UPLOAD_EXTENSIONS[kind])
        return _success(
            {
                "type": "image",
                "download_url": f"{self.flavor_base(request)}/__fake/media/{name}",
                "filename": filename or name,
                "size": len(data),
            }
        )

    async def _balance(self, request: Request, _body: bytes) -> Response:
        caller = self.admit(request, submission=False)
        return _success({"balance": 0.0 if caller.broke else 100.0})

    async def _price(self, request: Request, body: bytes) -> Response:
        """``{model_id, inputs}`` -> price of one run at ``inputs.duration`` seconds (default 5)."""
        self.admit(request, submission=False)
        payload = parse_object(body)
        if payload is None:
            raise self.error("bad_body")
        model = WAVESPEED_MODELS.get(str(payload.get("model_id", "")))
        if model is None:
            raise self.error("api_not_found")
        inputs = payload.get("inputs") if isinstance(payload.get("inputs"), dict) else {}
        duration = inputs.get("duration", 5)
        if isinstance(duration, bool) or not isinstance(duration, int):
            raise ApiError(400, "", 'field "duration" must be an integer')
        price = round(PRICE_PER_SECOND[model.tier] * duration, 4)
        return _success({"model_id": model.name, "price": price, "discounted_price": price, "currency": "USD"})


def _iso(instant: float) -> str:
    """``2026-01-01T12:00:00.000Z`` (WaveSpeed's ``created_at``)."""
    return datetime.fromtimestamp(instant, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _success(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"code": 200, "message": "success", "data": data})
