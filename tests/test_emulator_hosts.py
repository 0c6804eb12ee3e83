"""The emulator's flavours of Kling's official API, fal.ai and Replicate keep their real contracts
(docs/hosts-emulated.md).

Raw HTTP against the emulator, as each host's own client would speak it: submit, poll, result,
upload, errors in each host's shape, signed webhooks checked the way a receiver checks them,
Kling's concurrency limit and Replicate's output deletion.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import httpx2
import jwt
import pytest
from kling_video_mcp.emulator import EmulatorConfig, EmulatorServer
from PIL import Image

KEY = "test-key"
KLING_SECRET = EmulatorConfig().kling_secret_key
TIME_SCALE = 0.05
"""1 s queue + 3 s render take 0.2 s."""


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


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(buffer, format="PNG")
    return buffer.getvalue()


def probe(video: bytes, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "clip.mp4"
    path.write_bytes(video)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {
            "codec": stream.codec_context.name,
            "size": (stream.codec_context.width, stream.codec_context.height),
            "frames": sum(1 for _ in container.decode(video=0)),
            "audio": [s.codec_context.name for s in container.streams.audio],
        }


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
        return self.deliveries


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


def poll_kling(client: httpx2.Client, endpoint: str, task_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every ``data`` until the task is terminal."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.get(f"/v1/videos/{endpoint}/{task_id}")
        assert answer.status_code == 200 and answer.json()["code"] == 0, answer.text
        seen.append(answer.json()["data"])
        if seen[-1]["task_status"] in ("succeed", "failed"):
            return seen
        time.sleep(0.01)
    raise AssertionError(f"task {task_id} did not finish: {seen[-1]}")


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
