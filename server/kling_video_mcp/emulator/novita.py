"""Novita AI and HighwayAPI: one Novita-family implementation, two rule tables (docs/providers.md#the-emulator).

Routes (relative to ``/novita`` or ``/highway``):

- ``POST /v3/async/kling-v3.0-{std,pro,4k}-{t2v,i2v}`` -> ``{"task_id": "<uuid4>"}``
- ``GET /v3/async/task-result?task_id=`` -> ``{extra, task{…}, images, videos, audios}``
- anything else -> 404 ``API_NOT_FOUND``

Errors use the envelope ``{"code", "reason", "message", "metadata": {}}`` (docs/providers.md#novita-errors). Field rules
per route are in ``rules`` (docs/providers.md#novita-rules, #highway-rules); an ``ok_error``
fault answers HTTP 200 with a bare ``{"message"}`` and no task (docs/providers.md#novita-http-200-errors).
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .errors import ApiError, invalid
from .flavor import ErrorCatalogue, Flavor, parse_object
from .rules import HIGHWAY_RULES, NOVITA_MODELS, NOVITA_RULES, Model
from .tasks import Outcome, Phase, Task

NOVITA_ERRORS: ErrorCatalogue = {
    # Novita's Image/Video/Audio error table: docs/providers.md#novita-errors.
    "missing_key": (400, "MISSING_API_KEY", "API Key not provided"),
    "unknown_key": (403, "INVALID_API_KEY", "API Key validation failed"),
    "forbidden_key": (403, "API_NOT_ALLOWED", "No permission to use this API"),
    "rate_limited": (429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded"),
    "bad_body": (400, "INVALID_REQUEST_BODY", "request body must be a JSON object"),
    "illegal_prompt": (400, "ILLEGAL_PROMPT", "Prompt contains inappropriate content"),
    "illegal_image": (400, "ILLEGAL_IMAGE_CONTENT", "Image contains inappropriate content"),
    "balance": (400, "BILLING_BALANCE_NOT_ENOUGH", "Insufficient balance"),
    "create_failed": (500, "CREATE_TASK_FAILED", "Failed to create task"),
    "result_failed": (500, "GET_RESULT_FAILED", "Failed to get task result"),
    "unavailable": (503, "SERVICE_NOT_AVAILABLE", "Service not available"),
    "task_not_found": (404, "TASK_NOT_FOUND", "Task not found"),
    "api_not_found": (404, "API_NOT_FOUND", "API not found"),
}

STATUSES = {
    Phase.QUEUED: "TASK_STATUS_QUEUED",
    Phase.RUNNING: "TASK_STATUS_PROCESSING",
    Phase.SUCCEEDED: "TASK_STATUS_SUCCEED",
    Phase.FAILED: "TASK_STATUS_FAILED",
}

FAILURE_REASONS = {
    # task.reason texts (docs/providers.md#novita-task-result); only the moderation one is quoted in the docs.
    Outcome.MODERATION: "The content you submitted failed the moderation review",
    Outcome.INTERNAL: "Task execution failed due to an internal error, please try again",
    Outcome.MEDIA: "Failed to download image from the provided URL.",
    Outcome.TIMEOUT: "Task execution timed out",
}


class NovitaFamily(Flavor):
    """The Novita ``/v3/async`` protocol; subclasses fix ``name`` and ``rules``."""

    errors = NOVITA_ERRORS
    balance_before_fields = False

    def provider_routes(self) -> list[BaseRoute]:
        submits = [
            Route(f"/v3/async/{name}", self.endpoint("submit", partial(self._submit, model)), methods=["POST"])
            for name, model in NOVITA_MODELS.items()
        ]
        return [Route("/v3/async/task-result", self.endpoint("poll", self._poll), methods=["GET"]), *submits]

    def render_error(self, error: ApiError) -> Response:
        body = error.body if error.body is not None else {
            "code": error.status,
            "reason": error.reason,
            "message": error.message,
            "metadata": {},
        }
        return JSONResponse(body, error.status, headers=error.headers)

    def render_ok_error(self, error: ApiError) -> Response:
        """A 200 whose body is only the message, no ``task_id`` or ``task`` (docs/providers.md#novita-http-200-errors, as in a
        JieKou adaptor's fixtures: ``{"message": "insufficient balance"}``)."""
        return JSONResponse({"message": error.message}, headers=error.headers)

    def error(self, kind: str) -> ApiError:
        if kind == "unknown_key" and self.config.novita_auth_401:
            return ApiError(401, "FAILED_TO_AUTH", "failed to authenticate API key")
        return super().error(kind)

    async def _submit(self, model: Model, request: Request, body: bytes) -> Response:
        """Validate, create the task, arm its webhook (docs/providers.md#emulator-validation)."""
        caller, submission, directives = self.accept(request, body, model)
        task = await self.emulator.create_task(self.name, str(uuid.uuid4()), caller.key, submission, directives)
        if url := _webhook_url(parse_object(body) or {}):

            def event(task: Task, now: float) -> dict[str, Any]:
                # docs/providers.md#novita-webhooks: the event wraps exactly the Task Result response.
                return {"event_type": "ASYNC_TASK_RESULT", "payload": self.task_result(request, task, now)}

            self.emulator.send_webhook(task, url, event)
        return JSONResponse({"task_id": task.id})

    async def _poll(self, request: Request, _body: bytes) -> Response:
        """The task result (docs/providers.md#novita-task-result): auth, ``task_id`` required, own tasks only."""
        caller = self.admit(request, submission=False)
        task_id = request.query_params.get("task_id", "")
        if not task_id:
            raise invalid("task_id is required")
        task = self.find(task_id, caller)
        return JSONResponse(self.task_result(request, task, self.emulator.now()))

    def task_result(self, request: Request, task: Task, now: float) -> dict[str, Any]:
        """The full task-result body for ``task`` at ``now`` (docs/providers.md#novita-task-result)."""
        phase = task.phase(now)
        done = phase in (Phase.SUCCEEDED, Phase.FAILED)
        videos = []
        if phase is Phase.SUCCEEDED:
            url = self.result_url(request, task, now)
            videos.append({"video_url": url, "video_url_ttl": str(task.url_ttl), "video_type": "mp4"})
        return {
            "extra": {
                "seed": "",
                "debug_info": {
                    "request_info": "",
                    "submit_time_ms": _millis(task.created_at),
                    "execute_time_ms": _millis(task.starts_at) if phase is not Phase.QUEUED else "",
                    "complete_time_ms": _millis(task.finishes_at) if done else "",
                },
            },
            "task": {
                "task_id": task.id,
                "status": STATUSES[phase],
                "reason": FAILURE_REASONS[task.final_outcome] if phase is Phase.FAILED else "",
                "task_type": task.model.upper().replace("-", "_").replace(".", "_"),
                "eta": 0 if done else task.eta(now),
                "progress_percent": task.progress(now),
            },
            "images": [],
            "videos": videos,
            "audios": [],
        }


class Novita(NovitaFamily):
    name = "novita"
    rules = NOVITA_RULES


class Highway(NovitaFamily):
    """HighwayAPI: Novita's protocol with its own field rules and a switchable balance error (docs/providers.md#highway-errors)."""

    name = "highway"
    rules = HIGHWAY_RULES

    def error(self, kind: str) -> ApiError:
        style = self.config.highway_balance_style
        if kind == "balance" and style == "jiekou":
            return ApiError(403, "NOT_ENOUGH_BALANCE", "Insufficient balance")
        if kind == "balance" and style == "bare":
            return ApiError(400, "", "insufficient balance", body={"message": "insufficient balance"})
        return super().error(kind)


def _webhook_url(payload: dict[str, Any]) -> str | None:
    """``extra.webhook.url`` of a submit body (docs/providers.md#novita-webhooks), if it names one."""
    extra = payload.get("extra")
    webhook = extra.get("webhook") if isinstance(extra, dict) else None
    url = webhook.get("url") if isinstance(webhook, dict) else None
    return url if isinstance(url, str) and url else None


def _millis(instant: float) -> str:
    return str(int(instant * 1000))
