"""Replicate's predictions API running ``kwaivgi/kling-v3-video``
(docs/providers.md#replicate-in-the-emulator).

Routes (relative to ``/replicate``, which stands for ``https://api.replicate.com``; the API's
paths start with ``/v1``):

- ``POST /v1/models/kwaivgi/kling-v3-video/predictions`` ``{input, webhook?, webhook_events_filter?}``
  -> 201, the prediction (``starting``). ``Prefer: wait[=N]`` holds the answer until it ends or N
  seconds pass (1-60, default 60); ``Cancel-After: 90s`` ends it at that deadline: ``aborted``
  if it had not started, ``canceled`` if it was running.
- ``POST /v1/predictions`` ``{version, input, ...}`` -> the same, for the emulated version.
- ``GET /v1/predictions/{id}`` -> the prediction: ``starting``, ``processing``, ``succeeded``,
  ``failed``, ``canceled`` or ``aborted``; ``output`` is one URL.
- ``POST /v1/predictions/{id}/cancel`` -> the prediction, ``canceled`` unless it had ended.
- ``POST /v1/files`` (multipart ``content``, optional ``metadata``) -> 201, a file whose
  ``urls.get`` an input may name.
- ``GET /v1/webhooks/default/secret`` -> ``{"key": "whsec_..."}``; ``GET /v1/account`` -> the account.

``Authorization: Bearer <token>`` everywhere. Errors are ``{"title", "detail", "status"}``; an
input refusal is a 422 with ``invalid_fields``, and unknown inputs are refused, as Replicate checks
inputs against the model's schema. Content is judged while the model runs: refused content fails
the prediction (E005) rather than the create. An ended prediction's input, output and file are
removed ``replicate_retention_seconds`` (scaled) after it ends: ``data_removed`` turns true and
the output URL answers 404. Webhooks carry the prediction itself, signed with Standard Webhooks
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) under the account's secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from http import HTTPStatus
from typing import Any

from standardwebhooks import Webhook
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from . import downloads
from .errors import ApiError
from .faults import webhook_tampering
from .flavor import ErrorCatalogue, Flavor, parse_object, read_form
from .media import sniff_image
from .rules import REPLICATE_HOST_RULES, FieldError, Model, Submission, read_fields
from .tasks import Outcome, Phase, Task
from .tokens import Directives

MODEL = "kwaivgi/kling-v3-video"
VERSION = "4a8ba274" + hashlib.sha256(b"kling-video-mcp emulator: kling-v3-video").hexdigest()[:56]
"""The emulated model version: the prefix of the one read on the model's API page
(https://replicate.com/kwaivgi/kling-v3-video/api), the rest the emulator's."""
PINNED = "pinned"
"""``Model.name`` of a create through ``POST /v1/predictions`` (its body names the version)."""

REPLICATE_ERRORS: ErrorCatalogue = {
    # (HTTP status, title, detail): the auth, credit and throttling answers Replicate users quote
    # (docs/providers.md#replicate-errors); the other wordings are the emulator's.
    "missing_key": (401, "Unauthenticated", "You did not pass an authentication token"),
    "unknown_key": (401, "Unauthenticated", "You did not pass a valid authentication token"),
    "forbidden_key": (403, "Forbidden", "You do not have permission to perform this action"),
    "rate_limited": (429, "Request was throttled", "Request was throttled. Your rate limit resets in ~30s."),
    "balance": (
        402,
        "Insufficient credit",
        (
            "You have insufficient credit to run this model. Go to https://replicate.com/account/billing#billing "
            "to purchase credit. Once you purchase credit, please wait a few minutes before trying again."
        ),
    ),
    "bad_body": (400, "Bad request", "The request body must be a JSON object"),
    "create_failed": (500, "Internal Server Error", "Failed to create the prediction"),
    "result_failed": (500, "Internal Server Error", "Failed to get the prediction"),
    "unavailable": (503, "Service Unavailable", "Service temporarily unavailable"),
    "task_not_found": (404, "Not found", "The requested resource could not be found."),
    "api_not_found": (404, "Not found", "The requested resource could not be found."),
}

FIELD_ERROR_TYPES = {"missing": "required", "not_allowed": "additional_property_not_allowed"}
"""``FieldError.kind`` -> Replicate's ``invalid_fields[].type`` (JSON-Schema words); others pass as they are."""

STATUSES = {Phase.QUEUED: "starting", Phase.RUNNING: "processing", Phase.SUCCEEDED: "succeeded"}
ENDED_STATUSES = {Outcome.CANCELED: "canceled", Outcome.ABORTED: "aborted"}
"""A ``FAILED`` phase is ``failed`` unless the caller (or its deadline) ended the prediction."""

FAILURES = {
    # ``error`` of a failed prediction; E005 is Replicate's code for flagged content.
    Outcome.MODERATION: "The input or output was flagged as sensitive. Please try again with different inputs. (E005)",
    Outcome.MEDIA: "Failed to download start_image: the URL could not be fetched",
    Outcome.INTERNAL: "Prediction interrupted; please retry (code: PA)",
    Outcome.TIMEOUT: "Prediction timed out",
}

EVENT_STAGES = {"start": "created", "output": "ended", "logs": None, "completed": "ended"}
"""``webhook_events_filter`` events -> webhook stages (the output is one URL, ready at the end;
log events are not sent)."""
STAGE_ORDER = ("created", "started", "ended")

WAIT_DEFAULT_SECONDS, WAIT_MAX_SECONDS = 60, 60
FILE_LIFETIME_SECONDS = 24 * 3600
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class Replicate(Flavor):
    name = "replicate"
    rules = REPLICATE_HOST_RULES
    errors = REPLICATE_ERRORS
    balance_before_fields = False

    def provider_routes(self) -> list[BaseRoute]:
        return [
            Route(
                f"/v1/models/{MODEL}/predictions",
                self.endpoint("submit", partial(self._create, Model(MODEL, "pro", "t2v"))),
                methods=["POST"],
            ),
            Route(
                "/v1/predictions", self.endpoint("submit", partial(self._create, Model(PINNED, "pro", "t2v"))),
                methods=["POST"],
            ),
            Route("/v1/predictions/{prediction_id}", self.endpoint("poll", self._get), methods=["GET"]),
            Route("/v1/predictions/{prediction_id}/cancel", self.endpoint("cancel", self._cancel), methods=["POST"]),
            Route("/v1/files", self.endpoint("upload", self._upload), methods=["POST"]),
            Route("/v1/webhooks/default/secret", self.endpoint(None, self._secret), methods=["GET"]),
            Route("/v1/account", self.endpoint(None, self._account), methods=["GET"]),
        ]

    # -- envelopes ---------------------------------------------------------------

    def render_error(self, error: ApiError) -> Response:
        if isinstance(error, FieldError):
            error = _invalid(f"input.{error.field}" if error.field else "input", error.message, error.kind)
        body = error.body if error.body is not None else _problem(error)
        return JSONResponse(body, error.status, headers=error.headers)

    def render_ok_error(self, error: ApiError) -> Response:
        """HTTP 200 carrying the problem body (``status`` inside says what went wrong), no prediction."""
        return JSONResponse(_problem(error), headers=error.headers)

    # -- predictions ------------------------------------------------------------------

    def read_submission(self, request: Request, payload: dict[str, Any], model: Model) -> Submission:
        """The ``input`` object under the model's schema; a start_image makes it image-to-video."""
        if model.name == PINNED and payload.get("version") not in (VERSION, f"{MODEL}:{VERSION}"):
            raise ApiError(
                422,
                "Invalid version or not permitted",
                "The specified version does not exist (or perhaps you don't have permission to use it?)",
            )
        inputs = payload.get("input")
        if not isinstance(inputs, dict):
            raise FieldError("", "input is required and must be an object", kind="required")
        events = payload.get("webhook_events_filter")
        if events is not None and (not isinstance(events, list) or not set(events) <= set(EVENT_STAGES)):
            raise _invalid("webhook_events_filter", f"must be a list of {', '.join(EVENT_STAGES)}", "enum")
        route = "i2v" if inputs.get("start_image") else "t2v"
        return read_fields(self.rules, Model(MODEL, "pro", route), inputs, self.image_resolver(request), self.config)[0]

    def screen(self, directives: Directives) -> Directives:
        """Replicate judges content while the model runs: refused content fails the prediction (E005)."""
        if directives.reject is None:
            return directives
        return replace(directives, reject=None, fail=directives.fail or "moderation")

    async def _create(self, model: Model, request: Request, body: bytes) -> Response:
        """Auth, rate, body and inputs, credit; then ``Cancel-After``, the webhook and ``Prefer: wait``."""
        caller, submission, directives = self.accept(request, body, model)
        deadline = _cancel_after(request.headers.get("cancel-after"))
        payload = parse_object(body) or {}
        prediction_id = base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()
        task = await self.emulator.create_task(self.name, prediction_id, caller.key, submission, directives)
        task.extras["input"] = payload["input"]
        if deadline is not None:
            at = task.created_at + self.config.scaled(deadline)
            task.cancel(at, Outcome.ABORTED if at <= task.starts_at else Outcome.CANCELED)
        self.emulator.store.save(task)
        if url := payload.get("webhook"):
            events = payload.get("webhook_events_filter") or list(EVENT_STAGES)
            wanted = {EVENT_STAGES[event] for event in events}
            stages = [stage for stage in STAGE_ORDER if stage in wanted]
            body = partial(self.prediction, request)
            self.emulator.send_webhook(task, str(url), body, sign=self._sign, stages=stages)
        now = task.created_at
        wait = _prefer_wait(request.headers.get("prefer"))
        if wait is not None:
            now = await self.wait_for_end(task, self.config.scaled(wait))
        return JSONResponse(self.prediction(request, task, now), 201)

    async def _get(self, request: Request, _body: bytes) -> Response:
        caller = self.admit(request, submission=False)
        task = self.find(request.path_params["prediction_id"], caller)
        return JSONResponse(self.prediction(request, task, self.emulator.now()))

    async def _cancel(self, request: Request, _body: bytes) -> Response:
        caller = self.admit(request, submission=False)
        task = self.find(request.path_params["prediction_id"], caller)
        now = self.emulator.now()
        if task.phase(now) in (Phase.QUEUED, Phase.RUNNING):
            task.cancel(now)
            self.emulator.store.save(task)
        return JSONResponse(self.prediction(request, task, now))

    def prediction(self, request: Request, task: Task, now: float) -> dict[str, Any]:
        """The prediction object at ``now`` (docs/providers.md#replicate-task-result): the body of a poll
        and of a webhook."""
        phase = task.phase(now)
        ended = phase in (Phase.SUCCEEDED, Phase.FAILED)
        removed = ended and now >= self._removal_at(task)
        started = now >= task.starts_at and task.finishes_at > task.starts_at
        base = f"{self.flavor_base(request)}/v1/predictions/{task.id}"
        return {
            "id": task.id,
            "model": MODEL,
            "version": VERSION,
            "input": {} if removed else task.extras.get("input", {}),
            "logs": "",
            "output": self.result_url(request, task, now) if phase is Phase.SUCCEEDED and not removed else None,
            "data_removed": removed,
            "error": FAILURES.get(task.final_outcome) if phase is Phase.FAILED else None,
            "status": STATUSES.get(phase) or ENDED_STATUSES.get(task.final_outcome, "failed"),
            "created_at": _iso(task.created_at),
            "started_at": _iso(task.starts_at) if started else None,
            "completed_at": _iso(task.finishes_at) if ended else None,
            "source": "api",
            "metrics": _metrics(task) if phase is Phase.SUCCEEDED else {},
            "urls": {"get": base, "cancel": f"{base}/cancel", "web": f"https://replicate.com/p/{task.id}"},
        }

    def result_url(self, request: Request, task: Task, now: float) -> str:
        """One URL for the life of the output (no expiry parameter): it stops working when removed."""
        return f"{self.flavor_base(request)}/__fake/media/{task.id}.mp4"

    def clip_refusal(self, request: Request, task: Task, now: float) -> Response | None:
        return downloads.missing() if now >= self._removal_at(task) else None

    def _removal_at(self, task: Task) -> float:
        """When the prediction's data goes: ``replicate_retention_seconds`` (scaled) after its end,
        or sooner for an ``[[expire]]`` task (its short URL lifetime)."""
        return task.finishes_at + min(task.url_ttl, self.config.scaled(self.config.replicate_retention_seconds))

    # -- webhooks ------------------------------------------------------------------------

    def _sign(self, task: Task, raw: bytes) -> dict[str, str]:
        """Standard Webhooks headers under the account's secret (docs/providers.md#replicate-webhooks); the id
        is stable across retries."""
        forged, backdate = webhook_tampering(self.emulator.faults, self.name)
        message_id = "msg_" + hashlib.sha256(task.id.encode() + raw).hexdigest()[:27]
        timestamp = datetime.fromtimestamp(int(self.emulator.now()) - backdate, UTC)
        signature = Webhook(_webhook_secret(task.key)).sign(message_id, timestamp, raw + (b" " if forged else b""))
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": signature,
        }

    async def _secret(self, request: Request, _body: bytes) -> Response:
        caller = self.admit(request, submission=False)
        return JSONResponse({"key": _webhook_secret(caller.key)})

    async def _account(self, request: Request, _body: bytes) -> Response:
        caller = self.admit(request, submission=False)
        username = "emulator-" + hashlib.sha256(caller.key.encode()).hexdigest()[:8]
        return JSONResponse({"type": "user", "username": username, "name": "Emulated account", "github_url": None})

    # -- files -----------------------------------------------------------------------------

    async def _upload(self, request: Request, _body: bytes) -> Response:
        """``POST /v1/files`` (docs/providers.md#replicate-uploads): multipart ``content`` and optional JSON
        ``metadata``."""
        self.admit(request, submission=False)
        form = await read_form(request)
        upload = form.get("content") if form is not None else None
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "Bad request", "content is required: the file, as multipart form data")
        metadata_text = form.get("metadata") if form is not None else None
        metadata = json.loads(metadata_text) if isinstance(metadata_text, str) and metadata_text else {}
        data = await upload.read()
        extension = sniff_image(data) or (upload.filename or "").rpartition(".")[2].lower() or "bin"
        name = self.emulator.store.add_upload(data, {"jpeg": "jpg"}.get(extension, extension))
        created = self.emulator.now()
        return JSONResponse(
            {
                "id": name.removeprefix("up_").partition(".")[0],
                "name": upload.filename or name,
                "content_type": upload.content_type or "application/octet-stream",
                "size": len(data),
                "checksums": {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()},
                "metadata": metadata,
                "created_at": _iso(created),
                "expires_at": _iso(created + FILE_LIFETIME_SECONDS),
                "urls": {"get": f"{self.flavor_base(request)}/__fake/media/{name}"},
            },
            201,
        )


def _problem(error: ApiError) -> dict[str, Any]:
    """``{"title", "detail", "status"}``; an injected fault's HTTP name (``BAD_GATEWAY``) becomes its phrase."""
    status = HTTPStatus(error.status)
    title = status.phrase if error.reason in ("", status.name) else error.reason
    return {"title": title, "detail": error.message, "status": error.status}


def _invalid(field: str, description: str, kind: str) -> ApiError:
    """Replicate's 422 for a refused input: a ``detail`` line per field and ``invalid_fields``."""
    body = {
        "title": "Input validation failed",
        "detail": f"- {field}: {description}\n",
        "status": 422,
        "invalid_fields": [{"type": FIELD_ERROR_TYPES.get(kind, kind), "field": field, "description": description}],
    }
    return ApiError(422, "Input validation failed", description, body=body)


def _webhook_secret(key: str) -> str:
    """The account's signing secret: fixed per token, so it survives an emulator restart."""
    return "whsec_" + base64.b64encode(hashlib.sha256(b"replicate webhook secret:" + key.encode()).digest()).decode()


def _cancel_after(header: str | None) -> float | None:
    """``Cancel-After`` as seconds (``90s``, ``5m``, ``1h30m``, ``500ms``); a malformed one is a 400."""
    if header is None:
        return None
    text = header.strip()
    parts = DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ApiError(400, "Bad request", "Cancel-After must be a duration such as 30s, 5m or 1h30m")
    return sum(float(number) * UNIT_SECONDS[unit] for number, unit in parts)


def _prefer_wait(header: str | None) -> int | None:
    """Seconds of ``Prefer: wait`` (60) or ``wait=N`` (at most 60), or ``None`` for no waiting."""
    match = re.fullmatch(r"\s*wait(?:=(\d+))?\s*", header or "")
    if match is None:
        return None
    return min(WAIT_MAX_SECONDS, int(match.group(1))) if match.group(1) else WAIT_DEFAULT_SECONDS


def _metrics(task: Task) -> dict[str, float]:
    """``predict_time`` (rendering) and ``total_time`` (queue too), in the emulated provider's seconds."""
    scale = task.time_scale or 1.0
    return {
        "predict_time": round((task.finishes_at - task.starts_at) / scale, 3),
        "total_time": round((task.finishes_at - task.created_at) / scale, 3),
    }


def _iso(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
