"""fal.ai's queue (``fal``): ``fal-ai/kling-video/v3/{standard|pro|4k}/{text-to-video|image-to-video}``.

What it sends and reads (every rule with its public source in ``docs/providers.md#falai``):

- Auth: ``Authorization: Key <FAL_KEY>`` (fal-js ``config.ts``, https://github.com/fal-ai/fal-js).
- Submit: ``POST https://queue.fal.run/<endpoint>[?fal_webhook=<url>]`` with the model input as
  the whole body (https://docs.fal.ai/documentation/model-apis/inference/queue). The tier is the path;
  the input is the model's own (``duration`` a string, ``generate_audio`` always sent, since fal
  defaults it to true and the price follows it; ``start_image_url`` / ``end_image_url``).
- The answer names ``status_url``, ``response_url`` and ``cancel_url``; they are followed as
  given, never built (their path is ``fal-ai/kling-video/requests/<id>``, not the submit path),
  and only on the queue's own origin, so the key never goes anywhere else.
- Status: ``IN_QUEUE`` → ``IN_PROGRESS`` → ``COMPLETED``. A failed request *also* ends
  ``COMPLETED``: only the result (``GET response_url``) shows the failure, as a 422 whose
  ``detail`` list names the field, or ``content_policy_violation``.
- Local images go up to fal's storage first: ``POST https://rest.fal.ai/storage/upload/initiate``
  gives ``upload_url`` and ``file_url``, the bytes are PUT to the first (without the key) and the
  second is passed on (fal-js ``storage.ts``, https://github.com/fal-ai/fal-js).
- Webhook: ``fal_webhook`` query parameter. fal signs its call with ED25519 over
  ``request_id\\nuser_id\\ntimestamp\\nsha256(body)``, its public keys in a JWKS
  (https://docs.fal.ai/model-endpoints/webhooks): checked where the keys can be
  fetched, else the call is only a nudge to poll.
- Cancel: ``PUT cancel_url``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import anyio
import httpx2

from kling_video_mcp.errors import ContentPolicy, InvalidRequest, KlingError, NotFound, ProviderError, UnknownOutcome
from kling_video_mcp.models import GenerationRequest, ImageSource, Kind, Mode, ProviderUpdate
from kling_video_mcp.providers.base import (
    KLING_SHOT_SECONDS, EndpointRules, KeyCheck, Price, PromptRule, Provider, RulesTable, Submitted, Webhook,
)  # fmt: skip
from kling_video_mcp.providers.http import classify_body_error, classify_error, json_body

if TYPE_CHECKING:
    # PyJWT and cryptography load when fal's webhook keys are first read or used: every server
    # imports this registry entry, few receive fal webhooks.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from kling_video_mcp.config import Settings

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://queue.fal.run"
STORAGE_URL = "https://rest.fal.ai"
JWKS_URL = "https://rest.alpha.fal.ai/.well-known/jwks.json"
"""fal's webhook signing keys (its webhooks page). With another base URL (a proxy, the emulator)
every fal role is served under that base: storage at ``/storage/...``, keys at ``/.well-known/jwks.json``."""
APP = "fal-ai/kling-video"
MODEL_PAGE = "https://fal.ai/models/fal-ai/kling-video/v3/pro/text-to-video/api"
JWKS_CACHE_SECONDS = 24 * 3600
"""fal's webhooks page: the keys may be cached up to 24 hours."""
SIGNATURE_LEEWAY_SECONDS = 300
"""A signed call more than 5 minutes off this clock is refused (fal's webhooks page)."""
KEY_CHECK_REQUEST_ID = "00000000-0000-0000-0000-000000000000"
"""A request id fal never hands out, to check the key by a free lookup."""

_TIERS: dict[Mode, str] = {"std": "standard", "pro": "pro", "4k": "4k"}
_TASKS: dict[Kind, str] = {"t2v": "text-to-video", "i2v": "image-to-video"}
_FOLLOWED = ("status_url", "response_url", "cancel_url")
_FIELDS = {"start_image_url": "image", "end_image_url": "end_image", "generate_audio": "sound"}
"""fal's input names that differ from ours, for errors that name a field."""


def _rules(kind: Kind) -> EndpointRules:
    return EndpointRules(
        source=f"fal's Kling v3 input schema ({MODEL_PAGE}): either prompt or multi_prompt, not both",
        prompt=PromptRule.ONE_OF,
        multi_prompt=True,
        shot_seconds=KLING_SHOT_SECONDS,  # the schema allows "1"; a 3 s minimum is only rumoured: fal's 422 names it
        inline_images=False if kind == "i2v" else None,  # local images go up to fal's storage first
        shot_type_default="customize",
    )


FAL_RULES: RulesTable = {(kind, mode): _rules(kind) for kind in _TASKS for mode in _TIERS}
"""Kling v3.0 on fal, per (kind, mode): the same input schema on all three tiers (fal-js ``endpoints.ts``)."""

_PRICE_PAGE = "fal's Kling v3 model pages (https://fal.ai/models/fal-ai/kling-video/v3/{tier}/text-to-video)"
FAL_PRICES = {
    (mode, sound): Price(usd, True, _PRICE_PAGE.format(tier=_TIERS[mode]))
    for (mode, sound), usd in {
        ("std", False): 0.084, ("std", True): 0.126, ("pro", False): 0.112, ("pro", True): 0.168,
        ("4k", False): 0.42, ("4k", True): 0.42,  # 4K: one rate "regardless of audio"
    }.items()
}  # fmt: skip
"""USD per second as fal publishes them; ``generate_audio`` defaults to true there, so it is always sent."""


@dataclass(frozen=True)
class FalHosts:
    """Where each part of fal lives: the queue, the storage REST API, the webhook keys."""

    queue: str
    storage: str
    jwks: str

    @classmethod
    def for_base(cls, base_url: str) -> FalHosts:
        base = base_url.rstrip("/")
        if base == DEFAULT_BASE_URL:
            return cls(DEFAULT_BASE_URL, STORAGE_URL, JWKS_URL)
        return cls(base, base, f"{base}/.well-known/jwks.json")


class FalKey(httpx2.Auth):
    """``Authorization: Key <FAL_KEY>``, fal's own scheme."""

    def __init__(self, key: str) -> None:
        self._key = key

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers["Authorization"] = f"Key {self._key}"
        yield request


class _StillRunning(KlingError):
    """The result was asked for before the request finished (``{"detail": "Request is still in progress"}``)."""


def _detail_error(detail: list[Any], provider: str) -> KlingError:
    """fal's 422 ``detail`` list as one error naming the field (in our names where they differ)."""
    items = [item for item in detail if isinstance(item, dict)]
    if any(item.get("type") == "content_policy_violation" for item in items):
        said = "; ".join(str(item.get("msg") or "") for item in items if item.get("type") == "content_policy_violation")
        return ContentPolicy(f"{provider} refused the content ({provider} said: {said}). Rephrase the prompt or use another image.")
    problems = []
    for item in items:
        loc = [str(part) for part in item.get("loc") or [] if part != "body"]
        field = ".".join(_FIELDS.get(part, part) for part in loc) or "request"
        problems.append(f"{field}: {item.get('msg') or item.get('type') or 'invalid'}")
    return InvalidRequest(f"{provider} rejected the request ({'; '.join(problems) or 'no detail'}). Nothing was charged.")


def fal_error(response: httpx2.Response, *, provider: str, key_env: str, status: int | None = None) -> KlingError:
    """The error in any of fal's three envelopes: a 422 ``{"detail": [...]}``, ``{"detail": str,
    "error_type"}``, or ``{"error": {"message", "code"}}`` (fal's errors pages; Vercel's ``fal-error.ts``)."""
    body = json_body(response)
    detail = body.get("detail")
    if isinstance(detail, list):
        return _detail_error(detail, provider)
    error = body.get("error")
    message = str(detail or (error.get("message") if isinstance(error, dict) else error) or "")
    if "still in progress" in message.lower():
        return _StillRunning(message)
    reason = str(body.get("error_type") or response.headers.get("X-Fal-Error-Type") or "")
    if status is not None:
        return classify_body_error(response, code=status, reason=reason, message=message, provider=provider, key_env=key_env)
    return classify_error(response, reason=reason, message=message, provider=provider, key_env=key_env)


def request_input(request: GenerationRequest, image_urls: Mapping[str, str]) -> dict[str, Any]:
    """The model input for ``request`` in fal's names, images already as URLs."""
    body: dict[str, Any] = {"duration": str(request.duration), "generate_audio": request.sound}
    for field in ("prompt", "negative_prompt", "cfg_scale", "shot_type"):
        if (value := getattr(request, field)) is not None:
            body[field] = value
    if request.kind == "t2v" and request.aspect_ratio:
        body["aspect_ratio"] = request.aspect_ratio
    for field, wire in (("image", "start_image_url"), ("end_image", "end_image_url")):
        if field in image_urls:
            body[wire] = image_urls[field]
    if request.multi_prompt:
        body["multi_prompt"] = [{"prompt": shot.prompt, "duration": str(shot.duration)} for shot in request.multi_prompt]
        body.setdefault("shot_type", "customize")
    return body


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """What fal signs: the request id, user id, timestamp and the body's SHA-256 (hex), one per line."""
    return f"{request_id}\n{user_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()


def signature_valid(headers: Mapping[str, str], body: bytes, keys: list[Ed25519PublicKey], now: float | None = None) -> bool:
    """Whether fal's ``X-Fal-Webhook-*`` headers carry a fresh ED25519 signature of ``body`` by one of ``keys``."""
    from cryptography.exceptions import InvalidSignature

    lowered = {name.lower(): value for name, value in headers.items()}
    parts = [lowered.get(f"x-fal-webhook-{name}", "") for name in ("request-id", "user-id", "timestamp", "signature")]
    request_id, user_id, timestamp, signature = parts
    if not all(parts):
        return False
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
        signature_bytes = bytes.fromhex(signature)
    except ValueError:
        return False
    if age > SIGNATURE_LEEWAY_SECONDS:
        return False
    message = signed_message(request_id, user_id, timestamp, body)
    for key in keys:
        try:
            key.verify(signature_bytes, message)
        except InvalidSignature:
            continue
        return True
    return False


class Fal(Provider):
    """Kling v3.0 through fal.ai's queue, with ``FAL_KEY``."""

    name = "fal"
    label = "fal.ai"
    key_variables = ("FAL_KEY",)
    base_url_variable = "FAL_BASE_URL"
    default_base_url = DEFAULT_BASE_URL
    rules_table = FAL_RULES
    prices = FAL_PRICES
    webhook = Webhook("query", ("fal_webhook",), "https://docs.fal.ai/model-endpoints/webhooks")
    uploads_images = True

    def __init__(self, client: httpx2.AsyncClient, settings: Settings) -> None:
        super().__init__(client, settings)
        self.hosts = FalHosts.for_base(self.base_url(settings))
        self._client = client
        self._followed: dict[str, dict[str, str]] = {}
        """Each unfinished request's ``status_url``, ``response_url`` and ``cancel_url``, as its submit's
        answer gave them (here, or through :meth:`follow` from the journal)."""
        self._keys: list[Ed25519PublicKey] = []
        self._keys_until = 0.0

    def authorization(self, keys: tuple[str, ...]) -> httpx2.Auth:
        return FalKey(keys[0])

    def classify_error(self, response: httpx2.Response) -> KlingError:
        return fal_error(response, provider=self.label, key_env=self.key_hint)

    def body_error(self, response: httpx2.Response) -> KlingError | None:
        """A 2xx with an error envelope and nothing of a queue answer or a result is that error."""
        body = json_body(response)
        if body.keys() & {"request_id", "status", "video"} or not body.keys() & {"detail", "error"}:
            return None
        status = 422 if isinstance(body.get("detail"), list) else None
        return fal_error(response, provider=self.label, key_env=self.key_hint, status=status)

    @staticmethod
    def endpoint(kind: Kind, mode: Mode) -> str:
        return f"{APP}/v3/{_TIERS[mode]}/{_TASKS[kind]}"

    def _on_queue(self, url: object) -> bool:
        """Whether ``url`` is on the queue's own origin: the key is sent nowhere else."""
        queue, found = urlsplit(self.hosts.queue), urlsplit(url) if isinstance(url, str) else None
        return found is not None and (found.scheme, found.netloc) == (queue.scheme, queue.netloc)

    async def upload(self, image: ImageSource) -> str:
        """Two steps: ``initiate`` (with the key) gives ``upload_url`` and ``file_url``; the bytes go
        to ``upload_url`` by ``PUT`` without the key (a pre-signed address); ``file_url`` is returned."""
        assert image.data is not None
        content_type = image.mime_type or "application/octet-stream"
        extension = content_type.split("/")[-1]
        response = await self._http.request(
            "POST", f"{self.hosts.storage}/storage/upload/initiate",
            params={"storage_type": "fal-cdn-v3"}, json={"content_type": content_type, "file_name": f"image.{extension}"},
        )  # fmt: skip
        answer = json_body(response)
        upload_url, file_url = answer.get("upload_url"), answer.get("file_url")
        if not isinstance(upload_url, str) or not isinstance(file_url, str):
            raise ProviderError(f"fal could not take the image {image.label}: its storage answered without upload_url/file_url.")
        put = await self._client.put(upload_url, content=image.data, headers={"Content-Type": content_type})
        if not put.is_success:
            raise ProviderError(f"fal's storage refused the image {image.label} (HTTP {put.status_code}).", retryable=True)
        return file_url

    async def submit(
        self, request: GenerationRequest, images: dict[str, ImageSource], *, webhook_url: str | None = None
    ) -> Submitted:
        """Queue the request; ``webhook_url`` goes as ``fal_webhook``.

        Raises:
            InvalidRequest / ContentPolicy: fal's 422, naming the field in our names.
            UnknownOutcome: the answer carried no request id.
        """
        urls = {field: image.url or await self.upload(image) for field, image in images.items()}
        body = request_input(request, urls)
        params = self.webhook_params(webhook_url, body)  # fal_webhook, in the query
        response = await self._http.submit("/" + self.endpoint(request.kind, request.mode), json=body, params=params)
        answer = json_body(response)
        request_id = answer.get("request_id")
        if not request_id:
            raise UnknownOutcome("fal accepted the submit but its answer carried no request_id.")
        given = {name: answer.get(name) for name in _FOLLOWED}
        self.follow(str(request_id), given)
        return Submitted(provider_task_id=str(request_id), follow_urls=self._followed.get(str(request_id), {}))

    def follow(self, provider_task_id: str, urls: Mapping[str, object]) -> None:
        """Follow ``provider_task_id`` at the URLs its submit's answer gave, when all three are on the
        queue's own origin. With ``fal_webhook`` the answer may carry only the ids (fal's webhooks
        page); then, or when a URL points off the queue, the documented layout is used instead."""
        if all(self._on_queue(urls.get(name)) for name in _FOLLOWED):
            self._followed[provider_task_id] = {name: str(urls[name]) for name in _FOLLOWED}
        elif any(urls.get(name) for name in _FOLLOWED):
            log.warning("fal request %s: its answer pointed off the queue's origin; following the documented layout", provider_task_id)

    def _urls(self, request_id: str) -> Mapping[str, str]:
        """The URLs fal gave when ``request_id`` was submitted (journaled with the task, so they hold
        on any worker and after a restart). Only a request adopted by its id has no answer to follow:
        for it, fal's documented queue layout ``{queue}/fal-ai/kling-video/requests/{id}[/status|/cancel]``,
        the one fal-js uses."""
        if (given := self._followed.get(request_id)) is not None:
            return given
        response_url = f"{self.hosts.queue}/{APP}/requests/{quote(request_id, safe='')}"
        return {"status_url": f"{response_url}/status", "response_url": response_url, "cancel_url": f"{response_url}/cancel"}

    async def poll(self, provider_task_id: str) -> ProviderUpdate:
        """The status; once it is no longer queued or running, the result, which alone tells a
        success from a failure (both end ``COMPLETED``)."""
        urls = self._urls(provider_task_id)
        status = json_body(await self._http.request("GET", urls["status_url"])).get("status")
        if status == "IN_QUEUE":
            return ProviderUpdate(status="queued")
        if status == "IN_PROGRESS":
            return ProviderUpdate(status="running")
        self._followed.pop(provider_task_id, None)  # done: asked again, its journaled URLs come back through follow()
        try:
            result = json_body(await self._http.request("GET", urls["response_url"]))
        except _StillRunning:
            return ProviderUpdate(status="running")
        except (ContentPolicy, InvalidRequest, ProviderError) as exc:
            if isinstance(exc, ProviderError) and exc.retryable:
                raise
            return ProviderUpdate(status="failed", error=exc.message, error_code=exc.code if isinstance(exc, ContentPolicy) else "provider_error")
        url = (result.get("video") or {}).get("url") if isinstance(result.get("video"), dict) else None
        if not isinstance(url, str):
            return ProviderUpdate(status="failed", error=f"fal's result carried no video URL: {str(result)[:200]}", error_code="provider_error")
        return ProviderUpdate(status="succeeded", progress_percent=100.0, video_url=url)

    async def cancel(self, provider_task_id: str) -> bool:
        """``PUT cancel_url``: fal asks the running app to stop (an answer is a yes); whether the
        render is still billed is not documented."""
        await self._http.request("PUT", self._urls(provider_task_id)["cancel_url"])
        return True

    async def check_key(self) -> KeyCheck:
        """Look up a request id fal never hands out: "not found" means the key works (free)."""
        try:
            await self._http.request("GET", self._urls(KEY_CHECK_REQUEST_ID)["status_url"])
        except NotFound:
            pass
        return KeyCheck()

    async def _signing_keys(self) -> list[Ed25519PublicKey]:
        """fal's ED25519 public keys, cached a day; empty when they cannot be fetched now."""
        import jwt
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        if time.monotonic() < self._keys_until:
            return self._keys
        try:
            with anyio.fail_after(10):
                response = await self._client.get(self.hosts.jwks)
            response.raise_for_status()
            keys = [jwt.PyJWK(key).key for key in response.json().get("keys", []) if key.get("crv") == "Ed25519"]
        except (httpx2.HTTPError, TimeoutError, ValueError, AttributeError, jwt.PyJWKError) as exc:
            log.warning("fal's webhook keys could not be fetched (%s): its webhooks are only nudges for now", type(exc).__name__)
            return []
        self._keys = [key for key in keys if isinstance(key, Ed25519PublicKey)]
        self._keys_until = time.monotonic() + JWKS_CACHE_SECONDS
        return self._keys

    async def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool | None:
        """Whether fal signed this call (ED25519, within 5 minutes); ``None`` when its keys cannot
        be fetched, and then the call is only a nudge to poll."""
        keys = await self._signing_keys()
        if not keys:
            return None
        return signature_valid(headers, body, keys)
