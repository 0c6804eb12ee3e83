"""Replicate (``replicate``): predictions of the ``kwaivgi/kling-v3-video`` model.

What it sends and reads (every rule with its public source in ``docs/providers.md#replicate``):

- Auth: ``Authorization: Bearer <REPLICATE_API_TOKEN>``.
- Submit: ``POST /v1/models/kwaivgi/kling-v3-video/predictions`` with ``{"input": {...}}``, the
  input in the model's own names (https://replicate.com/kwaivgi/kling-v3-video/api/schema):
  ``mode`` ``standard|pro|4k``, ``duration`` a number, ``generate_audio``, ``start_image`` /
  ``end_image`` as URLs, and ``multi_prompt`` as a JSON-encoded *string*. Local images go up
  first through ``POST /v1/files`` (its ``urls.get`` is passed on).
- Webhook: ``webhook`` plus ``webhook_events_filter: ["completed"]``; the call is signed the
  Standard Webhooks way (HMAC-SHA256 over ``id.timestamp.body`` with the account's ``whsec_``
  secret, fetched once from ``GET /v1/webhooks/default/secret``) and checked with the
  ``standardwebhooks`` package: a forged or stale call is refused.
- Tasks: ``GET /v1/predictions/{id}``; ``starting`` → ``processing`` → ``succeeded`` |
  ``failed`` | ``canceled`` | ``aborted``. ``output`` is one URL, and Replicate deletes it an
  hour after the prediction ends (https://replicate.com/docs/topics/predictions/data-retention):
  the clip must be fetched at once, which the watcher does the moment it sees ``succeeded``.
- Cancel: ``POST /v1/predictions/{id}/cancel``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx2
import standardwebhooks

from kling_video_mcp.errors import InsufficientBalance, InvalidRequest, KlingError, ProviderError, UnknownOutcome
from kling_video_mcp.models import GenerationRequest, ImageSource, Kind, Mode, ProviderUpdate, TaskStatus, utcnow
from kling_video_mcp.providers.base import (
    KLING_SHOT_SECONDS, EndpointRules, KeyCheck, PromptRule, Provider, RulesTable, Submitted, Webhook, market_prices,
)  # fmt: skip
from kling_video_mcp.providers.http import classify_error, json_body
from kling_video_mcp.providers.novita_family import content_refusal

if TYPE_CHECKING:
    from kling_video_mcp.config import Settings

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.replicate.com"
"""Paths start with ``/v1`` (the HTTP reference; the JS client's base URL includes it)."""
MODEL = "kwaivgi/kling-v3-video"
SCHEMA = f"https://replicate.com/{MODEL}/api/schema"
OUTPUT_KEPT = timedelta(hours=1)
"""Replicate removes an API prediction's output files an hour after it ends (data-retention page)."""

OFFERS_4K = True
"""Whether the model takes ``mode: "4k"``, the one place that decides whether ``replicate`` offers 4K."""
FOUR_K_SOURCE = f"mode '4k' joined the model's enum in a later version than the first ({SCHEMA}); a refusal names the field"


def _rules(kind: Kind, mode: Mode) -> EndpointRules:
    source = f"{MODEL}'s input schema ({SCHEMA}): prompt required; multi_prompt a JSON string of shots of at least 1 s"
    return EndpointRules(
        source=f"{source}; {FOUR_K_SOURCE}" if mode == "4k" else source,
        prompt=PromptRule.REQUIRED,
        multi_prompt=True,
        shot_seconds=KLING_SHOT_SECONDS,
        inline_images=False if kind == "i2v" else None,  # local images go up through POST /v1/files
    )


_MODES: tuple[Mode, ...] = ("std", "pro", "4k") if OFFERS_4K else ("std", "pro")
REPLICATE_RULES: RulesTable = {(kind, mode): _rules(kind, mode) for kind in ("t2v", "i2v") for mode in _MODES}
"""Kling v3.0 on Replicate, per (kind, mode): one model, the tier is its ``mode`` input."""

_MODE_NAMES: dict[Mode, str] = {"std": "standard", "pro": "pro", "4k": "4k"}
"""Replicate writes ``standard`` where Kling writes ``std``."""

_STATUSES: dict[str, TaskStatus] = {
    "starting": "queued",
    "processing": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "failed",
    "aborted": "failed",
}
"""The prediction statuses (https://replicate.com/docs/topics/predictions/lifecycle); any other counts as running.
``aborted``: ended before it started (a deadline), not charged."""


def _message(body: Mapping[str, Any]) -> str:
    """The text of Replicate's error bodies: ``{"detail"}``, ``{"error"}`` or problem+json ``{"title", "detail"}``."""
    detail = body.get("detail") or body.get("error") or body.get("title") or ""
    return detail if isinstance(detail, str) else json.dumps(detail)[:500]


def request_input(request: GenerationRequest, image_urls: Mapping[str, str]) -> dict[str, Any]:
    """The prediction's ``input`` for ``request``, with images already as URLs.

    Raises:
        InvalidRequest: ``cfg_scale``, ``shot_type`` or ``element_list``, which the model does not take.
    """
    for field in ("cfg_scale", "shot_type", "element_list"):
        if getattr(request, field) is not None:
            raise InvalidRequest(f"{field}: Replicate's {MODEL} does not take it ({SCHEMA}); leave it out. Nothing was sent.")
    body: dict[str, Any] = {"mode": _MODE_NAMES[request.mode], "duration": request.duration, "generate_audio": request.sound}
    for field in ("prompt", "negative_prompt"):
        if (value := getattr(request, field)) is not None:
            body[field] = value
    if request.kind == "t2v" and request.aspect_ratio:
        body["aspect_ratio"] = request.aspect_ratio  # ignored beside start_image
    for field, wire in (("image", "start_image"), ("end_image", "end_image")):
        if field in image_urls:
            body[wire] = image_urls[field]
    if request.multi_prompt:
        body["multi_prompt"] = json.dumps([shot.model_dump() for shot in request.multi_prompt])
    return body


def _ended(prediction: Mapping[str, Any]) -> datetime:
    try:
        return datetime.fromisoformat(str(prediction.get("completed_at")).replace("Z", "+00:00"))
    except ValueError:
        return utcnow()


def prediction_update(prediction: Mapping[str, Any]) -> ProviderUpdate:
    """A prediction object (a poll's answer, or a webhook's body) in our terms."""
    status = _STATUSES.get(str(prediction.get("status")), "running")
    output = prediction.get("output")
    url = output[0] if isinstance(output, list) and output else output  # one URI; a list tolerated
    url = url if isinstance(url, str) else None
    if status == "succeeded" and (url is None or prediction.get("data_removed")):
        why = "its output was already removed (an hour after the end)" if prediction.get("data_removed") else "no output URL"
        return ProviderUpdate(status="failed", error=f"Replicate reported success with {why}.", error_code="provider_error")
    reason = str(prediction.get("error") or "")
    failed = status == "failed"
    refused = failed and (content_refusal(reason) or "flagged" in reason.lower())
    return ProviderUpdate(
        status=status,
        progress_percent=100.0 if status == "succeeded" else None,
        video_url=url if status == "succeeded" else None,
        url_expires_at=_ended(prediction) + OUTPUT_KEPT if status == "succeeded" else None,
        error=(reason or f"The prediction ended as {prediction.get('status')!r}.") if failed else None,
        error_code=("content_policy" if refused else "provider_error") if failed else None,
    )


class Replicate(Provider):
    """Kling v3.0 through Replicate's predictions API, with ``REPLICATE_API_TOKEN``."""

    name = "replicate"
    label = "Replicate"
    key_variables = ("REPLICATE_API_TOKEN",)
    base_url_variable = "REPLICATE_BASE_URL"
    default_base_url = DEFAULT_BASE_URL
    rules_table = REPLICATE_RULES
    prices = market_prices()  # published only on the model page, which moves: estimates
    webhook = Webhook("body", ("webhook",), "https://replicate.com/docs/topics/webhooks: signed (Standard Webhooks)")
    uploads_images = True

    def __init__(self, client: httpx2.AsyncClient, settings: Settings) -> None:
        super().__init__(client, settings)
        self._verifier: standardwebhooks.Webhook | None = None

    def classify_error(self, response: httpx2.Response) -> KlingError:
        message = _message(json_body(response))
        if response.status_code == 402:  # "You have insufficient credit to run this model"
            return InsufficientBalance(f"Your {self.label} account cannot pay for this render ({self.label} said: {message}). Top up, then try again.")
        return classify_error(response, reason="", message=message, provider=self.label, key_env=self.key_hint)

    def body_error(self, response: httpx2.Response) -> KlingError | None:
        """A 2xx carrying an error body instead of a prediction (no ``id``) is that error."""
        body = json_body(response)
        if "id" in body or not body.keys() & {"detail", "error", "title"}:
            return None
        return self.body_error_from(response, code=body.get("status"), reason="", message=_message(body))

    @staticmethod
    def endpoint(kind: Kind, mode: Mode) -> str:
        return f"v1/models/{MODEL}/predictions"

    async def upload(self, image: ImageSource) -> str:
        """``POST /v1/files`` (multipart ``content``): the returned ``urls.get`` is usable as an input."""
        assert image.data is not None
        extension = (image.mime_type or "image/png").split("/")[-1]
        response = await self._http.request(
            "POST", "/v1/files", files={"content": (f"image.{extension}", image.data, image.mime_type or "application/octet-stream")}
        )
        url = (json_body(response).get("urls") or {}).get("get")
        if not isinstance(url, str):
            raise ProviderError(f"Replicate could not take the image {image.label}: its answer carried no urls.get.")
        return url

    async def submit(
        self, request: GenerationRequest, images: dict[str, ImageSource], *, webhook_url: str | None = None
    ) -> Submitted:
        """Create the prediction; with ``webhook_url``, Replicate calls it once, when it ends.

        Raises:
            InvalidRequest: a field the model does not take, or Replicate's 422 naming the input.
            UnknownOutcome: the answer carried no prediction id.
        """
        urls = {field: image.url or await self.upload(image) for field, image in images.items()}
        body: dict[str, Any] = {"input": request_input(request, urls)}
        if webhook_url:
            self.webhook_params(webhook_url, body)  # "webhook", in the body
            body["webhook_events_filter"] = ["completed"]  # one call, when it ends
        response = await self._http.submit(f"/{self.endpoint(request.kind, request.mode)}", json=body)
        prediction_id = json_body(response).get("id")
        if not prediction_id:
            raise UnknownOutcome("Replicate accepted the submit but its answer carried no prediction id.")
        return Submitted(
            provider_task_id=str(prediction_id),
            notes=("Replicate deletes the clip an hour after the render ends; this server fetches it at once.",),
        )

    async def poll(self, provider_task_id: str) -> ProviderUpdate:
        response = await self._http.request("GET", f"/v1/predictions/{quote(provider_task_id, safe='')}")
        prediction = json_body(response)
        if "status" not in prediction:
            raise ProviderError("Replicate answered the poll without a prediction; asking again later.", retryable=True)
        return prediction_update(prediction)

    async def cancel(self, provider_task_id: str) -> bool:
        """``POST /v1/predictions/{id}/cancel``: a running prediction becomes ``canceled`` (an answer is a yes)."""
        await self._http.request("POST", f"/v1/predictions/{quote(provider_task_id, safe='')}/cancel")
        return True

    async def check_key(self) -> KeyCheck:
        """``GET /v1/account`` (free): the key works if it answers, and it names the account."""
        response = await self._http.request("GET", "/v1/account")
        username = json_body(response).get("username")
        return KeyCheck(f"account {username}" if isinstance(username, str) else "")

    async def _webhook_verifier(self) -> standardwebhooks.Webhook | None:
        """A verifier with the account's ``whsec_`` secret, fetched once (``GET /v1/webhooks/default/secret``);
        ``None`` when it cannot be had now (asked again next time)."""
        if self._verifier is None:
            try:
                response = await self._http.request("GET", "/v1/webhooks/default/secret")
                self._verifier = standardwebhooks.Webhook(str(json_body(response).get("key") or ""))
            except (KlingError, ValueError, standardwebhooks.webhooks.EmptyWebhookSecretError) as exc:
                log.warning("Replicate's webhook secret could not be had (%s): webhooks are only nudges for now", type(exc).__name__)
        return self._verifier

    async def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool | None:
        """Whether the call carries a valid Standard Webhooks signature from Replicate, made within
        the last 5 minutes; ``None`` when the secret cannot be had (then it is only a nudge)."""
        verifier = await self._webhook_verifier()
        if verifier is None:
            return None
        try:
            verifier.verify(body, dict(headers), json_parse=False)
        except standardwebhooks.webhooks.WebhookVerificationError:
            return False
        return True
