"""Kling's official API, the developer platform's own
(docs/providers.md#kling-in-the-emulator).

Routes (relative to ``/kling``; the real hosts are ``https://api-singapore.klingai.com`` and
``https://api-beijing.klingai.com``, with the same paths):

- ``POST /v1/videos/text2video`` and ``POST /v1/videos/image2video`` -> ``data.task_id`` (an
  18-digit string), ``task_status: submitted``
- ``GET /v1/videos/{text2video|image2video}/{id}`` -> the task; ``id`` is the ``task_id`` or the
  caller's ``external_task_id``, and the path must be the one the task was created on
- ``GET /v1/videos/{text2video|image2video}?pageNum=&pageSize=`` -> the caller's tasks, newest first
- ``GET /account/costs?start_time=&end_time=`` -> the account's resource packs (free to call)
- anything else -> 404 / 1203

Every call carries ``Authorization: Bearer <JWT>``: HS256, signed with
``EmulatorConfig.kling_secret_key``, ``iss`` a valid access key, ``exp`` required and ``nbf``
honoured; failures are 401 with codes 1000-1004. Answers are the envelope ``{code, message,
request_id, data}``: ``code`` 0 is success, and an error's HTTP status follows the code table, so a
429 may mean "out of money" (1102) or "slow down" (1302, and 1303 once the account's
``kling_max_running`` tasks are between ``submitted`` and their end). A failed task is still an
HTTP 200 with ``code`` 0 and ``task_status: failed``. A submit's ``callback_url`` gets the task
object (no envelope, no signature) at every status change.

Control route: ``GET /kling/__fake/concurrency`` -> ``{"limit", "running", "peak"}``, the last two
per access key: tasks holding a slot now, and the most that ever held one at once.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections import defaultdict
from functools import partial
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .access import Caller, KeyStatus, identify
from .errors import ApiError
from .flavor import ErrorCatalogue, Flavor, parse_object
from .rules import KLING_HOST_RULES, Model
from .tasks import Outcome, Phase, Task

ENDPOINTS = {"text2video": "t2v", "image2video": "i2v"}
"""Submit path -> route; the poll path must be the one the task was created on
(docs/providers.md#kling-task-result)."""

KLING_ERRORS: ErrorCatalogue = {
    # (HTTP status, business code, message): the official code table (docs/providers.md#kling-errors).
    "missing_key": (401, "1001", "Authorization is empty"),
    "bad_token": (401, "1002", "Authorization is invalid"),
    "unknown_key": (401, "1000", "Authentication failed"),
    "token_not_yet_valid": (401, "1003", "Authorization is not yet valid"),
    "token_expired": (401, "1004", "Authorization has expired"),
    "forbidden_key": (403, "1103", "Unauthorized access to the requested resource, such as API or model"),
    "rate_limited": (429, "1302", "The API request is too fast, exceeding the platform's rate limit"),
    "concurrency": (429, "1303", "parallel task over resource pack limit"),
    "balance": (429, "1102", "Resource pack depleted or expired"),
    "bad_body": (400, "1200", "Invalid request parameters"),
    "illegal_prompt": (400, "1301", "Trigger the content security policy of the platform"),
    "illegal_image": (400, "1301", "Trigger the content security policy of the platform"),
    "create_failed": (500, "5000", "Server internal error"),
    "result_failed": (500, "5000", "Server internal error"),
    "unavailable": (503, "5001", "Server temporarily unavailable, usually due to maintenance"),
    # How Kling answers an unknown task id is not documented: the code table's "resource does not exist".
    "task_not_found": (404, "1203", "The requested resource does not exist"),
    "api_not_found": (404, "1203", "The requested resource does not exist"),
}

CODES_BY_STATUS = {400: 1201, 401: 1000, 403: 1103, 404: 1203, 429: 1302, 500: 5000, 503: 5001, 504: 5002}
"""The business code of an error that names none (a field refusal is 1201, an injected 502 is 5000)."""

STATUSES = {Phase.QUEUED: "submitted", Phase.RUNNING: "processing", Phase.SUCCEEDED: "succeed", Phase.FAILED: "failed"}

FAILURE_MESSAGES = {
    # task_status_msg: only "content risk" is described in the docs (docs/providers.md#kling-task-result);
    # the rest are the emulator's words.
    Outcome.MODERATION: "Failure to pass the risk control system",
    Outcome.INTERNAL: "Internal error, please try again",
    Outcome.MEDIA: "Failed to download the image",
    Outcome.TIMEOUT: "Task timed out",
}

UNITS_PER_SECOND = {"std": 0.3, "pro": 0.5, "4k": 1.0}
"""``final_unit_deduction`` per generated second: an emulator placeholder, Kling's v3 unit prices
are not published (docs/providers.md#kling-price)."""

PAGE_NUMBERS, PAGE_SIZES = (1, 1000), (1, 500)
"""``pageNum`` and ``pageSize`` bounds of the task list (docs/providers.md#kling-in-the-emulator)."""


class Kling(Flavor):
    name = "kling"
    rules = KLING_HOST_RULES
    errors = KLING_ERRORS
    balance_before_fields = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slot_lock = asyncio.Lock()
        self._account_tasks: defaultdict[str, list[str]] = defaultdict(list)
        """Task ids per access key, oldest first (the tasks themselves live in the store)."""
        self._external_ids: dict[tuple[str, str], str] = {}
        """(access key, external_task_id) -> task id."""

    def provider_routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [Route("/__fake/concurrency", self._concurrency, methods=["GET"])]
        for endpoint in ENDPOINTS:
            routes += [
                Route(
                    f"/v1/videos/{endpoint}", self.endpoint("submit", partial(self._submit, endpoint)), methods=["POST"]
                ),
                Route(f"/v1/videos/{endpoint}", self.endpoint("poll", partial(self._list, endpoint)), methods=["GET"]),
                Route(
                    f"/v1/videos/{endpoint}/{{task_id}}",
                    self.endpoint("poll", partial(self._poll, endpoint)),
                    methods=["GET"],
                ),
            ]
        return [*routes, Route("/account/costs", self.endpoint(None, self._costs), methods=["GET"])]

    # -- envelope ----------------------------------------------------------------

    def render_error(self, error: ApiError) -> Response:
        return JSONResponse(_envelope(_code(error), error.message), error.status, headers=error.headers)

    def render_ok_error(self, error: ApiError) -> Response:
        """HTTP 200 whose envelope ``code`` is the error's (Kling's rule: the code decides, not the status)."""
        return JSONResponse(_envelope(_code(error), error.message), headers=error.headers)

    @staticmethod
    def ok(data: Any) -> JSONResponse:
        return JSONResponse({**_envelope(0, "SUCCEED"), "data": data})

    # -- auth --------------------------------------------------------------------

    def identify(self, request: Request) -> Caller:
        """The access key of a valid JWT (docs/providers.md#kling-sign-in); raises 401 with the code of what is wrong."""
        raw = (request.headers.get("authorization") or "").strip()
        if not raw:
            raise self.error("missing_key")
        scheme, _, token = raw.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise self.error("bad_token")
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.InvalidTokenError:
            raise self.error("bad_token") from None
        if not isinstance(issuer, str) or not issuer:
            raise self.error("bad_token")
        caller = identify(f"Bearer {issuer}", self.config.valid_keys)
        if caller.status is KeyStatus.UNKNOWN:
            raise self.error("unknown_key")
        try:
            jwt.decode(token, self.config.kling_secret_key, algorithms=["HS256"], options={"require": ["iss", "exp"]})
        except jwt.ImmatureSignatureError:
            raise self.error("token_not_yet_valid") from None
        except jwt.ExpiredSignatureError:
            raise self.error("token_expired") from None
        except jwt.InvalidSignatureError:
            raise self.error("unknown_key") from None
        except jwt.InvalidTokenError:
            raise self.error("bad_token") from None
        return caller

    # -- tasks -------------------------------------------------------------------

    async def _submit(self, endpoint: str, request: Request, body: bytes) -> Response:
        """Auth, rate, fields, content, balance, then the account's concurrency (1303)."""
        caller, submission, directives = self.accept(request, body, Model("kling-v3", "std", ENDPOINTS[endpoint]))
        payload = parse_object(body) or {}
        external_id = payload.get("external_task_id")
        if external_id and self._task_by_external_id(caller.key, external_id) is not None:
            raise ApiError(400, "1201", "external_task_id already exists")
        async with self._slot_lock:  # no other submit may take the last slot between the count and the task
            limit = self.config.kling_max_running
            if limit is not None and self._running(caller.key, self.emulator.now()) >= limit:
                raise self.error("concurrency")
            task_id = str(secrets.randbelow(9 * 10**17) + 10**17)
            task = await self.emulator.create_task(self.name, task_id, caller.key, submission, directives)
            task.extras.update(endpoint=endpoint, tier=submission.model.tier, external_task_id=external_id or None)
            self.emulator.store.save(task)
            self._account_tasks[caller.key].append(task.id)
        if external_id:
            self._external_ids[(caller.key, external_id)] = task.id
        if url := payload.get("callback_url"):
            stages = ("created", "started", "ended")  # every status change (docs/providers.md#kling-webhooks)
            self.emulator.send_webhook(task, url, partial(self.task_data, request), stages=stages)
        return self.ok(self.task_data(request, task, task.created_at))

    async def _poll(self, endpoint: str, request: Request, _body: bytes) -> Response:
        caller = self.admit(request, submission=False)
        wanted = request.path_params["task_id"]
        if self.emulator.find_task(self.name, wanted, caller.key) is None:
            wanted = self._external_ids.get((caller.key, wanted), wanted)
        task = self.find(wanted, caller)
        if task.extras.get("endpoint") != endpoint:
            raise self.error("task_not_found")
        return self.ok(self.task_data(request, task, self.emulator.now()))

    async def _list(self, endpoint: str, request: Request, _body: bytes) -> Response:
        """``pageNum`` [1, 1000] (default 1), ``pageSize`` [1, 500] (default 30), newest first
        (docs/providers.md#kling-in-the-emulator)."""
        caller = self.admit(request, submission=False)
        number = _query_int(request, "pageNum", 1, PAGE_NUMBERS)
        size = _query_int(request, "pageSize", 30, PAGE_SIZES)
        now = self.emulator.now()
        tasks = [task for task in reversed(self._tasks(caller.key)) if task.extras.get("endpoint") == endpoint]
        page = tasks[(number - 1) * size : number * size]
        return self.ok([self.task_data(request, task, now) for task in page])

    def task_data(self, request: Request, task: Task, now: float) -> dict[str, Any]:
        """The task object at ``now`` (docs/providers.md#kling-task-result): the ``data`` of a query, the body of
        a callback (docs/providers.md#kling-webhooks)."""
        phase = task.phase(now)
        changed = {Phase.QUEUED: task.created_at, Phase.RUNNING: task.starts_at}.get(phase, task.finishes_at)
        external_id = task.extras.get("external_task_id")
        data: dict[str, Any] = {
            "task_id": task.id,
            "task_status": STATUSES[phase],
            "task_status_msg": FAILURE_MESSAGES.get(task.final_outcome, "") if phase is Phase.FAILED else "",
            "task_info": {"external_task_id": external_id} if external_id else {},
            "created_at": _millis(task.created_at),
            "updated_at": _millis(changed),
        }
        if phase is Phase.SUCCEEDED:
            url = self.result_url(request, task, now)
            data["task_result"] = {"videos": [{"id": task.id, "url": url, "duration": f"{task.duration:.1f}"}]}
            data["final_unit_deduction"] = f"{UNITS_PER_SECOND[task.extras.get('tier', 'std')] * task.duration:g}"
        elif phase is Phase.FAILED:
            data["final_unit_deduction"] = "0"
        return data

    # -- accounts ------------------------------------------------------------------

    async def _costs(self, request: Request, _body: bytes) -> Response:
        """``start_time`` and ``end_time`` (ms) are required; one prepaid video pack
        (docs/providers.md#kling-key-check)."""
        caller = self.admit(request, submission=False)
        for name in ("start_time", "end_time"):
            if not request.query_params.get(name, "").isdigit():
                raise ApiError(400, "1201", f"{name} is required (unix milliseconds)")
        remaining = 0.0 if caller.broke else 1000.0
        now = _millis(self.emulator.now())
        pack = {
            "resource_pack_name": "Video Generation",
            "resource_pack_id": "emulator-pack",
            "resource_pack_type": "decreasing_total",
            "total_quantity": 1000.0,
            "remaining_quantity": remaining,
            "purchase_time": now,
            "effective_time": now,
            "invalid_time": now + 365 * 86_400_000,
            "status": "runOut" if caller.broke else "online",
        }
        return self.ok({"code": 0, "msg": "success", "resource_pack_subscribe_infos": [pack]})

    def _tasks(self, key: str) -> list[Task]:
        """The key's tasks still in the store, oldest first."""
        found = (self.emulator.find_task(self.name, task_id, key) for task_id in self._account_tasks[key])
        return [task for task in found if task is not None]

    def _task_by_external_id(self, key: str, external_id: str) -> Task | None:
        task_id = self._external_ids.get((key, external_id))
        return self.emulator.find_task(self.name, task_id, key) if task_id else None

    def _running(self, key: str, now: float) -> int:
        """Tasks holding a slot: from ``submitted`` until they end, failures included
        (docs/providers.md#kling-held-submits)."""
        return sum(1 for task in self._tasks(key) if task.created_at <= now < task.finishes_at)

    def peak(self, key: str) -> int:
        """The most tasks of ``key`` that held a slot at the same instant."""
        events = sorted(
            [(task.created_at, 1) for task in self._tasks(key)] + [(task.finishes_at, -1) for task in self._tasks(key)]
        )  # at one instant an end (-1) sorts before a start: the slot is free again
        most = held = 0
        for _instant, change in events:
            held += change
            most = max(most, held)
        return most

    async def _concurrency(self, _request: Request) -> Response:
        now = self.emulator.now()
        keys = [key for key in self._account_tasks if self._tasks(key)]
        return JSONResponse(
            {
                "limit": self.config.kling_max_running,
                "running": {key: self._running(key, now) for key in keys},
                "peak": {key: self.peak(key) for key in keys},
            }
        )


def _code(error: ApiError) -> int:
    return int(error.reason) if error.reason.isdigit() else CODES_BY_STATUS.get(error.status, 5000)


def _envelope(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "request_id": str(uuid.uuid4())}


def _query_int(request: Request, name: str, default: int, bounds: tuple[int, int]) -> int:
    raw = request.query_params.get(name)
    value = int(raw) if raw is not None and raw.isdigit() else (default if raw is None else -1)
    if not bounds[0] <= value <= bounds[1]:
        raise ApiError(400, "1201", f"{name} must be between {bounds[0]} and {bounds[1]}")
    return value


def _millis(instant: float) -> int:
    return int(instant * 1000)
