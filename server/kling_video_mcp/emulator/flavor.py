"""What every emulated provider has in common (docs/providers.md#the-emulator).

A :class:`Flavor` turns the shared :class:`~.state.Emulator` into one
provider's HTTP surface. This base class owns the parts that do not vary:
request recording and fault handling around every provider endpoint, the
submission pipeline (auth, rate, body, fields, content, billing), result-URL
minting, the media route and the per-flavor control routes. Subclasses supply
routes, the error catalogue and the envelope.
"""

from __future__ import annotations

import json
import math
import mimetypes
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, ClassVar

import anyio
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from . import downloads
from .access import Caller, KeyStatus, identify
from .config import EmulatorConfig
from .errors import ApiError
from .faults import BODY_ONLY_KINDS, ECHO_KINDS, REWRITE_KINDS, Fault, escape_echo, rewrite_answer
from .rules import FlavorRules, HostRules, ImageInput, Model, Submission, read_fields, validate
from .state import Emulator
from .tasks import Phase, Task
from .tokens import Directives, read_directives

Handler = Callable[[Request, bytes], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
HANG_CHECK_SECONDS = 0.1
WAIT_STEP_SECONDS = 0.05

ErrorCatalogue = Mapping[str, tuple[int, str, str]]
"""Error kind -> (HTTP status, Novita reason, message). Kinds: missing_key, unknown_key,
forbidden_key, rate_limited, bad_body, illegal_prompt, illegal_image, balance, create_failed,
result_failed, unavailable, task_not_found, api_not_found."""

_FAULT_KINDS: dict[tuple[int, str | None], str] = {
    (429, None): "rate_limited",
    (500, "submit"): "create_failed",
    (500, "poll"): "result_failed",
    (500, "result"): "result_failed",
    (503, None): "unavailable",
}
"""Which catalogue entry words a ``status`` fault (any target when the target is ``None``)."""


class Flavor(ABC):
    """One provider's routes over the shared emulator state."""

    name: ClassVar[str]
    rules: ClassVar[FlavorRules | HostRules]
    errors: ClassVar[ErrorCatalogue]
    balance_before_fields: ClassVar[bool]
    """WaveSpeed checks balance right after the rate limit, Novita after content (docs/providers.md#emulator-validation)."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    @property
    def config(self) -> EmulatorConfig:
        """The live settings (tests may change them between requests)."""
        return self.emulator.config

    # -- what subclasses provide ---------------------------------------------

    @abstractmethod
    def provider_routes(self) -> list[BaseRoute]:
        """The real provider's routes (relative to the flavor mount)."""

    @abstractmethod
    def render_error(self, error: ApiError) -> Response:
        """``error`` in this provider's envelope."""

    @abstractmethod
    def render_ok_error(self, error: ApiError) -> Response:
        """``error`` carried by an HTTP 200, as this provider sends some failures (docs/providers.md#http-200-errors)."""

    def error(self, kind: str) -> ApiError:
        """The catalogue error of ``kind``; subclasses override for configurable variants."""
        status, reason, message = self.errors[kind]
        return ApiError(status, reason, message)

    # -- routing ---------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """Control routes, media, provider routes, then a recorded 404 for everything else."""
        return [
            Route("/__fake/requests", self._requests, methods=["GET"]),
            Route("/__fake/tasks/{task_id}/complete", self._complete, methods=["POST"]),
            Route("/__fake/media/{name}", self.endpoint("media", self._media), methods=["GET", "HEAD"]),
            *self.provider_routes(),
            Route("/{path:path}", self.endpoint(None, self._unknown_route), methods=ALL_METHODS),
        ]

    def endpoint(self, target: str | None, handler: Handler) -> Endpoint:
        """Wrap ``handler``: record the request, apply a fault armed for ``target``, render ``ApiError``.

        ``status`` and ``ok_error`` faults answer before any work; ``created_then_status`` replaces
        a successful answer; ``hang`` delays the finished answer; media-only kinds
        are left on ``request.state.fault`` for the media handler.
        """

        async def run(request: Request) -> Response:
            body = await request.body()
            self.emulator.journal.record(self.name, request, body)
            fault = self._take_fault(target, request) if target else None
            if fault is not None and (fault.kind == "status" or fault.kind in ECHO_KINDS):
                return self._fault_response(fault, request)
            if fault is not None and fault.kind == "ok_error":
                return self.render_ok_error(self.fault_error(fault))
            request.state.fault = fault
            try:
                response = await handler(request, body)
            except ApiError as error:
                response = self.render_ok_error(error) if error.in_ok else self.render_error(error)
            succeeded = 200 <= response.status_code < 300  # 201 (Replicate), 202 (fal's status) too
            if fault is not None and fault.kind == "created_then_status" and succeeded:
                response = self._fault_response(fault, request)
            elif fault is not None and fault.kind == "hang":
                await _hang(request, fault.seconds)
            elif fault is not None and fault.kind in REWRITE_KINDS and succeeded:
                answer = json.loads(bytes(response.body))
                rewrite_answer(answer, fault.kind, fault.value or "", self.name)
                response = JSONResponse(answer, response.status_code, headers=_kept_headers(response))
            return response

        return run

    def _take_fault(self, target: str, request: Request) -> Fault | None:
        # A HEAD has no body to cut off, so it must not use up a truncate fault meant for the GET.
        head = request.method == "HEAD"
        return self.emulator.faults.take(self.name, target, lambda fault: not (head and fault.kind in BODY_ONLY_KINDS))

    def _fault_response(self, fault: Fault, request: Request) -> Response:
        message, echoed = fault.message, request.headers.get("authorization", "")
        if fault.kind in ECHO_KINDS:
            message = f"{fault.message or 'Invalid key'}: {echoed}"
        if fault.target == "media":
            return downloads.s3_error(fault.status, fault.reason, message, fault.retry_headers())
        response = self.render_error(self.fault_error(fault, message))
        if fault.kind == "echo_key_escaped" and echoed:
            response.body = escape_echo(bytes(response.body), echoed)
            response.headers["content-length"] = str(len(response.body))
        return response

    def fault_error(self, fault: Fault, wording: str | None = None) -> ApiError:
        """A ``status`` fault's answer: ``wording``, else its own, else the catalogue's, else
        HTTP's name for the code."""
        kind = _FAULT_KINDS.get((fault.status, None)) or _FAULT_KINDS.get((fault.status, fault.target))
        if kind is not None:
            _status, reason, message = self.errors[kind]
        else:
            reason, message = HTTPStatus(fault.status).name, HTTPStatus(fault.status).phrase
        return ApiError(fault.status, fault.reason or reason, wording or fault.message or message, fault.retry_headers())

    # -- the submission pipeline ------------------------------------------------

    def identify(self, request: Request) -> Caller:
        """Who is calling: ``Authorization: Bearer <key>`` by default; hosts with another scheme
        (fal's ``Key``, Kling's JWT) override this and may raise their own ``ApiError``."""
        return identify(request.headers.get("authorization"), self.config.valid_keys)

    def admit(self, request: Request, *, submission: bool) -> Caller:
        """Validation steps 1-2 (docs/providers.md#emulator-validation): a usable key, and under its per-minute limit when submitting."""
        caller = self.identify(request)
        refusal = {
            KeyStatus.MISSING: "missing_key",
            KeyStatus.UNKNOWN: "unknown_key",
            KeyStatus.FORBIDDEN: "forbidden_key",
            KeyStatus.RATE_LIMITED: "rate_limited",
        }.get(caller.status)
        if refusal is not None:
            raise self.error(refusal)
        limiter, now = self.emulator.limiter, self.emulator.now()
        if submission and not limiter.allow(self.name, caller.key, self.config.rpm_limit, now):
            raise self.error("rate_limited")
        return caller

    def accept(self, request: Request, body: bytes, model: Model) -> tuple[Caller, Submission, Directives]:
        """Run a submission through every check, in the flavor's order; raises ``ApiError`` on refusal."""
        caller = self.admit(request, submission=True)
        if self.balance_before_fields and caller.broke:
            raise self.error("balance")
        submission, directives = self.inspect(request, body, model)
        self.charge(caller, directives)
        return caller, submission, directives

    def inspect(self, request: Request, body: bytes, model: Model) -> tuple[Submission, Directives]:
        """Steps 3-5: a JSON object, valid fields, no refused content."""
        payload = parse_object(body)
        if payload is None:
            raise self.error("bad_body")
        submission = self.read_submission(request, payload, model)
        return submission, self.screen(read_directives(submission.texts()))

    def screen(self, directives: Directives) -> Directives:
        """Content the provider refuses at the submit (``[[reject:...]]``) is refused here; hosts
        that check content while rendering override this to fail the task instead."""
        if directives.reject is not None:
            raise self.error(directives.reject)
        return directives

    def read_submission(self, request: Request, payload: dict[str, Any], model: Model) -> Submission:
        """The fields of a submit body under this flavor's rules (hosts with their own dialect override)."""
        if isinstance(self.rules, HostRules):
            return read_fields(self.rules, model, payload, self.image_resolver(request), self.config)[0]
        return validate(self.rules, model, payload, self.image_resolver(request), self.config)

    def image_resolver(self, request: Request) -> Callable[[str], ImageInput]:
        """What the provider would find at an image URL sent to this request's host."""
        own_host = request.url.netloc
        return lambda url: self.emulator.resolve_image_url(url, own_host)

    def charge(self, caller: Caller, directives: Directives) -> None:
        """The last gates before a task exists: balance, then the create faults of the prompt tokens."""
        if caller.broke:
            raise self.error("balance")
        if directives.fault_create:
            raise self.error("create_failed")
        if directives.ok_error == "submit":
            raise self.carried("balance")

    def carried(self, kind: str) -> ApiError:
        """The catalogue error of ``kind``, to be sent inside an HTTP 200 (docs/providers.md#http-200-errors)."""
        error = self.error(kind)
        return ApiError(error.status, error.reason, error.message, error.headers, in_ok=True)

    def find(self, task_id: str, caller: Caller) -> Task:
        """The caller's own task to report on, or the catalogue's not-found error; a task made
        with ``[[ok_error:poll]]`` is reported as an error inside an HTTP 200 instead."""
        task = self.emulator.find_task(self.name, task_id, caller.key)
        if task is None:
            raise self.error("task_not_found")
        if task.ok_error_polls:
            raise self.carried("result_failed")
        return task

    # -- results ---------------------------------------------------------------

    @staticmethod
    def flavor_base(request: Request) -> str:
        """Public URL of this flavor's mount, e.g. ``http://127.0.0.1:PORT/novita``."""
        return f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}"

    def result_url(self, request: Request, task: Task, now: float) -> str:
        """A fresh presigned-style URL for the clip, valid ``task.url_ttl`` seconds from now (docs/providers.md#emulator-result-media)."""
        expires = math.ceil(now) + task.url_ttl
        return f"{self.flavor_base(request)}/__fake/media/{task.id}.mp4?expires={expires}"

    async def _media(self, request: Request, _body: bytes) -> Response:
        """Uploads (``up_*``) and result clips, with presigned-URL expiry for clips."""
        fault: Fault | None = request.state.fault
        if fault is not None and fault.kind == "expired":
            return downloads.expired()
        if fault is not None and fault.kind == "html":
            return downloads.bad_gateway_page()
        if fault is not None and fault.kind == "redirect":
            return downloads.redirect(fault.value or "")
        name = request.path_params["name"]
        upload = self.emulator.store.upload_path(name)
        if upload is not None:
            return downloads.serve_file(upload, mimetypes.guess_type(name)[0] or "application/octet-stream", fault)
        task_id, dot, extension = name.rpartition(".")
        task = self.emulator.find_task(self.name, task_id) if dot and extension == "mp4" else None
        now = self.emulator.now()
        if task is None or task.phase(now) is not Phase.SUCCEEDED:
            return downloads.missing()
        refusal = self.clip_refusal(request, task, now)
        if refusal is not None:
            return refusal
        return downloads.serve_file(await self.emulator.clip(task), "video/mp4", fault)

    def clip_refusal(self, request: Request, task: Task, now: float) -> Response | None:
        """Why a finished task's clip URL no longer works, if it does not: by default a presigned
        URL whose ``expires`` has passed (hosts that delete outputs on a schedule override this)."""
        try:
            expires = float(request.query_params["expires"])
        except (KeyError, ValueError):
            return downloads.s3_error(403, "AccessDenied", "Query-string authentication requires the expires parameter")
        if now >= expires:
            return downloads.expired()
        return None

    async def wait_for_end(self, task: Task, seconds: float) -> float:
        """Hold on until ``task`` ends or ``seconds`` (real) pass; returns the time it stopped waiting."""
        deadline = self.emulator.now() + seconds
        while (now := self.emulator.now()) < deadline and task.phase(now) in (Phase.QUEUED, Phase.RUNNING):
            await anyio.sleep(min(WAIT_STEP_SECONDS, deadline - now))
        return self.emulator.now()

    # -- control routes (not recorded: they are not part of any provider) ----------

    async def _requests(self, _request: Request) -> Response:
        return JSONResponse(self.emulator.journal.entries(self.name))

    async def _complete(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        try:
            task = self.emulator.complete(self.name, task_id)
        except KeyError:
            return JSONResponse({"error": f"no {self.name} task {task_id}"}, status_code=404)
        return JSONResponse({"task_id": task.id, "phase": task.phase(self.emulator.now()).value})

    async def _unknown_route(self, _request: Request, _body: bytes) -> Response:
        raise self.error("api_not_found")


async def _hang(request: Request, seconds: float) -> None:
    """Wait ``seconds`` before answering, but stop early once the client has given up (nobody is listening)."""
    deadline = anyio.current_time() + seconds
    while (left := deadline - anyio.current_time()) > 0:
        if await request.is_disconnected():
            return
        await anyio.sleep(min(HANG_CHECK_SECONDS, left))


def _kept_headers(response: Response) -> dict[str, str]:
    """Headers of ``response`` worth keeping on a rewritten copy (not its length or type)."""
    return {
        name: value for name, value in response.headers.items() if name not in ("content-length", "content-type")
    }


async def read_form(request: Request) -> FormData | None:
    """The multipart (or url-encoded) form of ``request``, or ``None`` when its body is not one."""
    try:
        return await request.form()
    except HTTPException:
        return None


def parse_object(body: bytes) -> dict[str, Any] | None:
    """The JSON object in ``body``, or ``None`` when it is not one (docs/providers.md#emulator-validation, step 3)."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
