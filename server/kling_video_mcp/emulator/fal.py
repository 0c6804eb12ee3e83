"""fal.ai's queue and storage, serving Kling v3.0 (docs/providers.md#fal-in-the-emulator).

Routes (relative to ``/fal``, which stands for both of fal's hosts: the queue
``https://queue.fal.run`` and the REST host ``https://rest.fal.ai``, whose paths do not meet):

- ``POST /fal-ai/kling-video/v3/{standard|pro|4k}/{text-to-video|image-to-video}[?fal_webhook=URL]``
  -> ``{request_id, response_url, status_url, cancel_url, status: IN_QUEUE, queue_position}``.
  The three URLs are under ``/fal-ai/kling-video/requests/{id}``: the app, not the submit path.
- ``GET .../requests/{id}/status[?logs=1]`` -> 202 ``IN_QUEUE`` / ``IN_PROGRESS``, 200 ``COMPLETED``.
  A failed request also ends ``COMPLETED``: only its result shows the failure.
- ``GET .../requests/{id}`` -> 200 ``{"video": {url, content_type, file_name}}``; 400
  ``{"detail": "Request is still in progress"}`` before the end; the failure's own answer after a
  failed one (422 ``detail`` list naming the field, ``content_policy_violation``; 500; 504).
- ``PUT .../requests/{id}/cancel`` -> 202 ``CANCELLATION_REQUESTED``, 400 ``ALREADY_COMPLETED``,
  404 ``NOT_FOUND``.
- ``POST /storage/upload/initiate?storage_type=fal-cdn-v3`` ``{content_type, file_name}`` ->
  ``{upload_url, file_url}``; ``PUT upload_url`` with the bytes makes ``file_url`` serve them.
- ``GET /.well-known/jwks.json`` -> the ED25519 key that signs webhooks.

Every call but the upload PUT and the key set carries ``Authorization: Key <FAL_KEY>``. Whether
fal refuses a bad input at the submit or only in the result is ``EmulatorConfig.fal_validation_at``.
A ``fal_webhook`` gets ``{request_id, gateway_request_id, status: OK|ERROR, payload, error}`` when
the request ends, signed as fal signs: ED25519 over ``request_id``, user id, timestamp and the
body's SHA-256, in the ``X-Fal-Webhook-*`` headers.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .access import Caller, identify
from .errors import ApiError
from .faults import webhook_tampering
from .flavor import ErrorCatalogue, Flavor, parse_object
from .rules import DEFAULT_DURATION, FAL_HOST_RULES, FieldError, Model, Submission
from .store import write_atomic
from .tasks import Outcome, Phase, Task
from .tokens import Directives

APP = "fal-ai/kling-video"
MOVED = "queue-moved"
"""The requests' prefix with ``fal_requests_moved`` instead of ``APP``."""
TIERS = {"standard": "std", "pro": "pro", "4k": "4k"}
TASKS = {"text-to-video": "t2v", "image-to-video": "i2v"}
ERRORS_DOC = "https://docs.fal.ai/errors"

FAL_ERRORS: ErrorCatalogue = {
    # (HTTP status, error_type, detail). The wrong-key detail is the one fal users report
    # (github.com/fal-ai/fal/issues/1068); the balance detail is what accounts see in the wild
    # (docs/providers.md#fal-errors, inferred); the others are the emulator's words for fal's statuses.
    "missing_key": (401, "", "Missing authorization header"),
    "unknown_key": (401, "", "No user found for Key ID and Secret"),
    "forbidden_key": (403, "", "Forbidden"),
    "rate_limited": (429, "", "Too many requests"),
    "balance": (403, "", "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."),
    "bad_body": (422, "", "Input should be a valid dictionary"),
    "illegal_prompt": (422, "content_policy_violation", "The content was flagged by a content checker."),
    "illegal_image": (422, "content_policy_violation", "The content was flagged by a content checker."),
    "create_failed": (500, "", "Internal Server Error"),
    "result_failed": (500, "", "Internal Server Error"),
    "unavailable": (503, "runner_scheduling_failure", "Runner scheduling failure"),
    "task_not_found": (404, "", "Request not found"),
    "api_not_found": (404, "", "Application not found"),
}

CONTENT_FIELDS = {"illegal_prompt": "prompt", "illegal_image": "start_image_url"}
"""Which input a content refusal names."""

FAILURES: dict[Outcome, tuple[int, str, str, str | None]] = {
    # What the result of a failed request answers: (status, error_type, detail, field); a field
    # makes it a 422 detail list (docs/providers.md#fal-errors). Cancelled requests' results are not documented.
    Outcome.MODERATION: (422, "content_policy_violation", FAL_ERRORS["illegal_prompt"][2], "prompt"),
    Outcome.MEDIA: (422, "file_download_error", "Failed to download the file from the URL.", "start_image_url"),
    Outcome.INTERNAL: (500, "", "Internal Server Error", None),
    Outcome.TIMEOUT: (504, "request_timeout", "Request timed out", None),
    Outcome.CANCELED: (400, "", "Request was cancelled", None),
}

WEBHOOK_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"kling-video-mcp emulator: fal webhooks").digest())
"""The emulator's webhook signing key: fixed, so a restarted emulator's signatures still verify."""
WEBHOOK_KEY_ID = "kling-emulator-fal-webhooks"

UPLOAD_EXTENSION = re.compile(r"^[a-z0-9]{2,5}$")
ERROR_TYPE = re.compile(r"[a-z]+(?:_[a-z]+)*")
"""fal's ``error_type`` words (``request_timeout``); an injected fault's HTTP name (``BAD_GATEWAY``) is not one."""


class Fal(Flavor):
    name = "fal"
    rules = FAL_HOST_RULES
    errors = FAL_ERRORS
    balance_before_fields = True  # the gateway refuses a locked account before any runner sees the input

    def provider_routes(self) -> list[BaseRoute]:
        submits = [
            Route(
                f"/{APP}/v3/{tier}/{task}",
                self.endpoint("submit", partial(self._submit, Model(f"{APP}/v3/{tier}/{task}", TIERS[tier], mode))),
                methods=["POST"],
            )
            for tier in TIERS
            for task, mode in TASKS.items()
        ]
        followed = [
            route
            for requests in (f"/{APP}/requests/{{request_id}}", f"/{MOVED}/requests/{{request_id}}")
            for route in (
                Route(f"{requests}/status", self.endpoint("poll", self._status), methods=["GET"]),
                Route(f"{requests}/cancel", self.endpoint("cancel", self._cancel), methods=["PUT"]),
                Route(requests, self.endpoint("result", self._result), methods=["GET"]),
            )
        ]
        return [
            *submits,
            *followed,
            Route("/storage/upload/initiate", self.endpoint("upload", self._initiate), methods=["POST"]),
            Route("/storage/upload/put/{name}", self.endpoint("upload", self._put), methods=["PUT"]),
            Route("/.well-known/jwks.json", self.endpoint(None, self._jwks), methods=["GET"]),
        ]

    def identify(self, request: Request) -> Caller:
        return identify(request.headers.get("authorization"), self.config.valid_keys, scheme="key")

    # -- envelopes ---------------------------------------------------------------

    def render_error(self, error: ApiError) -> Response:
        status, body, headers = _answer(error)
        return JSONResponse(body, status, headers=headers)

    def render_ok_error(self, error: ApiError) -> Response:
        """HTTP 200 carrying only ``{"detail": ...}``: no ``request_id``, no ``status``, no output."""
        return JSONResponse({"detail": error.message}, headers=error.headers)

    def error(self, kind: str) -> ApiError:
        if kind in CONTENT_FIELDS:
            return FieldError(CONTENT_FIELDS[kind], self.errors[kind][2], kind="content_policy_violation")
        if kind == "bad_body":
            return FieldError("", self.errors[kind][2], kind="dict_type")
        return super().error(kind)

    # -- the queue ------------------------------------------------------------------

    async def _submit(self, model: Model, request: Request, body: bytes) -> Response:
        """Auth and balance at the gateway; the input's refusal at once or in the result
        (``fal_validation_at``); then the request is queued."""
        caller = self.admit(request, submission=True)
        if caller.broke:
            raise self.error("balance")
        request_id = str(uuid.uuid4())
        try:
            submission, directives = self.inspect(request, body, model)
        except ApiError as refusal:
            if self.config.fal_validation_at == "submit":
                raise
            task = await self._doomed(request_id, caller, model, refusal)
        else:
            self.charge(caller, directives)
            task = await self.emulator.create_task(self.name, request_id, caller.key, submission, directives)
        task.extras["requests_path"] = MOVED if self.config.fal_requests_moved else APP
        self.emulator.store.save(task)
        webhook = request.query_params.get("fal_webhook")
        if webhook:
            self.emulator.send_webhook(task, webhook, partial(self._webhook_body, request), sign=self._sign)
            if self.config.fal_webhook_reply_ids_only:
                return JSONResponse({"request_id": task.id, "gateway_request_id": task.id})
        reply = {**self._urls(request, task), "status": "IN_QUEUE", "queue_position": 0}
        if webhook:
            reply["gateway_request_id"] = task.id
        return JSONResponse(reply, headers={"x-fal-request-id": task.id})

    async def _doomed(self, request_id: str, caller: Caller, model: Model, refusal: ApiError) -> Task:
        """A queued request that fails with ``refusal`` as soon as a runner reads its input."""
        placeholder = Submission(model, None, (), DEFAULT_DURATION, False, "16:9", None, None, sync=False)
        doomed = Directives(fail="internal", render_seconds=0.0)
        task = await self.emulator.create_task(self.name, request_id, caller.key, placeholder, doomed)
        status, body, _headers = _answer(refusal)
        task.extras["failure"] = {"status": status, "body": body}
        self.emulator.store.save(task)
        return task

    def _followed(self, request: Request, caller: Caller) -> Task | None:
        """The caller's request at the URL its submit's answer gave; ``None`` elsewhere."""
        task = self.emulator.find_task(self.name, request.path_params["request_id"], caller.key)
        path = request.url.path.removeprefix(request.scope.get("root_path", ""))
        if task is None or not path.startswith(f"/{task.extras.get('requests_path', APP)}/"):
            return None
        return task

    async def _status(self, request: Request, _body: bytes) -> Response:
        caller = self.admit(request, submission=False)
        if self._followed(request, caller) is None:
            raise self.error("task_not_found")
        task = self.find(request.path_params["request_id"], caller)
        now = self.emulator.now()
        phase = task.phase(now)
        logs = [] if request.query_params.get("logs") in ("1", "true") else None
        reply: dict[str, Any] = {**self._urls(request, task), "logs": logs}
        if phase is Phase.QUEUED:
            return JSONResponse({**reply, "status": "IN_QUEUE", "queue_position": 0}, 202)
        if logs is not None:
            started = _iso(task.starts_at)
            logs.append({"message": "Generating video", "level": "INFO", "source": "user", "timestamp": started})
        if phase is Phase.RUNNING:
            return JSONResponse({**reply, "status": "IN_PROGRESS"}, 202)
        inference = max(0.0, task.finishes_at - task.starts_at) / (task.time_scale or 1.0)
        return JSONResponse({**reply, "status": "COMPLETED", "metrics": {"inference_time": round(inference, 3)}})

    async def _result(self, request: Request, _body: bytes) -> Response:
        caller = self.admit(request, submission=False)
        if self._followed(request, caller) is None:
            raise self.error("task_not_found")
        task = self.find(request.path_params["request_id"], caller)
        now = self.emulator.now()
        phase = task.phase(now)
        if phase in (Phase.QUEUED, Phase.RUNNING):
            raise ApiError(400, "", "Request is still in progress")
        if phase is Phase.FAILED:
            status, body, headers = self._failure(task)
            return JSONResponse(body, status, headers=headers)
        return JSONResponse(self._output(request, task, now))

    async def _cancel(self, request: Request, _body: bytes) -> Response:
        """Queued requests stop; running ones get a signal the app may ignore (``fal_cancel_stops_running``)."""
        caller = self.admit(request, submission=False)
        task = self._followed(request, caller)
        if task is None:
            return JSONResponse({"status": "NOT_FOUND"}, 404)
        now = self.emulator.now()
        phase = task.phase(now)
        if phase in (Phase.SUCCEEDED, Phase.FAILED):
            return JSONResponse({"status": "ALREADY_COMPLETED"}, 400)
        if phase is Phase.QUEUED or self.config.fal_cancel_stops_running:
            task.cancel(now)
            self.emulator.store.save(task)
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, 202)

    def _urls(self, request: Request, task: Task) -> dict[str, str]:
        """The reply's own URLs: fal builds them from ``owner/app``, dropping the submit's subpath
        (docs/providers.md#fal-submit-routes)."""
        base = f"{self.flavor_base(request)}/{task.extras.get('requests_path', APP)}/requests/{task.id}"
        return {
            "request_id": task.id,
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
        }

    def _output(self, request: Request, task: Task, now: float) -> dict[str, Any]:
        """``I2VOutput``: ``{"video": File}`` (docs/providers.md#fal-task-result)."""
        url = self.result_url(request, task, now)
        return {"video": {"url": url, "content_type": "video/mp4", "file_name": f"{task.id}.mp4"}}

    def _failure(self, task: Task) -> tuple[int, dict[str, Any], dict[str, str]]:
        """What the result of a failed request answers: its deferred refusal, else by outcome."""
        if "failure" in task.extras:
            return task.extras["failure"]["status"], task.extras["failure"]["body"], {"X-Fal-Retryable": "false"}
        status, error_type, detail, field = FAILURES.get(task.final_outcome, FAILURES[Outcome.INTERNAL])
        if field is not None:
            return _answer(FieldError(field, detail, kind=error_type))
        return _answer(ApiError(status, error_type, detail))

    # -- webhooks ---------------------------------------------------------------------

    def _webhook_body(self, request: Request, task: Task, now: float) -> dict[str, Any]:
        """``{request_id, gateway_request_id, status, payload, error}`` (docs/providers.md#fal-webhooks)."""
        body: dict[str, Any] = {"request_id": task.id, "gateway_request_id": task.id}
        if task.phase(now) is Phase.SUCCEEDED:
            return {**body, "status": "OK", "payload": self._output(request, task, now), "error": None}
        status, payload, _headers = self._failure(task)
        return {**body, "status": "ERROR", "payload": payload, "error": f"Invalid status code: {status}"}

    def _sign(self, task: Task, raw: bytes) -> dict[str, str]:
        """fal's headers: ED25519 over ``request_id\\nuser_id\\ntimestamp\\nsha256_hex(body)``
        (docs/providers.md#fal-webhooks)."""
        forged, backdate = webhook_tampering(self.emulator.faults, self.name)
        user_id = _user_id(task.key)
        timestamp = str(int(self.emulator.now()) - backdate)
        message = "\n".join((task.id, user_id, timestamp, hashlib.sha256(raw).hexdigest())).encode()
        signature = WEBHOOK_KEY.sign(message + (b" forged" if forged else b""))
        return {
            "X-Fal-Webhook-Request-Id": task.id,
            "X-Fal-Webhook-User-Id": user_id,
            "X-Fal-Webhook-Timestamp": timestamp,
            "X-Fal-Webhook-Signature": signature.hex(),
        }

    async def _jwks(self, _request: Request, _body: bytes) -> Response:
        """The public half of :data:`WEBHOOK_KEY` as a JWK set (``kty: OKP``, ``crv: Ed25519``)."""
        key = OKPAlgorithm.to_jwk(WEBHOOK_KEY.public_key(), as_dict=True)
        return JSONResponse({"keys": [{**key, "kid": WEBHOOK_KEY_ID, "alg": "EdDSA", "use": "sig"}]})

    # -- storage ----------------------------------------------------------------------

    async def _initiate(self, request: Request, body: bytes) -> Response:
        """Step 1 of fal's upload (docs/providers.md#fal-uploads): a place for the file and the URL it
        will be served at."""
        self.admit(request, submission=False)
        payload = parse_object(body)
        content_type = payload.get("content_type") if payload is not None else None
        if not isinstance(content_type, str) or not content_type:
            raise FieldError("content_type", "Field required", kind="missing")
        file_name = payload.get("file_name") if payload is not None else None
        extension = file_name.rpartition(".")[2].lower() if isinstance(file_name, str) and "." in file_name else ""
        if not UPLOAD_EXTENSION.match(extension):
            extension = (mimetypes.guess_extension(content_type) or ".bin").lstrip(".")
        name = self.emulator.store.add_upload(b"", extension)  # empty until the PUT
        base = self.flavor_base(request)
        return JSONResponse(
            {"upload_url": f"{base}/storage/upload/put/{name}", "file_url": f"{base}/__fake/media/{name}"}
        )

    async def _put(self, request: Request, body: bytes) -> Response:
        """Step 2: the bytes, to the presigned ``upload_url`` (no ``Authorization``)."""
        path = self.emulator.store.upload_path(request.path_params["name"])
        if path is None:
            raise self.error("task_not_found")
        write_atomic(path, body)
        return Response(status_code=200)


def _answer(error: ApiError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) of ``error`` in fal's shapes (docs/providers.md#fal-errors): a field refusal is a 422
    ``detail`` list (``loc``, ``msg``, ``type``, ``url``); anything else ``{"detail"}``, with
    ``error_type`` and ``X-Fal-Error-Type`` when it has one."""
    if error.body is not None:
        return error.status, dict(error.body), error.headers
    if isinstance(error, FieldError):
        location: list[str | int] = ["body", *_path(error.field)]
        item = {"loc": location, "msg": error.message, "type": error.kind, "url": f"{ERRORS_DOC}#{error.kind}"}
        return 422, {"detail": [item]}, {**error.headers, "X-Fal-Retryable": "false"}
    if ERROR_TYPE.fullmatch(error.reason):
        headers = {**error.headers, "X-Fal-Error-Type": error.reason}
        return error.status, {"detail": error.message, "error_type": error.reason}, headers
    return error.status, {"detail": error.message}, error.headers


def _path(field: str) -> list[str | int]:
    """``multi_prompt[1].duration`` -> ``["multi_prompt", 1, "duration"]``."""
    steps: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", field):
        steps.append(int(index) if index else name)
    return steps


def _user_id(key: str) -> str:
    """A stable user id for a key, as fal names the account in ``X-Fal-Webhook-User-Id``."""
    return "emulator-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _iso(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).isoformat()
