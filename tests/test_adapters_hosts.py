"""The Kling, fal and Replicate adapters against httpx2's mock transport: bodies in each host's own
names, status mapping, error classification, signing and webhook verification, in milliseconds.

Each test plays the host with a handler that records what it was sent; the end-to-end layer
(``test_hosts.py``) plays them with the emulator through ``mcp.Client``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from standardwebhooks import Webhook

from kling_video_mcp.config import Settings
from kling_video_mcp.errors import (
    AuthError,
    ConcurrencyLimited,
    ContentPolicy,
    InsufficientBalance,
    InvalidRequest,
    KlingError,
    NotFound,
    RateLimited,
    UnknownOutcome,
)
from kling_video_mcp.models import GenerationRequest, ImageSource, Shot
from kling_video_mcp.providers.fal import Fal, signed_message
from kling_video_mcp.providers.kling import BUSINESS_CODES, FOUR_K_SOURCE, KLING_RULES, OFFERS_4K, Kling, KlingJWT
from kling_video_mcp.providers.replicate import Replicate

pytestmark = pytest.mark.anyio

ACCESS_KEY = "ak-0123456789abcdef"
SECRET_KEY = "sk-0123456789abcdef0123456789abcdef"  # 32+ bytes: HS256 keys shorter than the hash are weak
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
LOCAL_PNG = ImageSource(label="first.png", data=PNG, mime_type="image/png", width=640, height=360)
REMOTE = ImageSource(label="https://img.example/last.png", url="https://img.example/last.png")

Handler = Callable[[httpx2.Request], httpx2.Response]


class Host:
    """A scripted host: answers by (method, path) and records every request it was sent."""

    def __init__(self, routes: dict[tuple[str, str], Callable[[httpx2.Request], httpx2.Response] | httpx2.Response]) -> None:
        self.routes = routes
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        answer = self.routes.get((request.method, request.url.path))
        if answer is None:
            return httpx2.Response(404, json={"detail": f"no route {request.method} {request.url.path}"})
        return answer(request) if callable(answer) else answer

    def sent(self, method: str, path: str) -> list[httpx2.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


def settings(**variables: str) -> Settings:
    """Settings naming only ``variables`` (keys and base URLs), whatever the environment holds."""
    keys = {name: value for name, value in variables.items() if "BASE_URL" not in name}
    others = {name: value for name, value in variables.items() if "BASE_URL" in name}
    return Settings(
        provider_keys=keys, provider_settings=others, provider_rate_limit=1000, submit_retry_seconds=0.3, poll_retry_seconds=0.3
    )


def client_for(host: Host) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.MockTransport(host))


def request(kind: str = "t2v", mode: str = "pro", **fields) -> GenerationRequest:
    defaults = {"prompt": "a fox in snow"} if "multi_prompt" not in fields else {}
    return GenerationRequest(provider="kling", kind=kind, mode=mode, **{**defaults, **fields})


def envelope(data: dict | None = None, code: int = 0, message: str = "SUCCEED", status: int = 200) -> httpx2.Response:
    return httpx2.Response(status, json={"code": code, "message": message, "request_id": "req-1", "data": data})


# -- Kling ---------------------------------------------------------------------------------


def kling(host: Host) -> Kling:
    return Kling(client_for(host), settings(KLING_ACCESS_KEY=ACCESS_KEY, KLING_SECRET_KEY=SECRET_KEY, KLING_BASE_URL="https://kling.test"))


def created(task_id: str = "867283741759111202") -> httpx2.Response:
    return envelope({"task_id": task_id, "task_status": "submitted"})


def test_kling_jwt_has_the_documented_claims():
    now = 1_800_000_000
    token = KlingJWT(ACCESS_KEY, SECRET_KEY).token(now)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, SECRET_KEY, algorithms=["HS256"], options={"verify_exp": False, "verify_nbf": False})
    assert claims == {"iss": ACCESS_KEY, "exp": now + 1800, "nbf": now - 5}
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret-0123456789abcdef0123", algorithms=["HS256"], options={"verify_exp": False})
    assert KlingJWT(ACCESS_KEY, SECRET_KEY).token(now + 1) != token  # made afresh, never reused


async def test_kling_signs_every_request_with_a_fresh_valid_token_and_never_logs_it(caplog):
    host = Host({("POST", "/v1/videos/text2video"): created(), ("GET", "/v1/videos/text2video/867283741759111202"): envelope(
        {"task_id": "867283741759111202", "task_status": "processing"})})  # fmt: skip
    adapter = kling(host)
    with caplog.at_level(logging.DEBUG):
        submitted = await adapter.submit(request(), {})
        await adapter.poll(submitted.provider_task_id)
    for sent in host.requests:
        scheme, token = sent.headers["Authorization"].split(" ")
        assert scheme == "Bearer"
        claims = jwt.decode(token, SECRET_KEY, algorithms=["HS256"])  # valid now: nbf past, exp ahead
        assert claims["iss"] == ACCESS_KEY
        assert token not in caplog.text and SECRET_KEY not in caplog.text


async def test_kling_text_to_video_body_uses_klings_names_and_types():
    host = Host({("POST", "/v1/videos/text2video"): created()})
    submitted = await kling(host).submit(
        request(mode="std", duration=7, sound=True, aspect_ratio="9:16", negative_prompt="blur", cfg_scale=0.4),
        {}, webhook_url="https://me.example/webhooks/tok",
    )  # fmt: skip
    assert submitted.provider_task_id == "867283741759111202"
    (sent,) = host.sent("POST", "/v1/videos/text2video")
    assert json.loads(sent.content) == {
        "model_name": "kling-v3", "mode": "std", "duration": "7", "sound": "on", "prompt": "a fox in snow",
        "negative_prompt": "blur", "cfg_scale": 0.4, "aspect_ratio": "9:16", "callback_url": "https://me.example/webhooks/tok",
    }  # fmt: skip


async def test_kling_image_to_video_sends_raw_base64_and_image_tail():
    host = Host({("POST", "/v1/videos/image2video"): created()})
    await kling(host).submit(
        request("i2v", "pro", aspect_ratio="1:1", element_list=["101", "202"]), {"image": LOCAL_PNG, "end_image": REMOTE}
    )
    body = json.loads(host.sent("POST", "/v1/videos/image2video")[0].content)
    assert body["image"] == base64.b64encode(PNG).decode() and not body["image"].startswith("data:")
    assert body["image_tail"] == REMOTE.url
    assert "aspect_ratio" not in body  # image-to-video takes the image's ratio
    assert body["element_list"] == [{"element_id": 101}, {"element_id": 202}]


async def test_kling_multi_shot_is_indexed_with_string_durations_and_no_prompt():
    host = Host({("POST", "/v1/videos/text2video"): created()})
    shots = [Shot(prompt="a door opens", duration=2), Shot(prompt="a cat walks in", duration=3)]
    await kling(host).submit(request(multi_prompt=shots, duration=5), {})
    body = json.loads(host.sent("POST", "/v1/videos/text2video")[0].content)
    assert body["multi_shot"] is True and body["shot_type"] == "customize" and "prompt" not in body
    assert body["multi_prompt"] == [
        {"index": 1, "prompt": "a door opens", "duration": "2"}, {"index": 2, "prompt": "a cat walks in", "duration": "3"}
    ]  # fmt: skip


async def test_kling_intelligent_shots_are_spelled_the_kling_way():
    host = Host({("POST", "/v1/videos/text2video"): created()})
    await kling(host).submit(request(shot_type="intelligent"), {})
    body = json.loads(host.sent("POST", "/v1/videos/text2video")[0].content)
    assert (body["multi_shot"], body["shot_type"], body["prompt"]) == (True, "intelligence", "a fox in snow")


async def test_kling_element_ids_must_be_numbers_before_anything_is_sent():
    host = Host({})
    with pytest.raises(InvalidRequest, match=r"element_list\[0\]"):
        await kling(host).submit(request("i2v", element_list=["hero"]), {"image": REMOTE})
    assert host.requests == []


def test_kling_offers_4k_exactly_when_the_one_fact_says_so():
    assert (("t2v", "4k") in KLING_RULES) is OFFERS_4K and (("i2v", "4k") in KLING_RULES) is OFFERS_4K
    assert all(FOUR_K_SOURCE in rules.source for (_kind, mode), rules in KLING_RULES.items() if mode == "4k")


EXPECTED_KLING_CODES = {
    1000: "auth_error", 1001: "auth_error", 1002: "auth_error", 1003: "auth_error", 1004: "auth_error",
    1100: "auth_error", 1101: "insufficient_balance", 1102: "insufficient_balance", 1103: "auth_error",
    1200: "validation_error", 1201: "validation_error", 1202: "not_found", 1203: "not_found",
    1300: "content_policy", 1301: "content_policy", 1302: "rate_limited", 1303: "rate_limited", 1304: "auth_error",
    5000: "provider_error", 5001: "provider_error", 5002: "provider_error",
}  # fmt: skip
"""Kling's whole error table (its General Info page), as our error codes."""


def test_every_kling_business_code_is_classified():
    assert set(BUSINESS_CODES) == set(EXPECTED_KLING_CODES)


@pytest.mark.parametrize("code", sorted(EXPECTED_KLING_CODES))
@pytest.mark.parametrize("http_status", [200, 400, 429])
async def test_kling_envelope_code_decides_the_error_not_the_http_status(code, http_status):
    """The same code gives the same error whatever the status: 1102 under a 429 is an empty account."""
    host = Host({("GET", "/account/costs"): envelope(None, code=code, message="words", status=http_status)})
    with pytest.raises(KlingError) as raised:
        await kling(host).check_key()
    assert raised.value.code == EXPECTED_KLING_CODES[code]
    assert ("KLING_ACCESS_KEY" in raised.value.message) is (EXPECTED_KLING_CODES[code] == "auth_error" and code != 1100 and code != 1304)


async def test_kling_depleted_pack_is_final_and_sent_once():
    host = Host({("POST", "/v1/videos/text2video"): envelope(None, 1102, "resource pack exhausted", 429)})
    with pytest.raises(InsufficientBalance) as raised:
        await kling(host).submit(request(), {})
    assert raised.value.retryable is False and "Top up" in raised.value.message
    assert len(host.requests) == 1


async def test_kling_request_rate_limit_is_retried_while_nothing_was_created():
    host = Host({("POST", "/v1/videos/text2video"): envelope(None, 1302, "too fast", 429)})
    with pytest.raises(RateLimited) as raised:
        await kling(host).submit(request(), {})
    assert raised.value.retryable and len(host.requests) >= 2


async def test_kling_concurrency_limit_is_its_own_error_and_not_retried_on_the_spot():
    host = Host({("POST", "/v1/videos/text2video"): envelope(None, 1303, "parallel task over resource pack limit", 429)})
    with pytest.raises(ConcurrencyLimited) as raised:
        await kling(host).submit(request(), {})
    assert raised.value.code == "rate_limited" and raised.value.retryable
    assert "parallel task over resource pack limit" in raised.value.message
    assert len(host.requests) == 1  # the slot frees when a task ends: the task domain sends it again then


@pytest.mark.parametrize("status", [200, 500])
async def test_kling_internal_error_at_submit_is_an_unknown_outcome(status):
    host = Host({("POST", "/v1/videos/text2video"): envelope(None, 5000, "internal error", status)})
    with pytest.raises(UnknownOutcome):
        await kling(host).submit(request(), {})
    assert len(host.requests) == 1


async def test_kling_content_refusal_at_submit():
    host = Host({("POST", "/v1/videos/text2video"): envelope(None, 1301, "risk control", 400)})
    with pytest.raises(ContentPolicy):
        await kling(host).submit(request(), {})


@pytest.mark.parametrize(
    ("data", "status", "error_code"),
    [
        ({"task_status": "submitted"}, "queued", None),
        ({"task_status": "processing"}, "running", None),
        ({"task_status": "something-new"}, "running", None),
        ({"task_status": "failed", "task_status_msg": "content risk triggered"}, "failed", "content_policy"),
        ({"task_status": "failed", "task_status_msg": "internal"}, "failed", "provider_error"),
    ],
)
async def test_kling_task_statuses(data, status, error_code):
    host = Host({("GET", "/v1/videos/image2video/9"): envelope({"task_id": "9", **data})})
    update = await kling(host).poll("9")  # not found under text2video first: looked for under image2video
    assert (update.status, update.error_code) == (status, error_code)


async def test_kling_success_reads_the_first_video():
    videos = {"videos": [{"id": "v", "url": "https://cdn.kling.test/v.mp4", "duration": "5.0"}]}
    host = Host({("GET", "/v1/videos/text2video/9"): envelope({"task_id": "9", "task_status": "succeed", "task_result": videos})})
    update = await kling(host).poll("9")
    assert (update.status, update.video_url) == ("succeeded", "https://cdn.kling.test/v.mp4")
    assert update.url_expires_at > datetime.now(UTC) + timedelta(days=29)


async def test_kling_polls_a_task_under_the_path_it_was_made_on():
    """Its own submits under their path at once; a task it did not submit (after a restart, or
    adopted by id) under text-to-video, then image-to-video, and that path is remembered."""
    host = Host({
        ("POST", "/v1/videos/image2video"): created("41"),
        ("GET", "/v1/videos/image2video/41"): envelope({"task_id": "41", "task_status": "processing"}),
        ("GET", "/v1/videos/text2video/9"): envelope(None, 1203, "task not found", 404),
        ("GET", "/v1/videos/image2video/9"): envelope({"task_id": "9", "task_status": "processing"}),
    })  # fmt: skip
    adapter = kling(host)
    await adapter.submit(request("i2v"), {"image": REMOTE})
    assert (await adapter.poll("41")).status == "running"
    assert not host.sent("GET", "/v1/videos/text2video/41")
    for _ in range(2):
        assert (await adapter.poll("9")).status == "running"
    assert len(host.sent("GET", "/v1/videos/text2video/9")) == 1 and len(host.sent("GET", "/v1/videos/image2video/9")) == 2
    with pytest.raises(NotFound):
        await kling(Host({})).poll("404")


async def test_kling_follows_the_journaled_route_after_a_restart():
    """The creation path rides in the submit's follow URLs; a fresh adapter given them polls there first."""
    made = Host({("POST", "/v1/videos/image2video"): created("41")})
    submitted = await kling(made).submit(request("i2v"), {"image": REMOTE})
    assert submitted.follow_urls == {"poll": "v1/videos/image2video"}
    host = Host({
        ("GET", "/v1/videos/image2video/41"): envelope({"task_id": "41", "task_status": "processing"}),
        ("GET", "/v1/videos/text2video/7"): envelope({"task_id": "7", "task_status": "processing"}),
    })  # fmt: skip
    restarted = kling(host)
    restarted.follow("41", submitted.follow_urls)
    restarted.follow("7", {"poll": "https://elsewhere.test/steal"})  # only Kling's own routes are taken up
    assert (await restarted.poll("41")).status == "running" and (await restarted.poll("7")).status == "running"
    assert not host.sent("GET", "/v1/videos/text2video/41") and len(host.requests) == 2


async def test_kling_key_check_reads_the_free_account_costs():
    packs = [{"resource_pack_name": "video", "remaining_quantity": 120, "status": "online"},
             {"resource_pack_name": "old", "remaining_quantity": 40, "status": "expired"}]  # fmt: skip
    host = Host({("GET", "/account/costs"): envelope({"code": 0, "resource_pack_subscribe_infos": packs})})
    found = await kling(host).check_key()
    assert found.detail == "1 live resource pack(s), 120 units left"
    (sent,) = host.requests
    assert int(sent.url.params["end_time"]) > int(sent.url.params["start_time"])


async def test_kling_webhook_is_only_a_nudge():
    assert await kling(Host({})).verify_webhook({"x": "y"}, b"{}") is None


# -- fal -----------------------------------------------------------------------------------

FAL_KEY = "fal-key-0123456789:abcdef"
QUEUE = "https://queue.fal.test"
REQUEST_ID = "80e7c1f0-aaaa-bbbb-cccc-000000000001"
FOLLOW = f"{QUEUE}/fal-ai/kling-video/requests/{REQUEST_ID}"


def fal(host: Host) -> Fal:
    return Fal(client_for(host), settings(FAL_KEY=FAL_KEY, FAL_BASE_URL=QUEUE))


def queued(_request: httpx2.Request, urls: dict[str, str] | None = None) -> httpx2.Response:
    urls = urls or {"status_url": f"{FOLLOW}/status", "response_url": FOLLOW, "cancel_url": f"{FOLLOW}/cancel"}
    return httpx2.Response(200, json={"request_id": REQUEST_ID, "status": "IN_QUEUE", "queue_position": 0, **urls})


@pytest.mark.parametrize(("kind", "mode", "path"), [
    ("t2v", "std", "/fal-ai/kling-video/v3/standard/text-to-video"),
    ("t2v", "pro", "/fal-ai/kling-video/v3/pro/text-to-video"),
    ("i2v", "4k", "/fal-ai/kling-video/v3/4k/image-to-video"),
])  # fmt: skip
async def test_fal_submits_to_the_tier_path_and_keeps_the_urls_it_is_given(kind, mode, path):
    host = Host({("POST", path): queued})
    images = {"image": REMOTE} if kind == "i2v" else {}
    submitted = await fal(host).submit(request(kind, mode), images, webhook_url="https://me.example/webhooks/t")
    assert submitted.provider_task_id == REQUEST_ID
    (sent,) = host.requests
    assert sent.headers["Authorization"] == f"Key {FAL_KEY}"
    assert sent.url.params["fal_webhook"] == "https://me.example/webhooks/t"


async def test_fal_body_sends_sound_explicitly_and_durations_as_strings():
    host = Host({("POST", "/fal-ai/kling-video/v3/pro/image-to-video"): queued})
    shots = [Shot(prompt="one", duration=2), Shot(prompt="two", duration=3)]
    await fal(host).submit(request("i2v", multi_prompt=shots, duration=5), {"image": REMOTE})
    body = json.loads(host.requests[0].content)
    assert body == {
        "duration": "5", "generate_audio": False, "start_image_url": REMOTE.url, "shot_type": "customize",
        "multi_prompt": [{"prompt": "one", "duration": "2"}, {"prompt": "two", "duration": "3"}],
    }  # fmt: skip


async def test_fal_uploads_local_images_in_two_steps_without_sending_the_key_to_storage():
    storage_put = "https://storage.fal.test/upload/abc?signature=x"
    host = Host({
        ("POST", "/storage/upload/initiate"): httpx2.Response(200, json={"upload_url": storage_put, "file_url": "https://v3.fal.media/f/abc.png"}),
        ("PUT", "/upload/abc"): httpx2.Response(200),
        ("POST", "/fal-ai/kling-video/v3/pro/image-to-video"): queued,
    })  # fmt: skip
    await fal(host).submit(request("i2v"), {"image": LOCAL_PNG})
    initiate, put, submit = host.requests
    assert initiate.url.params["storage_type"] == "fal-cdn-v3" and initiate.headers["Authorization"] == f"Key {FAL_KEY}"
    assert json.loads(initiate.content)["content_type"] == "image/png"
    assert str(put.url) == storage_put and put.content == PNG and "Authorization" not in put.headers
    assert json.loads(submit.content)["start_image_url"] == "https://v3.fal.media/f/abc.png"


@pytest.mark.parametrize("urls", [
    {"status_url": "https://evil.test/s", "response_url": FOLLOW, "cancel_url": f"{FOLLOW}/cancel"},  # off the queue
    {"gateway_request_id": REQUEST_ID},  # a submit with fal_webhook may answer with the ids alone
])  # fmt: skip
async def test_fal_follows_only_urls_on_its_queue_else_the_documented_layout(urls):
    host = Host({
        ("POST", "/fal-ai/kling-video/v3/pro/text-to-video"): lambda sent: queued(sent, urls),
        ("GET", f"/fal-ai/kling-video/requests/{REQUEST_ID}/status"): fal_status("IN_QUEUE"),
    })  # fmt: skip
    adapter = fal(host)
    await adapter.submit(request(), {})
    assert (await adapter.poll(REQUEST_ID)).status == "queued"
    assert all(r.url.host == "queue.fal.test" for r in host.requests)


def fal_status(status: str) -> httpx2.Response:
    return httpx2.Response(202 if status != "COMPLETED" else 200, json={"status": status, "request_id": REQUEST_ID})


ODD_URLS = {  # not the layout fal documents: proves the URLs are followed as given, not rebuilt
    "status_url": f"{QUEUE}/elsewhere/{REQUEST_ID}/state", "response_url": f"{QUEUE}/elsewhere/{REQUEST_ID}/out",
    "cancel_url": f"{QUEUE}/elsewhere/{REQUEST_ID}/stop",
}  # fmt: skip
T2V_PRO = "/fal-ai/kling-video/v3/pro/text-to-video"


async def submitted_with_odd_urls(host: Host) -> Fal:
    host.routes[("POST", T2V_PRO)] = lambda sent: queued(sent, ODD_URLS)
    adapter = fal(host)
    await adapter.submit(request(), {})
    return adapter


@pytest.mark.parametrize(
    ("status", "result", "expected", "error_code"),
    [
        ("IN_QUEUE", None, "queued", None),
        ("IN_PROGRESS", None, "running", None),
        ("COMPLETED", httpx2.Response(200, json={"video": {"url": "https://v3.fal.media/out.mp4"}}), "succeeded", None),
        ("COMPLETED", httpx2.Response(400, json={"detail": "Request is still in progress"}), "running", None),
        ("COMPLETED", httpx2.Response(422, json={"detail": [{"loc": ["body", "prompt"], "msg": "flagged",
                                                             "type": "content_policy_violation"}]}), "failed", "content_policy"),
        ("COMPLETED", httpx2.Response(422, json={"detail": [{"loc": ["body", "duration"], "msg": "bad",
                                                             "type": "value_error"}]}), "failed", "provider_error"),
        ("COMPLETED", httpx2.Response(200, json={"detail": "model crashed", "error_type": "internal"}), "failed", "provider_error"),
    ],
)  # fmt: skip
async def test_fal_completed_can_hide_a_failure_only_the_result_shows(status, result, expected, error_code):
    routes = {("GET", f"/elsewhere/{REQUEST_ID}/state"): fal_status(status)}
    if result is not None:
        routes[("GET", f"/elsewhere/{REQUEST_ID}/out")] = result
    host = Host(routes)
    adapter = await submitted_with_odd_urls(host)
    update = await adapter.poll(REQUEST_ID)
    assert (update.status, update.error_code) == (expected, error_code)
    if expected == "succeeded":
        assert update.video_url == "https://v3.fal.media/out.mp4"
    assert all(r.url.path.startswith("/elsewhere/") for r in host.requests[1:])


async def test_fal_urls_from_the_journal_are_followed_by_another_adapter():
    """Another worker, or this one after a restart: the submit answer's URLs, journaled with the
    task (``Submitted.follow_urls``), come back through ``follow`` and are polled as given."""
    submitted = await fal(Host({("POST", T2V_PRO): lambda sent: queued(sent, ODD_URLS)})).submit(request(), {})
    assert submitted.follow_urls == ODD_URLS
    host = Host({("GET", f"/elsewhere/{REQUEST_ID}/state"): fal_status("IN_PROGRESS")})
    other = fal(host)
    other.follow(REQUEST_ID, submitted.follow_urls)
    assert (await other.poll(REQUEST_ID)).status == "running"
    assert [r.url.path for r in host.requests] == [f"/elsewhere/{REQUEST_ID}/state"]


async def test_fal_request_it_did_not_submit_is_followed_by_the_documented_queue_layout():
    """Adopted by id, there is no submit answer to follow: fal's documented layout (the one
    fal-js uses), owner/app only, never the submit path."""
    host = Host({("GET", f"/fal-ai/kling-video/requests/{REQUEST_ID}/status"): fal_status("IN_PROGRESS")})
    assert (await fal(host).poll(REQUEST_ID)).status == "running"


async def test_fal_422_at_submit_names_our_field():
    detail = [{"loc": ["body", "end_image_url"], "msg": "not allowed with multi_prompt", "type": "value_error"}]
    host = Host({("POST", "/fal-ai/kling-video/v3/pro/image-to-video"): httpx2.Response(422, json={"detail": detail})})
    with pytest.raises(InvalidRequest, match="end_image: not allowed with multi_prompt"):
        await fal(host).submit(request("i2v"), {"image": REMOTE, "end_image": REMOTE})
    assert len(host.requests) == 1


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx2.Response(401, json={"detail": "Invalid key"}), AuthError),
        (httpx2.Response(403, json={"detail": "User is locked. Reason: Exhausted balance"}), InsufficientBalance),
        (httpx2.Response(422, json={"detail": [{"loc": ["body", "prompt"], "msg": "x", "type": "content_policy_violation"}]}), ContentPolicy),
        (httpx2.Response(200, json={"error": {"message": "Exhausted balance", "code": 403}}), InsufficientBalance),
    ],
)  # fmt: skip
async def test_fal_errors_in_each_envelope(answer, error):
    host = Host({("POST", "/fal-ai/kling-video/v3/pro/text-to-video"): answer})
    with pytest.raises(error):
        await fal(host).submit(request(), {})
    assert len(host.requests) == 1


async def test_fal_cancel_puts_the_given_cancel_url():
    host = Host({("PUT", f"/elsewhere/{REQUEST_ID}/stop"): httpx2.Response(202, json={"status": "CANCELLATION_REQUESTED"})})
    adapter = await submitted_with_odd_urls(host)
    assert await adapter.cancel(REQUEST_ID) is True
    assert [r.method for r in host.requests] == ["POST", "PUT"]


async def test_fal_key_check_looks_up_a_request_that_cannot_exist():
    assert (await fal(Host({})).check_key()).detail == ""  # 404: the key was good enough to be told so
    refused = Host({("GET", "/fal-ai/kling-video/requests/00000000-0000-0000-0000-000000000000/status"):
                    httpx2.Response(401, json={"detail": "Invalid key"})})  # fmt: skip
    with pytest.raises(AuthError, match="FAL_KEY"):
        await fal(refused).check_key()


def fal_signed(private: Ed25519PrivateKey, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = private.sign(signed_message(REQUEST_ID, "user-1", stamp, body))
    return {
        "X-Fal-Webhook-Request-Id": REQUEST_ID, "X-Fal-Webhook-User-Id": "user-1",
        "X-Fal-Webhook-Timestamp": stamp, "X-Fal-Webhook-Signature": signature.hex(),
    }  # fmt: skip


def jwks(private: Ed25519PrivateKey) -> httpx2.Response:
    public = private.public_key().public_bytes_raw()
    x = base64.urlsafe_b64encode(public).rstrip(b"=").decode()
    return httpx2.Response(200, json={"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1"}]})


async def test_fal_webhook_signature_is_checked_against_its_published_keys():
    private = Ed25519PrivateKey.generate()
    host = Host({("GET", "/.well-known/jwks.json"): jwks(private)})
    adapter = fal(host)
    body = json.dumps({"request_id": REQUEST_ID, "status": "OK", "payload": {}}).encode()
    assert await adapter.verify_webhook(fal_signed(private, body), body) is True
    assert await adapter.verify_webhook(fal_signed(private, body), body + b" ") is False  # body changed
    assert await adapter.verify_webhook(fal_signed(private, body, int(time.time()) - 600), body) is False  # stale
    assert await adapter.verify_webhook(fal_signed(Ed25519PrivateKey.generate(), body), body) is False  # forged
    assert await adapter.verify_webhook({}, body) is False  # unsigned
    assert len(host.sent("GET", "/.well-known/jwks.json")) == 1  # keys cached


async def test_fal_webhook_without_reachable_keys_is_only_a_nudge():
    host = Host({("GET", "/.well-known/jwks.json"): httpx2.Response(503)})
    assert await fal(host).verify_webhook({"X-Fal-Webhook-Signature": "00"}, b"{}") is None


# -- Replicate -----------------------------------------------------------------------------

TOKEN = "r8_0123456789abcdefghij"
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
PREDICTIONS = "/v1/models/kwaivgi/kling-v3-video/predictions"


def replicate(host: Host) -> Replicate:
    return Replicate(client_for(host), settings(REPLICATE_API_TOKEN=TOKEN, REPLICATE_BASE_URL="https://replicate.test"))


def prediction(status: str = "starting", **fields) -> httpx2.Response:
    return httpx2.Response(201, json={"id": "gm3qorzdhgbfurvjtvhg6dckhu", "status": status, "model": "kwaivgi/kling-v3-video", **fields})


async def test_replicate_input_uses_the_models_names():
    host = Host({("POST", PREDICTIONS): prediction()})
    shots = [Shot(prompt="one", duration=2), Shot(prompt="two", duration=3)]
    submitted = await replicate(host).submit(
        request(mode="std", sound=True, prompt="a story", multi_prompt=shots, aspect_ratio="1:1"), {},
        webhook_url="https://me.example/webhooks/t",
    )  # fmt: skip
    assert submitted.provider_task_id == "gm3qorzdhgbfurvjtvhg6dckhu"
    (sent,) = host.requests
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    body = json.loads(sent.content)
    assert body["webhook"] == "https://me.example/webhooks/t" and body["webhook_events_filter"] == ["completed"]
    assert body["input"] == {
        "mode": "standard", "duration": 5, "generate_audio": True, "prompt": "a story", "aspect_ratio": "1:1",
        "multi_prompt": json.dumps([{"prompt": "one", "duration": 2}, {"prompt": "two", "duration": 3}]),
    }  # fmt: skip
    assert isinstance(body["input"]["multi_prompt"], str)


async def test_replicate_uploads_local_images_through_files():
    host = Host({
        ("POST", "/v1/files"): httpx2.Response(201, json={"id": "f1", "urls": {"get": "https://api.replicate.test/v1/files/f1"}}),
        ("POST", PREDICTIONS): prediction(),
    })  # fmt: skip
    await replicate(host).submit(request("i2v", "4k"), {"image": LOCAL_PNG, "end_image": REMOTE})
    upload, submit = host.requests
    assert b'name="content"' in upload.content and PNG in upload.content
    body = json.loads(submit.content)["input"]
    assert (body["start_image"], body["end_image"], body["mode"]) == ("https://api.replicate.test/v1/files/f1", REMOTE.url, "4k")


@pytest.mark.parametrize("field", [{"cfg_scale": 0.5}, {"element_list": ["1"]}])
async def test_replicate_refuses_fields_the_model_lacks_before_sending(field):
    host = Host({})
    with pytest.raises(InvalidRequest, match=next(iter(field))):
        await replicate(host).submit(request("i2v", **field), {"image": REMOTE})
    assert host.requests == []


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx2.Response(401, json={"detail": "Invalid token."}), AuthError),
        (httpx2.Response(402, json={"detail": "You have insufficient credit to run this model."}), InsufficientBalance),
        (httpx2.Response(422, json={"detail": "- input.duration: Must be at most 15"}), InvalidRequest),
        (httpx2.Response(200, json={"title": "Payment required", "detail": "insufficient credit", "status": 402}), InsufficientBalance),
    ],
)  # fmt: skip
async def test_replicate_errors(answer, error):
    host = Host({("POST", PREDICTIONS): answer})
    with pytest.raises(error):
        await replicate(host).submit(request(), {})
    assert len(host.requests) == 1


async def test_replicate_throttling_is_a_rate_limit():
    host = Host({("POST", PREDICTIONS): httpx2.Response(429, json={"detail": "Request was throttled."}, headers={"Retry-After": "0"})})
    with pytest.raises(RateLimited):
        await replicate(host).submit(request(), {})


@pytest.mark.parametrize(
    ("status", "fields", "expected", "error_code"),
    [
        ("starting", {}, "queued", None),
        ("processing", {}, "running", None),
        ("failed", {"error": "The input was flagged as sensitive"}, "failed", "content_policy"),
        ("failed", {"error": "CUDA out of memory"}, "failed", "provider_error"),
        ("canceled", {}, "failed", "provider_error"),
        ("aborted", {}, "failed", "provider_error"),
        ("succeeded", {"output": "https://replicate.delivery/x/output.mp4", "completed_at": "2026-11-30T10:00:00.5Z"}, "succeeded", None),
        ("succeeded", {"output": None, "data_removed": True}, "failed", "provider_error"),
    ],
)  # fmt: skip
async def test_replicate_statuses(status, fields, expected, error_code):
    host = Host({("GET", "/v1/predictions/p1"): httpx2.Response(200, json={"id": "p1", "status": status, **fields})})
    update = await replicate(host).poll("p1")
    assert (update.status, update.error_code) == (expected, error_code)
    if expected == "succeeded":
        assert update.video_url == "https://replicate.delivery/x/output.mp4"
        assert update.url_expires_at == datetime(2026, 11, 30, 11, 0, 0, 500000, tzinfo=UTC)  # an hour after the end


async def test_replicate_cancel_and_key_check():
    host = Host({("POST", "/v1/predictions/p1/cancel"): httpx2.Response(200, json={"id": "p1", "status": "canceled"}),
                 ("GET", "/v1/account"): httpx2.Response(200, json={"type": "user", "username": "ada"})})  # fmt: skip
    adapter = replicate(host)
    assert await adapter.cancel("p1") is True
    assert (await adapter.check_key()).detail == "account ada"
    with pytest.raises(NotFound):
        await replicate(Host({})).poll("missing")


def replicate_signed(body: bytes, secret: str = SECRET, when: datetime | None = None) -> dict[str, str]:
    stamp = when or datetime.now(UTC)
    return {
        "webhook-id": "msg_1", "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": Webhook(secret).sign("msg_1", stamp, body),
    }  # fmt: skip


async def test_replicate_webhook_is_verified_with_the_secret_fetched_once():
    host = Host({("GET", "/v1/webhooks/default/secret"): httpx2.Response(200, json={"key": SECRET})})
    adapter = replicate(host)
    body = json.dumps({"id": "p1", "status": "succeeded"}).encode()
    assert await adapter.verify_webhook(replicate_signed(body), body) is True
    assert await adapter.verify_webhook(replicate_signed(body), body.replace(b"p1", b"p2")) is False  # body changed
    forged = "whsec_" + base64.b64encode(b"another secret, not replicate's!").decode()
    assert await adapter.verify_webhook(replicate_signed(body, forged), body) is False
    stale = datetime.now(UTC) - timedelta(minutes=10)
    assert await adapter.verify_webhook(replicate_signed(body, when=stale), body) is False
    assert await adapter.verify_webhook({}, body) is False
    assert len(host.requests) == 1  # the secret was fetched once


async def test_replicate_webhook_without_a_secret_is_only_a_nudge():
    host = Host({("GET", "/v1/webhooks/default/secret"): httpx2.Response(503, json={"detail": "down"})})
    assert await replicate(host).verify_webhook(replicate_signed(b"{}"), b"{}") is None


def test_fal_signed_message_is_the_documented_one():
    body = b'{"a":1}'
    assert signed_message("r", "u", "1", body) == f"r\nu\n1\n{hashlib.sha256(body).hexdigest()}".encode()


async def test_provider_errors_never_carry_a_key():
    """A host echoing the key in its error must not put it in our message (redaction at the edge)."""
    host = Host({("POST", PREDICTIONS): httpx2.Response(401, json={"detail": f"Invalid token {TOKEN}"})})
    with pytest.raises(AuthError) as raised:
        await replicate(host).submit(request(), {})
    assert TOKEN not in raised.value.message

