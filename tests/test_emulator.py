"""The provider emulator keeps the contracts of docs/providers.md#the-emulator.

These tests talk to the emulator over real HTTP (loopback only) and check the
shapes a client depends on: task lifecycle and result bodies, envelopes,
media delivery (Range, expiry), fault injection and persistence.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import av
import httpx2
import pytest
from PIL import Image

from helpers import eventually_sync
from kling_video_mcp.emulator import EmulatorConfig, EmulatorServer

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TIME_SCALE = 0.05
"""1 s queue + 3 s render take 0.2 s."""


@pytest.fixture(scope="module")
def shared_server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(time_scale=TIME_SCALE)) as server:
        yield server


@pytest.fixture
def emu(shared_server: EmulatorServer) -> EmulatorServer:
    shared_server.reset()
    shared_server.config.time_scale = TIME_SCALE
    return shared_server


def api(emu: EmulatorServer, flavor: str, key: str | None = KEY) -> httpx2.Client:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx2.Client(base_url=emu.url(flavor), headers=headers, timeout=10)


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(buffer, format="PNG")
    return buffer.getvalue()


def poll_novita(client: httpx2.Client, task_id: str, timeout: float = 10.0) -> list[dict]:
    """Every task-result body until the task is terminal, polling every 10 ms."""
    bodies = []

    def poll() -> dict:
        response = client.get("/v3/async/task-result", params={"task_id": task_id})
        assert response.status_code == 200, response.text
        bodies.append(response.json())
        return bodies[-1]

    finished = ("TASK_STATUS_SUCCEED", "TASK_STATUS_FAILED")
    eventually_sync(poll, lambda body: body["task"]["status"] in finished, timeout=timeout, interval=0.01, what=f"task {task_id} finished")
    return bodies


def poll_wavespeed(client: httpx2.Client, get_url: str, timeout: float = 10.0) -> dict:
    return eventually_sync(
        lambda: client.get(get_url).json()["data"], lambda data: data["status"] in ("completed", "failed", "timeout"),
        timeout=timeout, interval=0.01, what="the prediction finished",
    )  # fmt: skip


def probe(video: bytes, tmp_path: Path) -> dict:
    path = tmp_path / "clip.mp4"
    path.write_bytes(video)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "size": (stream.codec_context.width, stream.codec_context.height),
            "frames": sum(1 for _ in container.decode(video=0)),
            "stream_seconds": float(stream.duration * stream.time_base),
            "container_seconds": container.duration / av.time_base,
            "audio": [s.codec_context.name for s in container.streams.audio],
        }


def test_novita_t2v_runs_queued_processing_succeed_and_yields_a_real_clip(emu, tmp_path):
    emu.config.time_scale = 0.1  # 0.1 s queued, 0.3 s processing: wide enough to observe each phase
    with api(emu, "novita") as client:
        submitted = client.post(
            "/v3/async/kling-v3.0-4k-t2v",
            json={"prompt": "a red fox in fresh snow", "duration": 4, "aspect_ratio": "9:16", "sound": True},
        )
        assert submitted.status_code == 200
        assert list(submitted.json()) == ["task_id"]
        task_id = submitted.json()["task_id"]
        bodies = poll_novita(client, task_id)

        statuses = [body["task"]["status"] for body in bodies]
        assert list(dict.fromkeys(statuses)) == ["TASK_STATUS_QUEUED", "TASK_STATUS_PROCESSING", "TASK_STATUS_SUCCEED"]
        queued = [b["task"] for b in bodies if b["task"]["status"] == "TASK_STATUS_QUEUED"]
        assert all(t["progress_percent"] == 0 and isinstance(t["eta"], int) and t["eta"] >= 0 for t in queued)
        running = [b["task"]["progress_percent"] for b in bodies if b["task"]["status"] == "TASK_STATUS_PROCESSING"]
        assert all(1 <= p <= 99 for p in running) and running == sorted(running)

        final = bodies[-1]
        assert set(final) == {"extra", "task", "images", "videos", "audios"}
        assert final["task"] == {
            "task_id": task_id,
            "status": "TASK_STATUS_SUCCEED",
            "reason": "",
            "task_type": "KLING_V3_0_4K_T2V",
            "eta": 0,
            "progress_percent": 100,
        }
        assert final["images"] == [] and final["audios"] == []
        [video] = final["videos"]
        assert video["video_url_ttl"] == "3600" and video["video_type"] == "mp4"
        assert video["video_url"].startswith(f"{emu.url('novita')}/__fake/media/{task_id}.mp4?expires=")
        expires = int(parse_qs(urlsplit(video["video_url"]).query)["expires"][0])
        assert 3599 <= expires - time.time() <= 3601

        download = httpx2.get(video["video_url"])
    assert download.status_code == 200 and download.headers["content-type"] == "video/mp4"
    clip = probe(download.content, tmp_path)
    assert clip["codec"] == "h264" and clip["pix_fmt"] == "yuv420p"
    assert clip["size"] == (180, 320)
    assert clip["frames"] == 4 * 24 and clip["stream_seconds"] == 4.0
    assert abs(clip["container_seconds"] - 4.0) < 0.05
    assert clip["audio"] == ["aac"]


def test_wavespeed_upload_then_image_to_video_round_trip(emu, tmp_path):
    image = png(600, 400)
    with api(emu, "wavespeed") as client:
        uploaded = client.post("/api/v3/media/upload/binary", files={"file": ("boat.png", image, "image/png")})
        assert uploaded.status_code == 200
        body = uploaded.json()
        assert body["code"] == 200 and body["message"] == "success"
        assert body["data"]["type"] == "image" and body["data"]["filename"] == "boat.png"
        assert body["data"]["size"] == len(image)
        image_url = body["data"]["download_url"]
        assert image_url.startswith(f"{emu.url('wavespeed')}/__fake/media/up_") and image_url.endswith(".png")
        assert httpx2.get(image_url).content == image

        refused = client.post("/api/v3/media/upload/binary", files={"file": ("notes.txt", b"hello", "text/plain")})
        assert (refused.status_code, refused.json()) == (200, {"code": 500, "message": "Upload failed: invalid file type"})

        submitted = client.post(
            "/api/v3/kwaivgi/kling-v3.0-4k/image-to-video", json={"image": image_url, "prompt": "a boat drifts", "duration": 3}
        )
        assert submitted.status_code == 200
        data = submitted.json()["data"]
        assert data["status"] == "created" and data["outputs"] == [] and len(data["id"]) == 32
        assert data["model"] == "kwaivgi/kling-v3.0-4k/image-to-video"
        assert data["urls"]["get"] == f"{emu.url('wavespeed')}/api/v3/predictions/{data['id']}/result"

        done = poll_wavespeed(client, data["urls"]["get"])
        assert done["status"] == "completed" and done["error"] == "" and done["has_nsfw_contents"] == [False]
        assert client.get(f"/api/v3/predictions/{data['id']}").json()["data"]["status"] == "completed"
        [output] = done["outputs"]
        clip = probe(httpx2.get(output).content, tmp_path)
    # The frame takes the uploaded image's 3:2 shape, long side 320 px, even dimensions.
    assert clip["size"] == (320, 214) and clip["frames"] == 3 * 24 and clip["audio"] == []


def data_uri(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


@pytest.mark.parametrize(
    ("flavor", "path", "key", "body", "status", "envelope"),
    [
        pytest.param(
            "novita", "/v3/async/kling-v3.0-std-t2v", KEY, {"prompt": "x", "duration": 20}, 400,
            {"code": 400, "reason": "INVALID_REQUEST_BODY", "message": "duration must be between 3 and 15", "metadata": {}},
            id="novita-duration",
        ),
        pytest.param(
            "novita", "/v3/async/kling-v3.0-4k-i2v", KEY, {"prompt": "x", "image": data_uri(png(200, 200))}, 400,
            {
                "code": 400,
                "reason": "INVALID_IMAGE_SIZE",
                "message": "image width and height must be >= 300px and aspect ratio between 1:2.5 and 2.5:1",
                "metadata": {},
            },
            id="novita-small-image",
        ),
        pytest.param(
            "novita", "/v3/async/kling-v3.0-4k-t2v", None, {"prompt": "x"}, 400,
            {"code": 400, "reason": "MISSING_API_KEY", "message": "API Key not provided", "metadata": {}},
            id="novita-missing-key",
        ),
        pytest.param(
            "highway", "/v3/async/kling-v3.0-4k-t2v", KEY,
            {"prompt": "x", "multi_prompt": [{"prompt": "a", "duration": 5}]}, 400,
            {"code": 400, "reason": "INVALID_REQUEST_BODY", "message": "prompt and multi_prompt are mutually exclusive", "metadata": {}},
            id="highway-exclusive",
        ),
        pytest.param(
            "highway", "/v3/async/kling-v3.0-4k-t2v", "zero-balance-key", {"prompt": "x"}, 400,
            {"code": 400, "reason": "BILLING_BALANCE_NOT_ENOUGH", "message": "Insufficient balance", "metadata": {}},
            id="highway-balance",
        ),
        pytest.param(
            "wavespeed", "/api/v3/kwaivgi/kling-v3.0-4k/image-to-video", KEY,
            {
                "image": "https://example.com/a.png",
                "end_image": "https://example.com/b.png",
                "duration": 6,
                "multi_prompt": [{"prompt": "a", "duration": 3}, {"prompt": "b", "duration": 3}],
            },
            400, {"code": 400, "message": "multi_shot is not supported with end image", "data": None},
            id="wavespeed-end-image",
        ),
        pytest.param(
            "wavespeed", "/api/v3/kwaivgi/kling-v3.0-4k/text-to-video", "not-a-key", {"prompt": "x"}, 401,
            {"code": 401, "message": "Unauthorized: invalid authentication", "data": None},
            id="wavespeed-bad-key",
        ),
    ],
)
def test_refusals_use_each_providers_exact_envelope(emu, flavor, path, key, body, status, envelope):
    with api(emu, flavor, key) as client:
        response = client.post(path, json=body)
    assert response.status_code == status
    assert response.json() == envelope


def finished_clip_url(emu: EmulatorServer, prompt: str = "a lighthouse") -> tuple[str, dict]:
    """Submit a Novita task, force it done, and return its result URL and video entry."""
    with api(emu, "novita") as client:
        task_id = client.post("/v3/async/kling-v3.0-std-t2v", json={"prompt": prompt, "duration": 3}).json()["task_id"]
        emu.complete("novita", task_id)
        [video] = client.get("/v3/async/task-result", params={"task_id": task_id}).json()["videos"]
    return video["video_url"], video


def test_media_supports_head_and_range_requests(emu):
    url, _ = finished_clip_url(emu)
    full = httpx2.get(url).content
    head = httpx2.head(url)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(full) and head.content == b""
    assert head.headers["accept-ranges"] == "bytes"

    part = httpx2.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{len(full)}"
    assert part.content == full[100:200]


def test_truncated_download_can_be_resumed(emu):
    url, _ = finished_clip_url(emu)
    full = httpx2.get(url).content
    emu.inject_fault("novita", "media", "truncate", fraction=0.25)
    received = bytearray()
    with pytest.raises(httpx2.RemoteProtocolError):
        with httpx2.stream("GET", url) as response:
            assert int(response.headers["content-length"]) == len(full)
            for chunk in response.iter_bytes():
                received += chunk
    assert 0 < len(received) < len(full)
    rest = httpx2.get(url, headers={"Range": f"bytes={len(received)}-"})
    assert rest.status_code == 206 and bytes(received) + rest.content == full


def test_result_url_expires_with_a_403_access_denied(emu):
    url, video = finished_clip_url(emu, "a lighthouse [[expire]]")
    assert video["video_url_ttl"] == "1"
    assert httpx2.get(url).status_code == 200
    expires = float(parse_qs(urlsplit(url).query)["expires"][0])
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    late = httpx2.get(url)
    assert late.status_code == 403
    assert late.headers["content-type"].startswith("application/xml")
    assert "<Code>AccessDenied</Code>" in late.text


def test_status_fault_with_retry_after_is_served_once_then_spent(emu):
    armed = httpx2.post(
        f"{emu.base_url}/__fake/faults",
        json={"flavor": "novita", "target": "submit", "kind": "status", "status": 503, "retry_after": 7},
    )
    assert armed.status_code == 200
    emu.inject_fault("wavespeed", "poll", "status", status=429)
    with api(emu, "novita") as novita, api(emu, "wavespeed") as wavespeed:
        first = novita.post("/v3/async/kling-v3.0-4k-t2v", json={"prompt": "x"})
        assert first.status_code == 503 and first.headers["retry-after"] == "7"
        assert first.json() == {"code": 503, "reason": "SERVICE_NOT_AVAILABLE", "message": "Service not available", "metadata": {}}
        second = novita.post("/v3/async/kling-v3.0-4k-t2v", json={"prompt": "x"})
        assert second.status_code == 200 and "task_id" in second.json()

        get_url = wavespeed.post("/api/v3/kwaivgi/kling-v3.0-std/text-to-video", json={"prompt": "x"}).json()["data"]["urls"]["get"]
        throttled = wavespeed.get(get_url)
        assert (throttled.status_code, throttled.json()) == (429, {"code": 429, "message": "Too Many Requests", "data": None})
        assert "retry-after" not in throttled.headers
        assert wavespeed.get(get_url).status_code == 200
    assert httpx2.get(f"{emu.base_url}/__fake/faults").json() == []
    assert [r["path"] for r in emu.requests("novita")] == ["/v3/async/kling-v3.0-4k-t2v"] * 2


def test_prompt_tokens_fail_stall_and_complete_tasks(emu):
    with api(emu, "novita") as novita, api(emu, "wavespeed") as wavespeed:
        refused = novita.post("/v3/async/kling-v3.0-4k-t2v", json={"prompt": "x [[reject:illegal_prompt]]"})
        assert refused.status_code == 400 and refused.json()["reason"] == "ILLEGAL_PROMPT"

        moderated = novita.post("/v3/async/kling-v3.0-4k-t2v", json={"prompt": "x [[fail:moderation]]"}).json()["task_id"]
        failed = poll_novita(novita, moderated)[-1]
        assert failed["task"]["status"] == "TASK_STATUS_FAILED" and failed["task"]["reason"] and failed["videos"] == []

        unreachable = wavespeed.post(
            "/api/v3/kwaivgi/kling-v3.0-4k/image-to-video",
            json={"prompt": "x", "image": "http://unreachable.invalid/cat.png"},
        ).json()["data"]
        lost = poll_wavespeed(wavespeed, unreachable["urls"]["get"])
        assert (lost["status"], lost["code"], lost["outputs"]) == ("failed", 1402, [])

        slow = novita.post("/v3/async/kling-v3.0-4k-t2v", json={"prompt": "x [[slow]]"}).json()["task_id"]
        time.sleep(10 * TIME_SCALE)  # well past a normal render
        stuck = novita.get("/v3/async/task-result", params={"task_id": slow}).json()["task"]
        assert stuck["status"] == "TASK_STATUS_PROCESSING"
        assert httpx2.post(f"{emu.url('novita')}/__fake/tasks/{slow}/complete").status_code == 200
        assert novita.get("/v3/async/task-result", params={"task_id": slow}).json()["task"]["status"] == "TASK_STATUS_SUCCEED"


def test_state_dir_lets_a_restarted_emulator_answer_old_tasks(tmp_path):
    config = EmulatorConfig(time_scale=0.01, state_dir=tmp_path / "state")
    with EmulatorServer(config) as first, api(first, "novita") as client:
        task_id = client.post("/v3/async/kling-v3.0-pro-t2v", json={"prompt": "a paper boat", "duration": 3}).json()["task_id"]
        assert poll_novita(client, task_id)[-1]["task"]["status"] == "TASK_STATUS_SUCCEED"

    with EmulatorServer(EmulatorConfig(time_scale=0.01, state_dir=tmp_path / "state")) as second:
        with api(second, "novita") as client:
            result = client.get("/v3/async/task-result", params={"task_id": task_id})
            assert result.status_code == 200
            assert result.json()["task"]["status"] == "TASK_STATUS_SUCCEED"
            [video] = result.json()["videos"]
            assert video["video_url"].startswith(second.url("novita"))
            clip = probe(httpx2.get(video["video_url"]).content, tmp_path)
    assert clip["frames"] == 3 * 24
