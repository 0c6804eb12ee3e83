"""The emulator's flavours of Kling's official API, fal.ai and Replicate keep their real contracts
(docs/providers.md#kling-in-the-emulator and its fal and Replicate siblings).

Raw HTTP against the emulator, as each host's own client would speak it: submit, poll, result,
upload, errors in each host's shape, signed webhooks checked the way a receiver checks them,
Kling's concurrency limit and Replicate's output deletion.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx2
import jwt
import pytest

from kling_video_mcp.emulator import EmulatorConfig, EmulatorServer
from test_emulator import png, probe

KEY = "test-key"
KLING_SECRET = EmulatorConfig().kling_secret_key
TIME_SCALE = 0.05
"""1 s queue + 3 s render take 0.2 s."""
Answer = TypeVar("Answer")


@pytest.fixture(scope="module")
def shared_server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(time_scale=TIME_SCALE)) as server:
        yield server


@pytest.fixture
def emu(shared_server: EmulatorServer) -> Iterator[EmulatorServer]:
    shared_server.reset()
    before = shared_server.config.public()
    yield shared_server
    # Undo what a test changed (state_dir cannot change; valid_keys is a list in the view).
    shared_server.config.update({k: v for k, v in before.items() if k != "state_dir"})


# -- helpers -----------------------------------------------------------------------------------


def poll_until(fetch: Callable[[], Answer], finished: Callable[[Answer], bool], timeout: float = 10.0) -> list[Answer]:
    """Every answer of ``fetch`` (every 10 ms) up to the first that is ``finished``."""
    seen: list[Answer] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(fetch())
        if finished(seen[-1]):
            return seen
        time.sleep(0.01)
    raise AssertionError(f"never finished; last answer: {seen[-1]}")


class Receiver:
    """A webhook endpoint on loopback that keeps every delivery's headers and raw body."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        received = self.deliveries

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:  # stdout stays quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count:
            assert time.monotonic() < deadline, f"only {len(self.deliveries)} of {count} webhooks arrived"
            time.sleep(0.01)
        return list(self.deliveries)


# -- Kling's official API --------------------------------------------------------------------------


def kling_token(access_key: str = KEY, secret: str = KLING_SECRET, **claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"iss": access_key, "exp": now + 1800, "nbf": now - 5, **claims}, secret, algorithm="HS256")


def kling(emu: EmulatorServer, access_key: str = KEY) -> httpx2.Client:
    """A client that signs like Kling's docs ask: a fresh HS256 JWT as the Bearer token."""
    headers = {"Authorization": f"Bearer {kling_token(access_key)}"}
    return httpx2.Client(base_url=emu.url("kling"), headers=headers, timeout=10)


def kling_body(**fields: Any) -> dict[str, Any]:
    return {"model_name": "kling-v3", "prompt": "a red fox in fresh snow", **fields}


def poll_kling(client: httpx2.Client, endpoint: str, task_id: str) -> list[dict[str, Any]]:
    """Every ``data`` until the task is terminal."""

    def query() -> dict[str, Any]:
        answer = client.get(f"/v1/videos/{endpoint}/{task_id}")
        assert answer.status_code == 200 and answer.json()["code"] == 0, answer.text
        return answer.json()["data"]

    return poll_until(query, lambda data: data["task_status"] in ("succeed", "failed"))


def test_kling_text2video_runs_submitted_processing_succeed_and_yields_a_real_clip(emu, tmp_path):
    emu.config.time_scale = 0.1  # wide enough to see each status
    with kling(emu) as client:
        submitted = client.post(
            "/v1/videos/text2video", json=kling_body(duration="4", sound="on", aspect_ratio="9:16", mode="pro")
        )
        assert submitted.status_code == 200
        envelope = submitted.json()
        assert (envelope["code"], envelope["message"]) == (0, "SUCCEED") and envelope["request_id"]
        data = envelope["data"]
        assert data["task_status"] == "submitted" and data["task_id"].isdigit() and len(data["task_id"]) == 18

        seen = poll_kling(client, "text2video", data["task_id"])
        assert list(dict.fromkeys(d["task_status"] for d in seen)) == ["submitted", "processing", "succeed"]
        final = seen[-1]
        [video] = final["task_result"]["videos"]
        assert video["duration"] == "4.0" and final["final_unit_deduction"]
        # The poll path must be the one the task was created on.
        wrong = client.get(f"/v1/videos/image2video/{data['task_id']}")
        assert (wrong.status_code, wrong.json()["code"]) == (404, 1203)

    clip = probe(httpx2.get(video["url"]).content, tmp_path)
    assert clip["codec"] == "h264" and clip["size"] == (180, 320) and clip["frames"] == 4 * 24
    assert clip["audio"] == ["aac"]


def test_kling_image2video_takes_raw_base64_and_an_end_frame(emu, tmp_path):
    image = base64.b64encode(png(600, 400)).decode()
    with kling(emu) as client:
        refused = client.post("/v1/videos/image2video", json=kling_body(image=f"data:image/png;base64,{image}"))
        assert (refused.status_code, refused.json()["code"]) == (400, 1201)
        assert "data: prefix" in refused.json()["message"]

        submitted = client.post(
            "/v1/videos/image2video",
            json=kling_body(image=image, image_tail=image, duration="3", element_list=[{"element_id": 7}]),
        ).json()
        assert submitted["code"] == 0
        final = poll_kling(client, "image2video", submitted["data"]["task_id"])[-1]
    clip = probe(httpx2.get(final["task_result"]["videos"][0]["url"]).content, tmp_path)
    assert clip["size"] == (320, 214) and clip["frames"] == 3 * 24 and clip["audio"] == []


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        pytest.param({"duration": 5}, "duration", id="duration-as-integer"),
        pytest.param({"sound": True}, "sound", id="sound-as-boolean"),
        pytest.param({"mode": "standard"}, "mode", id="mode-standard"),
        pytest.param({"model_name": "kling-v3-0"}, "model_name", id="model-v3-0"),
        pytest.param({"model_name": None}, "model_name", id="model-omitted"),
        pytest.param(
            {"multi_shot": True, "shot_type": "customize", "duration": "6",
             "multi_prompt": [
                 {"index": 1, "prompt": "a", "duration": "3"}, {"index": 2, "prompt": "b", "duration": "2"}
             ]},
            "multi_prompt", id="shots-not-adding-up",
        ),
        pytest.param(
            {"multi_shot": True, "shot_type": "customize", "multi_prompt": [{"prompt": "a", "duration": "5"}]},
            "multi_prompt[0].index", id="shot-without-index",
        ),
        pytest.param({"multi_shot": True}, "shot_type", id="multi-shot-without-shot-type"),
        pytest.param({"voice_list": [{"voice_id": "v1"}]}, "voice_list", id="voice-without-sound"),
    ],
)
def test_kling_refuses_fields_of_the_wrong_type_with_1201_naming_the_field(emu, fields, named):
    body = {k: v for k, v in kling_body(**fields).items() if v is not None}
    with kling(emu) as client:
        answer = client.post("/v1/videos/text2video", json=body)
    assert answer.status_code == 400
    assert answer.json()["code"] == 1201 and answer.json()["message"].startswith(named + " ")
    assert list(emu.emulator.store.root.joinpath("tasks").glob("*.json")) == []  # nothing was created
    assert [r["path"] for r in emu.requests("kling")] == ["/v1/videos/text2video"]


def test_kling_multi_shot_with_indexed_string_durations_is_accepted(emu, tmp_path):
    shots = [{"index": 1, "prompt": "a fox wakes", "duration": "2"}, {"index": 2, "prompt": "it runs", "duration": "3"}]
    with kling(emu) as client:
        submitted = client.post(
            "/v1/videos/text2video",
            json=kling_body(multi_shot=True, shot_type="customize", duration="5", multi_prompt=shots),
        ).json()
        assert submitted["code"] == 0
        final = poll_kling(client, "text2video", submitted["data"]["task_id"])[-1]
        tail = client.post(
            "/v1/videos/image2video",
            json=kling_body(multi_shot=True, shot_type="intelligence", image_tail="https://example.com/end.png"),
        )
    assert probe(httpx2.get(final["task_result"]["videos"][0]["url"]).content, tmp_path)["frames"] == 5 * 24
    assert (tail.status_code, tail.json()["code"]) == (400, 1201) and tail.json()["message"].startswith("image_tail ")


def test_kling_4k_mode_follows_the_config_switch(emu):
    with kling(emu) as client:
        assert client.post("/v1/videos/text2video", json=kling_body(mode="4k")).json()["code"] == 0
        emu.config.kling_4k_mode = False
        refused = client.post("/v1/videos/text2video", json=kling_body(mode="4k"))
    assert (refused.status_code, refused.json()["code"]) == (400, 1201)
    assert refused.json()["message"] == "mode must be one of std, pro"


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        pytest.param(None, 1001, id="missing"),
        pytest.param("Bearer not-a-jwt", 1002, id="not-a-jwt"),
        pytest.param(f"Bearer {kling_token('someone-else')}", 1000, id="unknown-access-key"),
        pytest.param(f"Bearer {kling_token(secret='a-different-secret-key-of-32-bytes!')}", 1000, id="wrong-secret"),
        pytest.param(f"Bearer {kling_token(exp=int(time.time()) - 60)}", 1004, id="expired"),
        pytest.param(f"Bearer {kling_token(nbf=int(time.time()) + 600)}", 1003, id="not-yet-valid"),
        pytest.param(f"Bearer {jwt.encode({'iss': KEY}, KLING_SECRET, algorithm='HS256')}", 1002, id="no-exp"),
        pytest.param(f"Bearer {KEY}", 1002, id="static-key"),
    ],
)
def test_kling_refuses_bad_tokens_with_401_and_the_auth_code(emu, authorization, code):
    headers = {"Authorization": authorization} if authorization else {}
    answer = httpx2.post(f"{emu.url('kling')}/v1/videos/text2video", json=kling_body(), headers=headers)
    assert answer.status_code == 401
    assert answer.json()["code"] == code and set(answer.json()) == {"code", "message", "request_id"}


def test_kling_business_errors_are_classified_by_code_not_status(emu):
    with kling(emu, "zero-balance-key") as broke, kling(emu, "ratelimited-key") as throttled, kling(emu) as client:
        depleted = broke.post("/v1/videos/text2video", json=kling_body())
        slowed = throttled.post("/v1/videos/text2video", json=kling_body())
        refused = client.post("/v1/videos/text2video", json=kling_body(prompt="x [[reject:illegal_prompt]]"))
        in_a_200 = client.post("/v1/videos/text2video", json=kling_body(prompt="x [[ok_error:submit]]"))
        emu.inject_fault("kling", "submit", "status", status=503)
        maintenance = client.post("/v1/videos/text2video", json=kling_body())
        moderated = client.post("/v1/videos/text2video", json=kling_body(prompt="x [[fail:moderation]]")).json()
        failed = poll_kling(client, "text2video", moderated["data"]["task_id"])[-1]
    assert (depleted.status_code, depleted.json()["code"]) == (429, 1102)
    assert (slowed.status_code, slowed.json()["code"]) == (429, 1302)
    assert (refused.status_code, refused.json()["code"]) == (400, 1301)
    assert (in_a_200.status_code, in_a_200.json()["code"]) == (200, 1102) and "data" not in in_a_200.json()
    assert (maintenance.status_code, maintenance.json()["code"]) == (503, 5001)
    assert failed["task_status"] == "failed" and failed["task_status_msg"] and "task_result" not in failed


def test_kling_concurrency_limit_answers_1303_and_counts_the_peak(emu):
    emu.config.kling_max_running = 2
    with kling(emu) as client:
        first, second = (client.post("/v1/videos/text2video", json=kling_body()).json() for _ in range(2))
        third = client.post("/v1/videos/text2video", json=kling_body())
        assert (third.status_code, third.json()["code"]) == (429, 1303)
        assert third.json()["message"] == "parallel task over resource pack limit"
        poll_kling(client, "text2video", first["data"]["task_id"])
        poll_kling(client, "text2video", second["data"]["task_id"])
        again = client.post("/v1/videos/text2video", json=kling_body()).json()
        assert again["code"] == 0
    seen = httpx2.get(f"{emu.url('kling')}/__fake/concurrency").json()
    assert seen["limit"] == 2 and seen["peak"] == {KEY: 2} and seen["running"][KEY] <= 1


def test_kling_callback_gets_the_task_object_at_every_status_change_unsigned(emu):
    with Receiver() as receiver, kling(emu) as client:
        submitted = client.post("/v1/videos/text2video", json=kling_body(callback_url=receiver.url)).json()
        deliveries = receiver.wait_for(3)
    bodies = [json.loads(body) for _headers, body in deliveries]
    assert [b["task_status"] for b in bodies] == ["submitted", "processing", "succeed"]
    assert all(b["task_id"] == submitted["data"]["task_id"] and "code" not in b for b in bodies)
    assert bodies[-1]["task_result"]["videos"][0]["url"]
    assert not any("signature" in name for headers, _body in deliveries for name in headers)


def test_kling_external_task_id_finds_the_task_and_must_be_unique(emu):
    with kling(emu) as client:
        created = client.post("/v1/videos/text2video", json=kling_body(external_task_id="shot-1")).json()
        again = client.post("/v1/videos/text2video", json=kling_body(external_task_id="shot-1"))
        found = client.get("/v1/videos/text2video/shot-1").json()
        listed = client.get("/v1/videos/text2video", params={"pageNum": 1, "pageSize": 10}).json()
        costs = client.get("/account/costs", params={"start_time": 0, "end_time": int(time.time() * 1000)}).json()
    assert (again.status_code, again.json()["code"]) == (400, 1201)
    assert found["data"]["task_id"] == created["data"]["task_id"]
    assert found["data"]["task_info"] == {"external_task_id": "shot-1"}
    assert [task["task_id"] for task in listed["data"]] == [created["data"]["task_id"]]
    [pack] = costs["data"]["resource_pack_subscribe_infos"]
    assert pack["status"] == "online" and pack["remaining_quantity"] > 0


# -- fal.ai ---------------------------------------------------------------------------------------

FAL_APP = "/fal-ai/kling-video"


def fal(emu: EmulatorServer, key: str = KEY) -> httpx2.Client:
    return httpx2.Client(base_url=emu.url("fal"), headers={"Authorization": f"Key {key}"}, timeout=10)


def fal_submit(client: httpx2.Client, route: str = "pro/text-to-video", **fields: Any) -> dict[str, Any]:
    answer = client.post(f"{FAL_APP}/v3/{route}", json={"prompt": "a red fox in fresh snow", **fields})
    assert answer.status_code == 200, answer.text
    return answer.json()


def poll_fal(client: httpx2.Client, status_url: str) -> list[httpx2.Response]:
    """Every status answer until ``COMPLETED``."""
    return poll_until(lambda: client.get(status_url), lambda answer: answer.json()["status"] == "COMPLETED")


def test_fal_queue_reply_urls_leave_out_the_submit_path_and_statuses_run_to_completed(emu, tmp_path):
    emu.config.time_scale = 0.1
    with fal(emu) as client:
        queued = fal_submit(client, "standard/text-to-video", duration="3", aspect_ratio="1:1")
        request_id = queued["request_id"]
        base = f"{emu.url('fal')}{FAL_APP}/requests/{request_id}"
        assert (queued["status"], queued["queue_position"]) == ("IN_QUEUE", 0)
        assert (queued["response_url"], queued["status_url"], queued["cancel_url"]) == (
            base, f"{base}/status", f"{base}/cancel"
        )
        early = client.get(queued["response_url"])
        assert (early.status_code, early.json()) == (400, {"detail": "Request is still in progress"})

        seen = poll_fal(client, queued["status_url"] + "?logs=1")
        assert list(dict.fromkeys(a.json()["status"] for a in seen)) == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
        assert {a.status_code for a in seen[:-1]} == {202} and seen[-1].status_code == 200
        assert seen[-1].json()["metrics"]["inference_time"] > 0 and seen[-1].json()["logs"]
        result = client.get(queued["response_url"])
    assert result.status_code == 200 and result.json()["video"]["content_type"] == "video/mp4"
    clip = probe(httpx2.get(result.json()["video"]["url"]).content, tmp_path)
    # generate_audio defaults to true on fal: the clip has sound although nobody asked.
    assert clip["codec"] == "h264" and clip["size"] == (320, 320) and clip["frames"] == 3 * 24
    assert clip["audio"] == ["aac"]


def test_fal_completed_hides_a_failure_that_only_the_result_shows(emu):
    with fal(emu) as client:
        queued = fal_submit(client, prompt="x [[fail:moderation]]")
        assert poll_fal(client, queued["status_url"])[-1].status_code == 200
        result = client.get(queued["response_url"])
    assert result.status_code == 422 and result.headers["x-fal-retryable"] == "false"
    [detail] = result.json()["detail"]
    assert detail["type"] == "content_policy_violation" and detail["loc"] == ["body", "prompt"]


@pytest.mark.parametrize("moment", ["result", "submit"])
@pytest.mark.parametrize(
    ("route", "fields", "location"),
    [
        pytest.param("pro/text-to-video", {"duration": 5}, ["body", "duration"], id="duration-as-integer"),
        pytest.param(
            "pro/text-to-video", {"multi_prompt": [{"prompt": "a", "duration": "5"}]}, ["body", "prompt"],
            id="prompt-and-multi-prompt",
        ),
        pytest.param(
            "4k/image-to-video",
            {
                "prompt": None,
                "start_image_url": "https://example.com/a.png",
                "end_image_url": "https://example.com/b.png",
                "multi_prompt": [{"prompt": "a", "duration": "2"}, {"prompt": "b"}],
                "duration": "7",
            },
            ["body", "end_image_url"], id="end-image-with-shots",
        ),
        pytest.param("pro/image-to-video", {}, ["body", "start_image_url"], id="no-start-image"),
    ],
)
def test_fal_names_the_refused_field_in_a_422_at_the_configured_moment(emu, moment, route, fields, location):
    emu.config.fal_validation_at = moment
    body = {k: v for k, v in {"prompt": "a fox", **fields}.items() if v is not None}
    with fal(emu) as client:
        submitted = client.post(f"{FAL_APP}/v3/{route}", json=body)
        if moment == "submit":
            refusal = submitted
        else:
            assert submitted.status_code == 200
            assert poll_fal(client, submitted.json()["status_url"])[-1].json()["status"] == "COMPLETED"
            refusal = client.get(submitted.json()["response_url"])
    assert refusal.status_code == 422
    [detail] = refusal.json()["detail"]
    assert detail["loc"] == location and detail["msg"].startswith(location[-1])


def test_fal_two_step_upload_feeds_image_to_video(emu, tmp_path):
    image = png(400, 600)
    with fal(emu) as client:
        slot = client.post(
            "/storage/upload/initiate", params={"storage_type": "fal-cdn-v3"},
            json={"content_type": "image/png", "file_name": "boat.png"},
        )
        assert slot.status_code == 200 and set(slot.json()) == {"upload_url", "file_url"}
        put = httpx2.put(slot.json()["upload_url"], content=image, headers={"Content-Type": "image/png"})
        assert put.status_code == 200 and httpx2.get(slot.json()["file_url"]).content == image
        queued = fal_submit(
            client, "4k/image-to-video", start_image_url=slot.json()["file_url"], duration="3", generate_audio=False
        )
        poll_fal(client, queued["status_url"])
        result = client.get(queued["response_url"]).json()
    clip = probe(httpx2.get(result["video"]["url"]).content, tmp_path)
    assert clip["size"] == (214, 320) and clip["audio"] == []


def fal_signature_holds(headers: dict[str, str], body: bytes, jwks: dict[str, Any]) -> bool:
    """A receiver's check (docs/providers.md#fal-webhooks): ED25519 over request id, user id, timestamp and the
    body's SHA-256, with a key of fal's JWK set, and a timestamp within 300 s."""
    if abs(time.time() - int(headers["x-fal-webhook-timestamp"])) > 300:
        return False
    message = "\n".join(
        (
            headers["x-fal-webhook-request-id"],
            headers["x-fal-webhook-user-id"],
            headers["x-fal-webhook-timestamp"],
            hashlib.sha256(body).hexdigest(),
        )
    ).encode()
    signature = bytes.fromhex(headers["x-fal-webhook-signature"])
    algorithm = jwt.algorithms.OKPAlgorithm()
    return any(algorithm.verify(message, algorithm.from_jwk(key), signature) for key in jwks["keys"])


def test_fal_webhook_is_signed_with_a_key_from_the_served_key_set(emu):
    jwks = httpx2.get(f"{emu.url('fal')}/.well-known/jwks.json").json()
    assert [(key["kty"], key["crv"]) for key in jwks["keys"]] == [("OKP", "Ed25519")]
    with Receiver() as receiver, fal(emu) as client:
        hooked = {"fal_webhook": receiver.url}
        done = client.post(f"{FAL_APP}/v3/pro/text-to-video", params=hooked, json={"prompt": "a"})
        failed = client.post(f"{FAL_APP}/v3/pro/text-to-video", params=hooked, json={"prompt": "x [[fail:moderation]]"})
        deliveries = receiver.wait_for(2)
        emu.inject_fault("fal", "webhook", "bad_signature")
        emu.inject_fault("fal", "webhook", "stale_timestamp")
        for _ in range(2):
            client.post(f"{FAL_APP}/v3/pro/text-to-video", params=hooked, json={"prompt": "a"})
        spoiled = receiver.wait_for(4)[2:]
    assert done.json()["gateway_request_id"] == done.json()["request_id"] and "status_url" in done.json()
    bodies = {json.loads(body)["request_id"]: (headers, body) for headers, body in deliveries}
    ok_headers, ok_body = bodies[done.json()["request_id"]]
    error_headers, error_body = bodies[failed.json()["request_id"]]
    assert fal_signature_holds(ok_headers, ok_body, jwks) and fal_signature_holds(error_headers, error_body, jwks)
    assert json.loads(ok_body)["status"] == "OK" and json.loads(ok_body)["payload"]["video"]["url"]
    error = json.loads(error_body)
    assert error["status"] == "ERROR" and error["error"] == "Invalid status code: 422"
    assert error["payload"]["detail"][0]["type"] == "content_policy_violation"
    assert not any(fal_signature_holds(headers, body, jwks) for headers, body in spoiled)


def test_fal_reply_to_a_webhook_submit_can_carry_only_the_ids(emu):
    emu.config.fal_webhook_reply_ids_only = True
    with fal(emu) as client:
        hooked = {"fal_webhook": "http://127.0.0.1:9/x"}
        reply = client.post(f"{FAL_APP}/v3/pro/text-to-video", params=hooked, json={"prompt": "a"})
    assert set(reply.json()) == {"request_id", "gateway_request_id"}


def test_fal_cancel_stops_a_queued_request_and_not_a_finished_one(emu):
    with fal(emu) as client:
        queued = fal_submit(client, prompt="a [[slow]]")
        # A slow request never leaves the queue's hands on its own; cancel it while it waits or runs.
        emu.config.fal_cancel_stops_running = True
        cancelled = client.put(queued["cancel_url"])
        assert (cancelled.status_code, cancelled.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
        assert poll_fal(client, queued["status_url"])[-1].json()["status"] == "COMPLETED"
        result = client.get(queued["response_url"])
        assert (result.status_code, result.json()) == (400, {"detail": "Request was cancelled"})

        done = fal_submit(client)
        poll_fal(client, done["status_url"])
        again = client.put(done["cancel_url"])
        unknown = client.put(f"{FAL_APP}/requests/00000000-0000-4000-8000-000000000000/cancel")
        missing_status = client.get(f"{FAL_APP}/requests/00000000-0000-4000-8000-000000000000/status")
    assert (again.status_code, again.json()) == (400, {"status": "ALREADY_COMPLETED"})
    assert (unknown.status_code, unknown.json()) == (404, {"status": "NOT_FOUND"})
    assert missing_status.status_code == 404


def test_fal_moved_request_urls_answer_only_where_the_reply_points(emu):
    emu.config.fal_requests_moved = True
    with fal(emu) as client:
        queued = fal_submit(client)
        documented = f"{FAL_APP}/requests/{queued['request_id']}"
        by_hand = [client.get(f"{documented}/status"), client.get(documented), client.put(f"{documented}/cancel")]
        followed = poll_fal(client, queued["status_url"])[-1]
        result = client.get(queued["response_url"])
    assert all("/queue-moved/requests/" in queued[name] for name in ("status_url", "response_url", "cancel_url"))
    assert [answer.status_code for answer in by_hand] == [404, 404, 404]
    assert followed.json()["status"] == "COMPLETED" and result.json()["video"]["url"]


def test_fal_cancel_of_a_running_request_is_only_a_signal_by_default(emu):
    emu.config.time_scale = 0.1
    with fal(emu) as client:
        queued = fal_submit(client)
        while client.get(queued["status_url"]).json()["status"] == "IN_QUEUE":
            time.sleep(0.01)
        assert client.put(queued["cancel_url"]).status_code == 202
        poll_fal(client, queued["status_url"])
        assert client.get(queued["response_url"]).status_code == 200


def test_fal_errors_keep_fals_shapes(emu):
    url = f"{emu.url('fal')}{FAL_APP}/v3/pro/text-to-video"
    bearer = httpx2.post(url, json={"prompt": "a"}, headers={"Authorization": f"Bearer {KEY}"})
    nobody = httpx2.post(url, json={"prompt": "a"})
    with fal(emu, "zero-balance-key") as broke, fal(emu, "ratelimited-key") as throttled, fal(emu) as client:
        locked = broke.post(f"{FAL_APP}/v3/pro/text-to-video", json={"prompt": "a"})
        slowed = throttled.post(f"{FAL_APP}/v3/pro/text-to-video", json={"prompt": "a"})
        polled = fal_submit(client, prompt="a [[ok_error:poll]]")
        in_a_200 = client.get(polled["status_url"])
        emu.inject_fault("fal", "poll", "status", status=503)
        scheduling = client.get(polled["status_url"])
    assert (bearer.status_code, bearer.json()) == (401, {"detail": "No user found for Key ID and Secret"})
    assert nobody.status_code == 401
    assert locked.status_code == 403 and "Exhausted balance" in locked.json()["detail"]
    assert slowed.status_code == 429
    assert in_a_200.status_code == 200 and set(in_a_200.json()) == {"detail"}
    assert scheduling.status_code == 503 and scheduling.headers["x-fal-error-type"] == "runner_scheduling_failure"
    assert scheduling.json()["error_type"] == "runner_scheduling_failure"


# -- Replicate -------------------------------------------------------------------------------------

REPLICATE_CREATE = "/models/kwaivgi/kling-v3-video/predictions"


def replicate(emu: EmulatorServer, key: str = KEY) -> httpx2.Client:
    """A client on the API's ``/v1`` base, as Replicate's own clients are."""
    return httpx2.Client(base_url=f"{emu.url('replicate')}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=10)


def predict(client: httpx2.Client, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    inputs = {"prompt": "a red fox in fresh snow", **body.pop("input", {})}
    answer = client.post(REPLICATE_CREATE, json={"input": inputs, **body}, headers=headers or {})
    assert answer.status_code == 201, answer.text
    return answer.json()


def poll_replicate(client: httpx2.Client, url: str) -> list[dict[str, Any]]:
    """Every prediction until it ended."""
    ended = ("succeeded", "failed", "canceled", "aborted")
    return poll_until(lambda: client.get(url).json(), lambda prediction: prediction["status"] in ended)


def test_replicate_prediction_runs_starting_processing_succeeded_with_one_output_url(emu, tmp_path):
    emu.config.time_scale = 0.1
    with replicate(emu) as client:
        created = predict(client, input={"duration": 3})
        assert created["status"] == "starting" and created["output"] is None and len(created["id"]) == 26
        assert created["model"] == "kwaivgi/kling-v3-video" and created["input"]["duration"] == 3
        assert created["urls"]["get"] == f"{emu.url('replicate')}/v1/predictions/{created['id']}"
        seen = poll_replicate(client, created["urls"]["get"])
    assert list(dict.fromkeys(p["status"] for p in seen)) == ["starting", "processing", "succeeded"]
    final = seen[-1]
    assert isinstance(final["output"], str) and final["error"] is None and not final["data_removed"]
    assert final["started_at"] and final["completed_at"] and final["metrics"]["predict_time"] > 0
    clip = probe(httpx2.get(final["output"]).content, tmp_path)
    # generate_audio defaults to false on Replicate.
    assert clip["codec"] == "h264" and clip["frames"] == 3 * 24 and clip["audio"] == []


def test_replicate_prefer_wait_answers_once_the_prediction_ends(emu):
    with replicate(emu) as client:
        held = predict(client, headers={"Prefer": "wait=30"}, input={"generate_audio": True, "mode": "standard"})
        pinned = client.post(
            "/predictions", json={"version": held["version"], "input": {"prompt": "a boat"}}, headers={"Prefer": "wait"}
        )
        unknown = client.post("/predictions", json={"version": "0" * 64, "input": {"prompt": "a boat"}})
    assert held["status"] == "succeeded" and held["output"]
    assert pinned.status_code == 201 and pinned.json()["status"] == "succeeded"
    assert unknown.status_code == 422 and unknown.json()["title"] == "Invalid version or not permitted"


@pytest.mark.parametrize(
    ("inputs", "field", "kind"),
    [
        pytest.param(
            {"duration": 6, "multi_prompt": [{"prompt": "a", "duration": 3}, {"prompt": "b", "duration": 3}]},
            "input.multi_prompt", "invalid_type", id="multi-prompt-as-array",
        ),
        pytest.param({"multi_prompt": "[{not json"}, "input.multi_prompt", "value_error", id="multi-prompt-not-json"),
        pytest.param({"duration": "5"}, "input.duration", "invalid_type", id="duration-as-string"),
        pytest.param({"mode": "std"}, "input.mode", "enum", id="mode-std"),
        pytest.param({"seed": 7}, "input.seed", "additional_property_not_allowed", id="unknown-input"),
        pytest.param({"prompt": None}, "input.prompt", "required", id="no-prompt"),
        pytest.param(
            {"end_image": "https://example.com/b.png"}, "input.end_image", "value_error", id="end-without-start"
        ),
    ],
)
def test_replicate_refuses_inputs_with_a_422_listing_the_field(emu, inputs, field, kind):
    body = {k: v for k, v in {"prompt": "a fox", **inputs}.items() if v is not None}
    with replicate(emu) as client:
        answer = client.post(REPLICATE_CREATE, json={"input": body})
    assert answer.status_code == 422
    refusal = answer.json()
    assert refusal["title"] == "Input validation failed" and refusal["detail"].startswith(f"- {field}: ")
    [invalid] = refusal["invalid_fields"]
    assert (invalid["type"], invalid["field"]) == (kind, field) and invalid["description"]


def test_replicate_takes_multi_prompt_as_a_json_string_and_4k_per_the_switch(emu, tmp_path):
    shots = json.dumps([{"prompt": "a fox wakes", "duration": 2}, {"prompt": "it runs", "duration": 3}])
    with replicate(emu) as client:
        done = predict(client, headers={"Prefer": "wait"}, input={"duration": 5, "multi_prompt": shots, "mode": "4k"})
        emu.config.replicate_4k_mode = False
        refused = client.post(REPLICATE_CREATE, json={"input": {"prompt": "a", "mode": "4k"}})
    assert done["status"] == "succeeded" and probe(httpx2.get(done["output"]).content, tmp_path)["frames"] == 5 * 24
    assert refused.status_code == 422 and refused.json()["invalid_fields"][0]["description"] == (
        "mode must be one of standard, pro"
    )


def test_replicate_file_upload_feeds_start_image(emu, tmp_path):
    image = png(600, 400)
    with replicate(emu) as client:
        content = {"content": ("boat.png", image, "image/png")}
        uploaded = client.post("/files", files=content, data={"metadata": '{"a": 1}'})
        assert uploaded.status_code == 201
        file = uploaded.json()
        assert file["size"] == len(image) and file["checksums"]["sha256"] == hashlib.sha256(image).hexdigest()
        assert file["metadata"] == {"a": 1} and httpx2.get(file["urls"]["get"]).content == image
        done = predict(client, headers={"Prefer": "wait"}, input={"start_image": file["urls"]["get"], "duration": 3})
    assert done["status"] == "succeeded"
    assert probe(httpx2.get(done["output"]).content, tmp_path)["size"] == (320, 214)


def test_replicate_webhooks_are_signed_with_standard_webhooks_under_the_account_secret(emu):
    from standardwebhooks import Webhook, WebhookVerificationError

    with replicate(emu) as client:
        secret = client.get("/webhooks/default/secret").json()["key"]
    assert secret.startswith("whsec_")
    verifier = Webhook(secret)
    with Receiver() as receiver, replicate(emu) as client:
        done = predict(client, webhook=receiver.url, webhook_events_filter=["completed"])
        both = predict(client, webhook=receiver.url, webhook_events_filter=["start", "completed"])
        deliveries = receiver.wait_for(3)
        emu.inject_fault("replicate", "webhook", "bad_signature")
        emu.inject_fault("replicate", "webhook", "stale_timestamp")
        for _ in range(2):
            predict(client, webhook=receiver.url, webhook_events_filter=["completed"])
        spoiled = receiver.wait_for(5)[3:]
    verified = [verifier.verify(body, headers) for headers, body in deliveries]
    assert [p["status"] for p in verified if p["id"] == done["id"]] == ["succeeded"]
    assert [p["status"] for p in verified if p["id"] == both["id"]] == ["starting", "succeeded"]
    assert all(p["output"] for p in verified if p["status"] == "succeeded")
    reasons = set()
    for headers, body in spoiled:
        with pytest.raises(WebhookVerificationError) as refused:
            verifier.verify(body, headers)
        reasons.add(str(refused.value))
    assert reasons == {"No matching signature found", "Message timestamp too old"}


def test_replicate_removes_the_output_after_the_retention_time(emu):
    emu.config.replicate_retention_seconds = 10.0  # 0.5 s at this clock
    with replicate(emu) as client:
        done = predict(client, headers={"Prefer": "wait"})
        assert done["status"] == "succeeded" and httpx2.get(done["output"]).status_code == 200
        time.sleep(0.6)
        later = client.get(done["urls"]["get"]).json()
    assert httpx2.get(done["output"]).status_code == 404
    assert later["data_removed"] is True and later["output"] is None and later["input"] == {}
    assert later["status"] == "succeeded"


def test_replicate_cancel_and_deadlines_end_predictions(emu):
    with replicate(emu) as client:
        slow = predict(client, input={"prompt": "a [[slow]]"})
        cancelled = client.post(slow["urls"]["cancel"])
        aborted = predict(client, headers={"Cancel-After": "500ms"})  # 25 ms here: before it leaves the queue
        overrun = predict(client, headers={"Cancel-After": "2s"}, input={"prompt": "a [[slow]]"})
        bad_deadline = client.post(REPLICATE_CREATE, json={"input": {"prompt": "a"}}, headers={"Cancel-After": "soon"})
        ended = [poll_replicate(client, p["urls"]["get"])[-1] for p in (aborted, overrun)]
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "canceled"
    assert cancelled.json()["error"] is None
    assert [p["status"] for p in ended] == ["aborted", "canceled"]
    assert ended[0]["started_at"] is None and ended[1]["started_at"] is not None
    assert bad_deadline.status_code == 400


def test_replicate_errors_keep_replicates_shapes(emu):
    with replicate(emu, "not-a-token") as stranger, replicate(emu, "zero-balance-key") as broke:
        refused = stranger.post(REPLICATE_CREATE, json={"input": {"prompt": "a"}})
        unpaid = broke.post(REPLICATE_CREATE, json={"input": {"prompt": "a"}})
    with replicate(emu, "ratelimited-key") as throttled, replicate(emu) as client:
        slowed = throttled.post(REPLICATE_CREATE, json={"input": {"prompt": "a"}})
        flagged = predict(client, headers={"Prefer": "wait"}, input={"prompt": "a [[reject:illegal_prompt]]"})
        in_a_200 = client.post(REPLICATE_CREATE, json={"input": {"prompt": "a [[ok_error:submit]]"}})
        account = client.get("/account")
    assert (refused.status_code, refused.json()["title"]) == (401, "Unauthenticated")
    assert refused.json()["detail"] == "You did not pass a valid authentication token"
    assert (unpaid.status_code, unpaid.json()["title"]) == (402, "Insufficient credit")
    assert slowed.status_code == 429 and "throttled" in slowed.json()["detail"]
    assert flagged["status"] == "failed" and "(E005)" in flagged["error"]
    assert in_a_200.status_code == 200 and in_a_200.json()["status"] == 402 and "id" not in in_a_200.json()
    assert account.status_code == 200 and account.json()["type"] == "user"


# -- every host: downloads that lie ------------------------------------------------------------------


def finished_output(emu: EmulatorServer, flavor: str) -> str:
    """A finished clip's URL on ``flavor``."""
    if flavor == "kling":
        with kling(emu) as client:
            task_id = client.post("/v1/videos/text2video", json=kling_body(duration="3")).json()["data"]["task_id"]
            return poll_kling(client, "text2video", task_id)[-1]["task_result"]["videos"][0]["url"]
    if flavor == "fal":
        with fal(emu) as client:
            queued = fal_submit(client, duration="3")
            poll_fal(client, queued["status_url"])
            return client.get(queued["response_url"]).json()["video"]["url"]
    with replicate(emu) as client:
        return predict(client, headers={"Prefer": "wait"}, input={"duration": 3})["output"]


@pytest.mark.parametrize("flavor", ["kling", "fal", "replicate"])
def test_every_host_serves_html_pages_and_short_bodies_when_told(emu, flavor):
    url = finished_output(emu, flavor)
    full = httpx2.get(url)
    assert full.status_code == 200 and full.headers["content-type"] == "video/mp4"
    emu.inject_fault(flavor, "media", "html")
    page = httpx2.get(url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    emu.inject_fault(flavor, "media", "truncated", fraction=0.5)
    short = httpx2.get(url)
    assert short.status_code == 200 and "content-length" not in short.headers
    assert 0 < len(short.content) < len(full.content)


def test_injected_statuses_take_each_hosts_envelope(emu):
    with kling(emu) as kling_client, fal(emu) as fal_client, replicate(emu) as replicate_client:
        kling_id = kling_client.post("/v1/videos/text2video", json=kling_body()).json()["data"]["task_id"]
        queued = fal_submit(fal_client)
        prediction = predict(replicate_client)
        emu.inject_fault("kling", "poll", "status", status=502)
        emu.inject_fault("fal", "result", "status", status=502)
        emu.inject_fault("replicate", "poll", "status", status=502)
        emu.inject_fault("replicate", "cancel", "status", status=500)
        kling_answer = kling_client.get(f"/v1/videos/text2video/{kling_id}")
        fal_answer = fal_client.get(queued["response_url"])
        replicate_answer = replicate_client.get(prediction["urls"]["get"])
        cancel_answer = replicate_client.post(prediction["urls"]["cancel"])
    assert (kling_answer.status_code, kling_answer.json()["code"]) == (502, 5000)
    assert (fal_answer.status_code, fal_answer.json()) == (502, {"detail": "Bad Gateway"})
    assert replicate_answer.status_code == 502 and replicate_answer.json()["title"] == "Bad Gateway"
    assert (cancel_answer.status_code, cancel_answer.json()["status"]) == (500, 500)


def test_every_host_rule_names_its_public_source():
    from kling_video_mcp.emulator.rules import FAL_HOST_RULES, KLING_HOST_RULES, REPLICATE_HOST_RULES

    for table in (KLING_HOST_RULES, FAL_HOST_RULES, REPLICATE_HOST_RULES):
        rules = [*table.fields, *table.cross_rules]
        assert rules and all(rule.source.startswith("https://") for rule in rules)
        assert table.image_source.startswith("https://")
