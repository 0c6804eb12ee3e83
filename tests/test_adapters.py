"""The provider adapters alone, against ``httpx2.MockTransport``: no emulator, no server.

Each test drives a provider's real code (``submit``, ``poll``, ``check_key``, ``upload``,
error classification) with answers written here after the provider's documented shapes
(``docs/providers.md``), and checks the requests it sent and what it made of the answers.
The registry's descriptions (prices, rules, variables) are checked here too. End-to-end paths
through ``mcp.Client`` and the emulator live in the other test files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from pydantic import ValidationError

from kling_video_mcp.config import Settings
from kling_video_mcp.errors import (
    AuthError, ContentPolicy, InsufficientBalance, InvalidRequest, NotFound, ProviderError, RateLimited, UnknownOutcome,
)  # fmt: skip
from kling_video_mcp.models import GenerationRequest, ImageSource, Shot
from kling_video_mcp.providers import PROVIDER_NAMES, PROVIDERS, REAL_PROVIDERS, Provider, Providers, provider_class
from kling_video_mcp.providers.base import MARKET_USD_PER_SECOND, Webhook
from kling_video_mcp.providers.highway import Highway
from kling_video_mcp.providers.novita import Novita
from kling_video_mcp.providers.novita_family import KEY_CHECK_TASK_ID
from kling_video_mcp.providers.sandbox import Sandbox
from kling_video_mcp.providers.wavespeed import WaveSpeed
from kling_video_mcp.surface.server import build_server

pytestmark = pytest.mark.anyio

Handler = Callable[[httpx2.Request], httpx2.Response]
KEY = "unit-test-key-0123"
PNG = ImageSource(label="frame.png", data=b"\x89PNG fake bytes", mime_type="image/png", width=640, height=360)


def unit_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Every keyed provider with ``KEY``; no pacing, short retry budgets."""
    keys = {variable: KEY for provider in PROVIDERS for variable in provider.key_variables}
    values: dict[str, object] = dict(
        provider_keys=keys, state_dir=tmp_path / "state", output_dir=tmp_path / "clips",
        provider_rate_limit=1e6, submit_retry_seconds=0.5, poll_retry_seconds=0.5,
    )  # fmt: skip
    return Settings(**(values | overrides))


class Recorder:
    """A mock transport that answers with ``answers`` in turn (the last one repeats) and keeps the requests."""

    def __init__(self, *answers: httpx2.Response | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request) if callable(answer) else answer

    def body(self, index: int = -1) -> dict:
        return json.loads(self.requests[index].content)


def build(provider: type[Provider], recorder: Recorder, settings: Settings) -> Provider:
    return provider(httpx2.AsyncClient(transport=httpx2.MockTransport(recorder)), settings)


def request_for(provider: str, **fields: object) -> GenerationRequest:
    values: dict[str, object] = {"provider": provider, "mode": "4k", "kind": "t2v", "prompt": "a fox in the snow", "duration": 5}
    return GenerationRequest(**(values | fields))


# -- the registry's descriptions --------------------------------------------------------------


def test_every_provider_describes_every_route_and_price():
    routes = {(kind, mode) for kind in ("t2v", "i2v") for mode in ("std", "pro", "4k")}
    for provider in PROVIDERS:
        assert set(provider.rules_table) == routes, provider.name
        assert all(rules.source for rules in provider.rules_table.values()), provider.name
        assert set(provider.prices) == set(MARKET_USD_PER_SECOND), provider.name
        assert all(price.source for price in provider.prices.values()), provider.name
        assert provider.label and provider.default_base_url.startswith(("http://", "https://"))
    assert len(set(PROVIDER_NAMES)) == len(PROVIDERS)
    variables = [variable for provider in PROVIDERS for variable in provider.variables()]
    assert len(set(variables)) == len(variables), "two providers read the same variable"


@pytest.mark.parametrize(
    ("provider", "mode", "sound", "usd", "confirmed"),
    [
        ("wavespeed", "4k", False, 2.10, True), ("wavespeed", "4k", True, 2.10, True), ("wavespeed", "std", False, 0.42, True),
        ("wavespeed", "std", True, 0.63, False), ("wavespeed", "pro", False, 0.56, False), ("wavespeed", "pro", True, 0.84, False),
        ("novita", "4k", True, 2.10, False), ("novita", "std", False, 0.42, False), ("highway", "pro", True, 0.84, False),
        ("sandbox", "4k", True, 0.0, True), ("sandbox", "std", False, 0.0, True),
    ],
)  # fmt: skip
def test_estimates_of_a_five_second_render_and_their_basis(provider, mode, sound, usd, confirmed):
    """The numbers the old pricing table gave before prices moved into the providers."""
    cls = provider_class(provider)
    assert cls.estimate_usd(mode, sound, 5) == usd
    price = cls.price(mode, sound)
    assert price.confirmed is confirmed
    assert ("confirmed" if confirmed else "estimate") in price.basis


def test_the_default_provider_is_the_first_registered_with_its_keys_then_the_free_one(tmp_path):
    keys = {variable: KEY for provider in PROVIDERS for variable in provider.key_variables}
    assert Settings(state_dir=tmp_path, provider_keys=keys).default_provider == REAL_PROVIDERS[0]
    first_unset = keys | dict.fromkeys(provider_class(REAL_PROVIDERS[0]).key_variables, None)
    assert Settings(state_dir=tmp_path, provider_keys=first_unset).default_provider == REAL_PROVIDERS[1]
    none = dict.fromkeys(keys, None)
    free = Settings(state_dir=tmp_path, provider_keys=none).default_provider
    assert free not in REAL_PROVIDERS and provider_class(free).makes_placeholders
    assert Settings(state_dir=tmp_path, provider_keys=none, provider=REAL_PROVIDERS[-1]).default_provider == REAL_PROVIDERS[-1]


def test_settings_read_each_providers_variables_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HIGHWAY_API_KEY", "from-the-environment")
    monkeypatch.setenv("HIGHWAY_BASE_URL", "https://proxy.example/highway")
    monkeypatch.setenv("NOVITA_API_KEY", "   ")  # blank is unset
    settings = Settings(state_dir=tmp_path, provider_keys={"WAVESPEED_API_KEY": None})  # given None wins
    assert Highway.keys(settings)[0].get_secret_value() == "from-the-environment"
    assert Highway.base_url(settings) == "https://proxy.example/highway"
    assert Novita.keys(settings) is None and Novita.base_url(settings) == "https://api.novita.ai"
    assert WaveSpeed.missing_keys(settings) == ("WAVESPEED_API_KEY",)
    assert settings.default_provider == "highway"
    assert "from-the-environment" in settings.secrets()


def test_secrets_hold_every_registered_providers_keys(tmp_path):
    keys = {variable: f"secret-of-{variable}" for provider in PROVIDERS for variable in provider.key_variables}
    assert set(keys.values()) <= set(unit_settings(tmp_path, provider_keys=keys).secrets())


def test_settings_refuse_an_unknown_provider_variable_and_a_base_url_with_credentials(tmp_path):
    with pytest.raises(ValidationError, match="NOVITA_KEY is not a variable of any provider"):
        Settings(state_dir=tmp_path, provider_keys={"NOVITA_KEY": "x"})
    with pytest.raises(ValidationError) as refused:
        Settings(state_dir=tmp_path, provider_settings={"HIGHWAY_BASE_URL": "https://bob:pw@proxy.example"})
    (error,) = refused.value.errors()
    assert "HIGHWAY_BASE_URL must not carry credentials" in error["msg"] and "HIGHWAY_API_KEY" in error["msg"]
    with pytest.raises(ValidationError, match="KLING_MCP_PROVIDER|provider"):
        Settings(state_dir=tmp_path, provider="nobody")


def test_webhook_shapes():
    body: dict = {"prompt": "x"}
    params: dict = {}
    Webhook("body", ("extra", "webhook", "url"), "test").apply("https://me/hook", body, params)
    assert body == {"prompt": "x", "extra": {"webhook": {"url": "https://me/hook"}}} and params == {}
    Webhook("query", ("webhook",), "test").apply("https://me/hook", body, params)
    assert params == {"webhook": "https://me/hook"}


# -- Novita protocol (Novita AI, HighwayAPI) -----------------------------------------------------


@pytest.mark.parametrize("provider", [Novita, Highway])
async def test_novita_protocol_submit_sends_the_route_body_key_and_webhook(tmp_path, provider):
    recorder = Recorder(httpx2.Response(200, json={"task_id": "t-1"}))
    adapter = build(provider, recorder, unit_settings(tmp_path))
    request = request_for(provider.name, mode="pro", aspect_ratio="16:9", sound=True, cfg_scale=0.5, negative_prompt="blur")
    submitted = await adapter.submit(request, {}, webhook_url="https://me.example/webhooks/tok")
    assert submitted.provider_task_id == "t-1"
    (sent,) = recorder.requests
    assert sent.method == "POST" and str(sent.url) == f"{provider.default_base_url}/v3/async/kling-v3.0-pro-t2v"
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert recorder.body() == {
        "prompt": "a fox in the snow", "negative_prompt": "blur", "cfg_scale": 0.5, "duration": 5, "sound": True,
        "aspect_ratio": "16:9", "extra": {"webhook": {"url": "https://me.example/webhooks/tok"}},
    }  # fmt: skip


async def test_novita_protocol_sends_inline_images_as_data_uris_and_shots_as_objects(tmp_path):
    recorder = Recorder(httpx2.Response(200, json={"task_id": "t-2"}))
    adapter = build(Novita, recorder, unit_settings(tmp_path))
    shots = [Shot(prompt="one", duration=3), Shot(prompt="two", duration=2)]
    request = request_for("novita", kind="i2v", mode="std", multi_prompt=shots, image="frame.png")
    await adapter.submit(request, {"image": PNG})
    body = recorder.body()
    assert body["image"].startswith("data:image/png;base64,")
    assert body["multi_prompt"] == [{"prompt": "one", "duration": 3}, {"prompt": "two", "duration": 2}]
    assert "extra" not in body and not recorder.requests[0].url.params


async def test_novita_protocol_turns_a_refused_inline_image_into_a_clear_error(tmp_path):
    """On a route where inline images are unknown (4K i2v), the provider's refusal names the field."""
    refusal = httpx2.Response(400, json={"reason": "INVALID_REQUEST_BODY", "message": "end_image must be a URL"})
    adapter = build(Novita, Recorder(refusal), unit_settings(tmp_path))
    request = request_for("novita", kind="i2v", image="a.png", end_image="b.png")
    with pytest.raises(InvalidRequest) as refused:
        await adapter.submit(request, {"image": PNG.model_copy(update={"url": "https://x/a.png", "data": None}), "end_image": PNG})
    message = refused.value.message
    assert message.startswith("end_image: Novita AI 4K image-to-video refused the local or inline end_image")
    assert "provider='wavespeed'" in message and "local files first" in message


async def test_novita_protocol_submit_without_a_task_id_is_an_unknown_outcome(tmp_path):
    adapter = build(Highway, Recorder(httpx2.Response(200, json={"data": {}})), unit_settings(tmp_path))
    with pytest.raises(UnknownOutcome, match="HighwayAPI accepted the submit but its answer carried no task_id"):
        await adapter.submit(request_for("highway"), {})


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        (httpx2.Response(401, json={"reason": "INVALID_API_KEY", "message": "bad key"}), AuthError, "Check NOVITA_API_KEY"),
        (httpx2.Response(403, json={"reason": "NOT_ENOUGH_BALANCE", "message": "top up"}), InsufficientBalance, "balance"),
        (httpx2.Response(400, json={"reason": "ILLEGAL_PROMPT", "message": "no"}), ContentPolicy, "refused the content"),
        (httpx2.Response(200, json={"message": "insufficient balance"}), InsufficientBalance, "balance"),
        (httpx2.Response(200, json={"code": 401, "message": "key expired"}), AuthError, "NOVITA_API_KEY"),
        (httpx2.Response(400, json={"data": {"reason": "INVALID_REQUEST_BODY", "message": "duration"}}), InvalidRequest, "duration"),
    ],
)  # fmt: skip
async def test_novita_protocol_classifies_errors(tmp_path, answer, error, words):
    adapter = build(Novita, Recorder(answer), unit_settings(tmp_path))
    with pytest.raises(error) as raised:
        await adapter.submit(request_for("novita"), {})
    assert words in raised.value.message and "Novita AI" in raised.value.message


async def test_novita_protocol_submit_answered_5xx_is_never_sent_again(tmp_path):
    recorder = Recorder(httpx2.Response(502, json={"message": "bad gateway"}))
    adapter = build(Novita, recorder, unit_settings(tmp_path))
    with pytest.raises(UnknownOutcome, match="HTTP 502"):
        await adapter.submit(request_for("novita"), {})
    assert len(recorder.requests) == 1


async def test_novita_protocol_submit_answered_429_is_sent_again(tmp_path):
    recorder = Recorder(httpx2.Response(429, headers={"Retry-After": "0"}, json={"reason": "RATE_LIMIT_EXCEEDED"}),
                        httpx2.Response(200, json={"task_id": "t-3"}))  # fmt: skip
    adapter = build(Novita, recorder, unit_settings(tmp_path))
    assert (await adapter.submit(request_for("novita"), {})).provider_task_id == "t-3"
    assert len(recorder.requests) == 2


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "highway-data-wrapped"])
async def test_novita_protocol_poll_reads_the_task_and_its_video(tmp_path, wrapped):
    result = {
        "task": {"task_id": "t-1", "status": "TASK_STATUS_SUCCEED", "progress_percent": 100},
        "videos": [{"video_url": "https://cdn.example/v.mp4", "video_url_ttl": "3600"}],
    }
    recorder = Recorder(httpx2.Response(200, json={"data": result} if wrapped else result))
    adapter = build(Highway, recorder, unit_settings(tmp_path))
    update = await adapter.poll("t-1")
    assert update.status == "succeeded" and update.video_url == "https://cdn.example/v.mp4"
    assert update.url_expires_at is not None and update.progress_percent == 100.0
    (sent,) = recorder.requests
    assert sent.url.path == "/v3/async/task-result" and sent.url.params["task_id"] == "t-1"


@pytest.mark.parametrize(
    ("task", "status", "code"),
    [
        ({"status": "TASK_STATUS_QUEUED", "eta": 40}, "queued", None),
        ({"status": "TASK_STATUS_PROCESSING", "progress_percent": "35"}, "running", None),
        ({"status": "TASK_STATUS_FAILED", "reason": "content moderation failed"}, "failed", "content_policy"),
        ({"status": "TASK_STATUS_FAILED", "reason": "GPU fell over"}, "failed", "provider_error"),
        ({"status": "SOMETHING_NEW"}, "running", None),
    ],
)  # fmt: skip
async def test_novita_protocol_poll_maps_statuses(tmp_path, task, status, code):
    adapter = build(Novita, Recorder(httpx2.Response(200, json={"task": task})), unit_settings(tmp_path))
    update = await adapter.poll("t-1")
    assert update.status == status and update.error_code == code


async def test_novita_protocol_poll_without_a_task_is_a_passing_error(tmp_path):
    """The watcher asks again later: the error is retryable, not the task's end."""
    adapter = build(Novita, Recorder(httpx2.Response(200, json={"videos": []})), unit_settings(tmp_path))
    with pytest.raises(ProviderError, match="without a task object") as raised:
        await adapter.poll("t-1")
    assert raised.value.retryable


async def test_novita_protocol_checks_a_key_with_a_task_that_cannot_exist(tmp_path):
    recorder = Recorder(httpx2.Response(404, json={"reason": "TASK_NOT_FOUND", "message": "no such task"}))
    adapter = build(Novita, recorder, unit_settings(tmp_path))
    assert (await adapter.check_key()).detail == ""
    assert recorder.requests[0].url.params["task_id"] == KEY_CHECK_TASK_ID
    refused = build(Novita, Recorder(httpx2.Response(401, json={"reason": "INVALID_API_KEY"})), unit_settings(tmp_path))
    with pytest.raises(AuthError, match="NOVITA_API_KEY"):
        await refused.check_key()


# -- WaveSpeed (and the sandbox, which speaks it) -------------------------------------------------


async def test_wavespeed_uploads_local_images_and_passes_the_webhook_as_a_query(tmp_path):
    recorder = Recorder(
        httpx2.Response(200, json={"code": 200, "data": {"download_url": "https://files.example/img.png"}}),
        httpx2.Response(200, json={"code": 200, "data": {"id": "p-1"}}),
    )
    adapter = build(WaveSpeed, recorder, unit_settings(tmp_path))
    shots = [Shot(prompt="one", duration=3), Shot(prompt="two", duration=3)]
    request = request_for("wavespeed", kind="i2v", mode="pro", prompt=None, multi_prompt=shots, element_list=["e1"], image="f.png")
    submitted = await adapter.submit(request, {"image": PNG}, webhook_url="https://me.example/webhooks/tok")
    assert submitted.provider_task_id == "p-1"
    upload, submit = recorder.requests
    assert upload.url.path == "/api/v3/media/upload/binary" and b"\x89PNG fake bytes" in upload.content
    assert submit.url.path == "/api/v3/kwaivgi/kling-v3.0-pro/image-to-video"
    assert submit.url.params["webhook"] == "https://me.example/webhooks/tok"
    body = recorder.body()
    assert body["image"] == "https://files.example/img.png" and body["shot_type"] == "customize"
    assert body["element_list"] == [{"element_id": "e1"}] and "prompt" not in body


async def test_wavespeed_upload_without_a_url_is_an_error(tmp_path):
    adapter = build(WaveSpeed, Recorder(httpx2.Response(200, json={"code": 200, "data": {}})), unit_settings(tmp_path))
    with pytest.raises(ProviderError, match="no download_url"):
        await adapter.upload(PNG)


@pytest.mark.parametrize(
    ("data", "status", "code", "url"),
    [
        ({"status": "completed", "outputs": ["https://cdn.example/v.mp4"]}, "succeeded", None, "https://cdn.example/v.mp4"),
        ({"status": "completed", "outputs": [{"url": "https://cdn.example/o.mp4"}]}, "succeeded", None, "https://cdn.example/o.mp4"),
        ({"status": "processing"}, "running", None, None),
        ({"status": "created"}, "queued", None, None),
        ({"status": "failed", "code": 1200, "error": "flagged"}, "failed", "content_policy", None),
        ({"status": "failed", "error": "timeout in worker"}, "failed", "provider_error", None),
        ({"status": "deleted"}, "failed", "provider_error", None),  # deleted in the dashboard: it never finishes
    ],
)  # fmt: skip
async def test_wavespeed_poll_maps_predictions(tmp_path, data, status, code, url):
    recorder = Recorder(httpx2.Response(200, json={"code": 200, "data": data}))
    adapter = build(WaveSpeed, recorder, unit_settings(tmp_path))
    update = await adapter.poll("../odd id")
    assert (update.status, update.error_code, update.video_url) == (status, code, url)
    assert recorder.requests[0].url.raw_path == b"/api/v3/predictions/..%2Fodd%20id/result"


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        (httpx2.Response(401, json={"code": 401, "message": "Invalid token"}), AuthError, "Check WAVESPEED_API_KEY"),
        (httpx2.Response(200, json={"code": 402, "message": "insufficient credits"}), InsufficientBalance, "balance"),
        (httpx2.Response(200, json={"code": 500, "message": "oops"}), ProviderError, "internal error"),
        (httpx2.Response(429, json={"code": 429, "message": "slow down"}), RateLimited, "rate-limiting"),
        (httpx2.Response(404, json={"code": 404, "message": "missing"}), NotFound, "does not know"),
    ],
)  # fmt: skip
async def test_wavespeed_classifies_errors(tmp_path, answer, error, words):
    adapter = build(WaveSpeed, Recorder(answer), unit_settings(tmp_path, poll_retry_seconds=0.01))
    with pytest.raises(error) as raised:
        await adapter.poll("p-1")
    assert words in raised.value.message and "WaveSpeedAI" in raised.value.message


async def test_wavespeed_checks_a_key_through_the_balance(tmp_path):
    recorder = Recorder(httpx2.Response(200, json={"code": 200, "data": {"balance": 12.345}}))
    adapter = build(WaveSpeed, recorder, unit_settings(tmp_path))
    assert (await adapter.check_key()).detail == "balance $12.35"
    assert recorder.requests[0].url.path == "/api/v3/balance"


async def test_a_key_the_provider_echoes_is_redacted_before_anything_reads_it(tmp_path):
    echo = httpx2.Response(401, json={"code": 401, "message": f"Invalid key Bearer {KEY}"})
    adapter = build(WaveSpeed, Recorder(echo), unit_settings(tmp_path))
    with pytest.raises(AuthError) as refused:
        await adapter.check_key()
    assert KEY not in refused.value.message and "[redacted]" in refused.value.message


DOCUMENTED_CANCEL = {"fal", "replicate"}
"""Providers with a documented cancel endpoint (docs/providers.md#cancelling); tests/test_adapters_hosts.py
checks them."""


@pytest.mark.parametrize("provider", [provider for provider in PROVIDERS if provider.name not in DOCUMENTED_CANCEL])
async def test_no_provider_claims_it_can_cancel_without_a_documented_endpoint(provider):
    """None of these documents a cancel endpoint (docs/providers.md), so none overrides the default."""
    assert provider.cancel is Provider.cancel
    assert await provider.__new__(provider).cancel("t-1") is False


# -- building providers ------------------------------------------------------------------------


async def test_a_provider_without_its_key_is_refused_before_any_request(tmp_path):
    settings = unit_settings(tmp_path, provider_keys={"NOVITA_API_KEY": KEY, "WAVESPEED_API_KEY": None})
    recorder = Recorder(httpx2.Response(200))
    providers = Providers(settings, httpx2.AsyncClient(transport=httpx2.MockTransport(recorder)))
    with pytest.raises(AuthError) as refused:
        await providers.get("wavespeed")
    assert "set WAVESPEED_API_KEY" in refused.value.message and "provider='sandbox'" in refused.value.message
    assert isinstance(await providers.get("novita"), Novita) and recorder.requests == []


async def test_the_sandbox_emulator_starts_on_the_first_sandbox_request_only(tmp_path):
    settings = unit_settings(tmp_path, provider_keys={}, provider="sandbox",
                             provider_settings={"KLING_MCP_SANDBOX_TIME_SCALE": "0.05"})  # fmt: skip
    sandbox_state = settings.state_dir / "sandbox"
    server = build_server(settings)
    async with Client(server) as client:
        await client.list_tools()
        assert not sandbox_state.exists(), "the server started the sandbox's emulator before any sandbox request"
        result = await client.call_tool("generate_video", {"prompt": "a paper boat", "duration": 3, "aspect_ratio": "1:1"})
        assert not result.is_error, result.structured_content
        assert sandbox_state.is_dir()


def test_the_sandbox_says_how_to_render_for_real():
    note = Sandbox.result_note()
    for provider in PROVIDERS:
        for variable in provider.key_variables:
            assert variable in note
    assert "provider=" + "|".join(f"'{name}'" for name in REAL_PROVIDERS) in note
