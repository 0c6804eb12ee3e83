"""Kling's own developer API (``kling``): ``POST /v1/videos/{text2video,image2video}``.

What it sends and reads (every rule with its public source in ``docs/providers.md#kling-official-api``):

- Auth: a fresh HS256 JWT on every request (``iss`` = access key, ``exp`` = now + 30 min,
  ``nbf`` = now - 5 s), signed with the secret key by PyJWT and sent as ``Bearer``; never
  logged, never kept. Source: Kling's "General Info" page
  (https://app.klingai.com/global/dev/document-api/apiReference/commonInfo) and the Vercel AI
  SDK's ``klingai-auth.ts`` (https://github.com/vercel/ai/tree/main/packages/klingai).
- Body: ``model_name: "kling-v3"`` (the default is ``kling-v1``), ``mode`` ``std|pro|4k``,
  ``duration`` and ``sound`` as strings (``"5"``, ``"on"``); multi-shot as ``multi_shot``,
  ``shot_type`` and an indexed ``multi_prompt``; images inline as raw base64 (no ``data:``
  prefix) or as URLs, ``image_tail`` for the end frame; ``element_list`` on image-to-video;
  ``callback_url`` for the webhook.
- Answers: the envelope ``{code, message, request_id, data}``. Its ``code`` decides the error,
  never the HTTP status (a 429 may mean "out of money" or "slow down"): :data:`BUSINESS_CODES`.
- Tasks: ``GET`` the creation path plus the task id; ``submitted`` → ``processing`` →
  ``succeed`` | ``failed``; the clip at ``data.task_result.videos[0].url`` (kept 30 days).
- No upload endpoint, no cancel, and the callback is unsigned: it is a nudge to poll, nothing more.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx2

from kling_video_mcp.errors import (
    AuthError,
    ConcurrencyLimited,
    ContentPolicy,
    InsufficientBalance,
    InvalidRequest,
    KlingError,
    NotFound,
    ProviderError,
    RateLimited,
    UnknownOutcome,
)
from kling_video_mcp.models import GenerationRequest, ImageSource, Kind, Mode, ProviderUpdate, TaskStatus, utcnow
from kling_video_mcp.providers.base import (
    KLING_SHOT_SECONDS, EndpointRules, KeyCheck, PromptRule, Provider, RulesTable, Submitted, Webhook, market_prices,
)  # fmt: skip
from kling_video_mcp.providers.http import classify_error, json_body, retry_after_seconds
from kling_video_mcp.providers.novita_family import content_refusal

if TYPE_CHECKING:
    from kling_video_mcp.config import Settings

DEFAULT_BASE_URL = "https://api-singapore.klingai.com"
"""The global host; ``https://api-beijing.klingai.com`` serves mainland China (Kling's General Info page)."""
MODEL_NAME = "kling-v3"
"""Kling v3.0 on the direct API. ``kling-v3-0`` is refused (code 1201) and an omitted name means ``kling-v1``."""
KEY_VARIABLES = ("KLING_ACCESS_KEY", "KLING_SECRET_KEY")
DOCS = "https://app.klingai.com/global/dev/document-api/apiReference"
CALLBACK_DOCS = f"{DOCS}/callbackProtocol"
RESULT_KEPT = timedelta(days=30)
"""Kling clears result files after 30 days (its task-query page)."""


OFFERS_4K = True
"""Whether Kling's own API takes ``mode: "4k"`` on kling-v3, the one place that decides whether
``kling`` offers 4K (the rules table has 4K rows only when it does). Uncertain: see :data:`FOUR_K_SOURCE`."""
FOUR_K_SOURCE = (
    "mode '4k' on kling-v3 is taken per a direct-API client's capability map "
    "(https://github.com/magicwang1111/Comfyui-Kling-Wrapper, py/api/capabilities.py) and resellers that forward "
    "to Kling; the Vercel SDK's enum has only std|pro. A refusal (code 1201) names the field"
)

_ONE_OF = f"Kling's text-to-video page ({DOCS}/model/textToVideo): with multi_shot, prompt is invalid"
_I2V = f"Kling's image-to-video page ({DOCS}/model/imageToVideo)"


def _rules(kind: Kind, mode: Mode) -> EndpointRules:
    source = f"{_ONE_OF}; {_I2V}: image or image_tail, raw base64 or URL, element_list" if kind == "i2v" else _ONE_OF
    return EndpointRules(
        source=f"{source}; {FOUR_K_SOURCE}" if mode == "4k" else source,
        prompt=PromptRule.ONE_OF,
        multi_prompt=True,
        shot_seconds=KLING_SHOT_SECONDS,
        inline_images=True if kind == "i2v" else None,
        shot_type_default="customize",  # always sent with multi_shot (required there)
        element_list=kind == "i2v",
    )


_MODES: tuple[Mode, ...] = ("std", "pro", "4k") if OFFERS_4K else ("std", "pro")
KLING_RULES: RulesTable = {(kind, mode): _rules(kind, mode) for kind in ("t2v", "i2v") for mode in _MODES}
"""Kling v3.0 on Kling's own API, per (kind, mode). 4K rows exist only when :data:`OFFERS_4K` says so."""

_ROUTES: dict[Kind, str] = {"t2v": "text2video", "i2v": "image2video"}
INTELLIGENT_SHOTS = "intelligence"
"""Kling's ``shot_type`` for "the model cuts the prompt into shots": our ``intelligent`` (fal's and WaveSpeed's spelling)."""

_STATUSES: dict[str, TaskStatus] = {"submitted": "queued", "processing": "running", "succeed": "succeeded", "failed": "failed"}
"""Kling's ``task_status`` values (task-query page); any other counts as still running."""


class KlingJWT(httpx2.Auth):
    """Signs every request with a fresh HS256 token: ``iss`` the access key, valid from 5 s ago
    for 30 minutes (Kling's General Info page). The token is made per request and kept nowhere."""

    LIFETIME_SECONDS = 1800
    CLOCK_SKEW_SECONDS = 5

    def __init__(self, access_key: str, secret_key: str) -> None:
        self._access_key = access_key
        self._secret_key = secret_key

    def token(self, now: float | None = None) -> str:
        """A token valid from ``now - 5 s`` to ``now + 30 min`` (``now`` in Unix seconds)."""
        import jwt  # PyJWT loads on Kling's first request: every server imports this registry entry

        issued = int(time.time() if now is None else now)
        claims = {"iss": self._access_key, "exp": issued + self.LIFETIME_SECONDS, "nbf": issued - self.CLOCK_SKEW_SECONDS}
        return jwt.encode(claims, self._secret_key, algorithm="HS256", headers={"typ": "JWT"})

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        yield request


@dataclass(frozen=True)
class BusinessCode:
    """What one of Kling's envelope codes means and what to do about it."""

    error: type[KlingError]
    meaning: str
    advice: str
    retryable: bool | None = None
    """Overrides the error class's own flag where Kling's table says otherwise."""


_CHECK_KEYS = "Check KLING_ACCESS_KEY and KLING_SECRET_KEY."
BUSINESS_CODES: dict[int, BusinessCode] = {
    1000: BusinessCode(AuthError, "authentication failed", _CHECK_KEYS),
    1001: BusinessCode(AuthError, "the Authorization header was empty", _CHECK_KEYS),
    1002: BusinessCode(AuthError, "the Authorization header was invalid", _CHECK_KEYS),
    1003: BusinessCode(AuthError, "the token is not valid yet", "Check this machine's clock, then " + _CHECK_KEYS),
    1004: BusinessCode(AuthError, "the token has expired", "Check this machine's clock, then " + _CHECK_KEYS),
    1100: BusinessCode(AuthError, "the account has a problem", "Look at the account in Kling's developer console."),
    1101: BusinessCode(InsufficientBalance, "the account is in arrears", "Top up the account, then try again."),
    1102: BusinessCode(
        InsufficientBalance, "the resource pack is used up or expired", "Top up: buy a video resource pack, then try again."
    ),
    1103: BusinessCode(AuthError, "the key may not use this endpoint or model", "Enable Kling v3.0 for the account, or " + _CHECK_KEYS),
    1200: BusinessCode(InvalidRequest, "the request's parameters are invalid", "Nothing was charged."),
    1201: BusinessCode(InvalidRequest, "a parameter is invalid", "Nothing was charged."),
    1202: BusinessCode(NotFound, "the method is invalid", "This server's route may be outdated."),
    1203: BusinessCode(NotFound, "the task, model or route does not exist", "Check the task id."),
    1300: BusinessCode(ContentPolicy, "a platform policy was triggered", "Rephrase the prompt or use another image."),
    1301: BusinessCode(ContentPolicy, "the content-safety policy was triggered", "Rephrase the prompt or use another image."),
    1302: BusinessCode(RateLimited, "requests came too fast", "Wait a little and try again."),
    1303: BusinessCode(
        ConcurrencyLimited, "the account runs as many tasks at once as its resource pack allows",
        "The render is sent once a running one ends.",
    ),
    1304: BusinessCode(AuthError, "this machine's IP address is not on the key's whitelist", "Allow it in Kling's developer console."),
    5000: BusinessCode(ProviderError, "it had an internal error", "Try again later.", retryable=True),
    5001: BusinessCode(ProviderError, "the service is down for maintenance", "Try again later.", retryable=True),
    5002: BusinessCode(ProviderError, "it timed out inside (a backlog)", "Try again later.", retryable=True),
}  # fmt: skip
"""Every business code of Kling's error table (General Info page, "Error Code"), by what it means here.

1101/1102 arrive with HTTP 429 yet are not retryable; 1302/1303 are rate limits and are."""


def business_error(response: httpx2.Response, code: int, message: str, *, provider: str = "Kling") -> KlingError:
    """The error Kling's envelope ``code`` means, whatever the HTTP status (:data:`BUSINESS_CODES`).

    An unknown code is a :class:`ProviderError` naming it.
    """
    said = f"{provider} said: code {code}, {message or 'no message'}"
    known = BUSINESS_CODES.get(code)
    if known is None:
        return ProviderError(f"{provider} answered with an error ({said}).")
    text = f"{provider} refused the request: {known.meaning} ({said}). {known.advice}"
    if known.error is RateLimited:
        return RateLimited(text, retry_after=retry_after_seconds(response))
    return known.error(text, retryable=known.retryable)


def _envelope_error(response: httpx2.Response, provider: str) -> KlingError | None:
    body = json_body(response)
    code = body.get("code")
    if isinstance(code, bool) or not isinstance(code, int) or code == 0:
        return None
    return business_error(response, code, str(body.get("message") or ""), provider=provider)


def raw_base64(image: ImageSource) -> str:
    """The image's bytes as Kling takes them inline: plain base64, without a ``data:`` prefix."""
    assert image.data is not None
    return base64.b64encode(image.data).decode("ascii")


def element_ids(request: GenerationRequest) -> list[dict[str, int]]:
    """``element_list`` as Kling takes it, ``[{"element_id": <long>}]``.

    Raises:
        InvalidRequest: an id is not a whole number (Kling's element ids are longs).
    """
    items = []
    for index, element in enumerate(request.element_list or []):
        if not element.isdigit():
            raise InvalidRequest(
                f"element_list[{index}]: Kling's element ids are whole numbers (from its Create Element call); "
                f"{element!r} is not one. Nothing was sent."
            )
        items.append({"element_id": int(element)})
    return items


def request_body(request: GenerationRequest, images: dict[str, ImageSource]) -> dict[str, Any]:
    """The JSON body of a Kling v3.0 submit, in Kling's own field names and types."""
    body: dict[str, Any] = {
        "model_name": MODEL_NAME,
        "mode": request.mode,
        "duration": str(request.duration),
        "sound": "on" if request.sound else "off",
    }
    for field in ("prompt", "negative_prompt", "cfg_scale"):
        if (value := getattr(request, field)) is not None:
            body[field] = value
    if request.kind == "t2v" and request.aspect_ratio:
        body["aspect_ratio"] = request.aspect_ratio  # image-to-video takes the image's own ratio
    for field, wire in (("image", "image"), ("end_image", "image_tail")):
        if (image := images.get(field)) is not None:
            body[wire] = image.url or raw_base64(image)
    if request.multi_prompt:
        body.pop("prompt", None)  # invalid beside multi_shot (the rules refuse both together)
        body["multi_shot"] = True
        body["shot_type"] = "customize"
        body["multi_prompt"] = [
            {"index": index, "prompt": shot.prompt, "duration": str(shot.duration)}
            for index, shot in enumerate(request.multi_prompt, start=1)
        ]
    elif request.shot_type == "intelligent":
        body["multi_shot"] = True  # the model cuts the prompt into shots itself
        body["shot_type"] = INTELLIGENT_SHOTS
    if request.element_list:
        body["element_list"] = element_ids(request)
    return body


def task_update(data: dict[str, Any]) -> ProviderUpdate:
    """A task object (a poll's ``data``, or a callback's whole body) in our terms."""
    status = _STATUSES.get(str(data.get("task_status")), "running")
    videos = (data.get("task_result") or {}).get("videos") or []
    first = videos[0] if videos and isinstance(videos[0], dict) else {}
    url = first.get("url") if isinstance(first.get("url"), str) else None
    reason = str(data.get("task_status_msg") or "")
    failed = status == "failed"
    refused = failed and (content_refusal(reason) or "risk" in reason.lower())
    if status == "succeeded" and not url:
        raise ProviderError(f"Kling reported success without a video URL: {first!r:.200}.")
    return ProviderUpdate(
        status=status,
        progress_percent=100.0 if status == "succeeded" else None,
        video_url=url,
        url_expires_at=utcnow() + RESULT_KEPT if url else None,
        error=(reason or "Kling reported the task as failed without a reason.") if failed else None,
        error_code=("content_policy" if refused else "provider_error") if failed else None,
    )


class Kling(Provider):
    """Kling v3.0 through Kling's own API: ``KLING_ACCESS_KEY`` and ``KLING_SECRET_KEY`` sign a JWT."""

    name = "kling"
    label = "Kling"
    key_variables = KEY_VARIABLES
    base_url_variable = "KLING_BASE_URL"
    default_base_url = DEFAULT_BASE_URL
    rules_table = KLING_RULES
    prices = market_prices()  # Kling bills resource-pack units and publishes no USD price per second
    webhook = Webhook("body", ("callback_url",), f"Kling's callback protocol ({CALLBACK_DOCS}): unsigned, a nudge to poll")
    min_poll_interval = 5.0
    """Polls do not count against the concurrency limit and have no QPS limit (Rate Limits page); 5 s is gentle."""

    def __init__(self, client: httpx2.AsyncClient, settings: Settings) -> None:
        super().__init__(client, settings)
        self._routes: dict[str, str] = {}
        """Each task's creation path, from its submit (journaled as its ``poll`` follow URL, so it
        holds after a restart too): Kling polls a task under the path it was made on."""

    def authorization(self, keys: tuple[str, ...]) -> httpx2.Auth:
        access_key, secret_key = keys
        return KlingJWT(access_key, secret_key)

    def classify_error(self, response: httpx2.Response) -> KlingError:
        """By the envelope ``code`` when there is one; by the HTTP status only when there is none."""
        if (error := _envelope_error(response, self.label)) is not None:
            return error
        body = json_body(response)
        return classify_error(response, reason="", message=str(body.get("message") or ""), provider=self.label, key_env=self.key_hint)

    def body_error(self, response: httpx2.Response) -> KlingError | None:
        """A 200 whose envelope ``code`` is not 0 is that error (Kling: "check code, not message")."""
        return _envelope_error(response, self.label)

    @staticmethod
    def endpoint(kind: Kind, mode: Mode) -> str:
        """The creation path, which is also the poll path's prefix (the Vercel SDK polls ``{path}/{id}``)."""
        return f"v1/videos/{_ROUTES[kind]}"

    async def submit(
        self, request: GenerationRequest, images: dict[str, ImageSource], *, webhook_url: str | None = None
    ) -> Submitted:
        """``POST /v1/videos/{text2video|image2video}``; ``webhook_url`` goes as ``callback_url``.

        Raises:
            ConcurrencyLimited: code 1303, nothing was created; send it again once a running task ends.
            UnknownOutcome: an internal error (5000-5002) or no task id: a task may exist.
            KlingError: any other refusal, by :data:`BUSINESS_CODES`.
        """
        body = request_body(request, images)
        params = self.webhook_params(webhook_url, body)  # callback_url, into the body
        path = self.endpoint(request.kind, request.mode)
        try:
            response = await self._http.submit(f"/{path}", json=body, params=params)
        except ProviderError as exc:
            if exc.retryable:
                raise UnknownOutcome(f"Kling answered the submit with an internal error ({exc.message}); it may still have created a task.") from exc
            raise
        task_id = (json_body(response).get("data") or {}).get("task_id")
        if not task_id:
            raise UnknownOutcome("Kling accepted the submit but its answer carried no task_id.")
        self._routes[str(task_id)] = path
        return Submitted(provider_task_id=str(task_id), follow_urls={"poll": path})

    def follow(self, provider_task_id: str, urls: Mapping[str, str]) -> None:
        """Poll ``provider_task_id`` under the creation path its submit journaled (relative to the
        base URL, so a changed ``KLING_BASE_URL`` still holds); anything else journaled is ignored."""
        if urls.get("poll") in {self.endpoint(kind, "std") for kind in _ROUTES}:
            self._routes[provider_task_id] = urls["poll"]

    async def poll(self, provider_task_id: str) -> ProviderUpdate:
        """``GET {creation path}/{task_id}``. A task adopted by id (no submit of ours to say its path)
        is looked for under text-to-video, then image-to-video, and remembered."""
        task = quote(provider_task_id, safe="")
        path = self._routes.get(provider_task_id, self.endpoint("t2v", "std"))
        try:
            response = await self._http.request("GET", f"/{path}/{task}")
        except NotFound:
            if provider_task_id in self._routes:
                raise
            path = self.endpoint("i2v", "std")
            response = await self._http.request("GET", f"/{path}/{task}")
        self._routes[provider_task_id] = path
        data = json_body(response).get("data")
        if not isinstance(data, dict):
            raise ProviderError("Kling answered the poll without a task; asking again later.", retryable=True)
        return task_update(data)

    async def check_key(self) -> KeyCheck:
        """``GET /account/costs`` (free; Kling's "Account Information" page): the key works if it
        answers, and it says how many units the live resource packs have left."""
        now_ms = int(time.time() * 1000)
        year_ms = 366 * 24 * 3600 * 1000
        response = await self._http.request("GET", "/account/costs", params={"start_time": now_ms - year_ms, "end_time": now_ms})
        packs = (json_body(response).get("data") or {}).get("resource_pack_subscribe_infos") or []
        live = [pack for pack in packs if isinstance(pack, dict) and pack.get("status") == "online"]
        left = sum(float(pack.get("remaining_quantity") or 0) for pack in live)
        return KeyCheck(f"{len(live)} live resource pack(s), {left:g} units left" if packs else "no resource packs")
