"""A faulty provider, a broken disk or a hostile input never costs a clip, hides a failure or leaks a secret.

Each test drives the real server through ``mcp.Client`` against the emulator, with the fault
injected there: pages and cut bodies instead of clips, links and redirects to private
addresses, wrong lengths, echoed keys, undocumented statuses, odd task ids; or a local fault
(an output folder that is gone, companions that cannot be written).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import struct
import subprocess
import zlib
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client

from conftest import KEY, make_settings, png_bytes
from helpers import clip_duration, eventually, eventually_sync, submits, total_requests, wait_done
from kling_video_mcp.surface.server import build_server
from test_stdio import console_script, server_env

pytestmark = pytest.mark.anyio

PROMPT = "a lighthouse in the rain"


def media_gets(emulator, flavor: str) -> list[dict]:
    return [r for r in emulator.requests(flavor) if r["method"] == "GET" and "/__fake/media/" in r["path"]]


async def submit(client: Client, **arguments) -> dict:
    result = await client.call_tool("generate_video", {"prompt": PROMPT, "duration": 3, **arguments})
    assert not result.is_error, result.structured_content
    return result.structured_content


async def done(client: Client, task_id: str) -> dict:
    return (await wait_done(client, task_id)).structured_content


def leftovers(folder: Path) -> list[str]:
    """Files a failed or abandoned download must not leave behind."""
    patterns = ("*.part", "*.json.tmp")
    return [path.name for pattern in patterns for path in folder.glob(pattern)] if folder.is_dir() else []


# -- 1. a download is a video, from an allowed address, under the ceiling ------------------------


@pytest.mark.parametrize("kind", ["html", "truncated"])
async def test_what_is_not_a_whole_video_is_fetched_again(client, emulator, settings, kind):
    """A CDN's 200 "502 Bad Gateway" page, or a body cut at a third without Content-Length."""
    emulator.inject_fault("novita", "media", kind, times=2, fraction=0.33)
    report = await done(client, (await submit(client, provider="novita"))["task_id"])
    assert report["status"] == "succeeded", report
    assert len(media_gets(emulator, "novita")) == 3  # two refused answers, then the clip
    async with httpx2.AsyncClient() as http:
        original = (await http.get(report["provider_video_url"])).content
    assert Path(report["file_path"]).read_bytes() == original
    assert clip_duration(report["file_path"]) == pytest.approx(3, abs=0.1)
    assert leftovers(settings.output_dir) == []


async def test_a_link_that_connects_to_a_private_address_is_refused(tmp_path, emulator):
    """The provider's link names a host ("localhost"), not an address: what counts is where it connects."""
    named = {flavor + "_base_url": emulator.url(flavor).replace("127.0.0.1", "localhost") for flavor in ("novita",)}
    settings = make_settings(tmp_path, emulator, allow_private_downloads=False, **named)
    async with Client(build_server(settings)) as client:
        report = await done(client, (await submit(client, provider="novita"))["task_id"])
    assert report["status"] == "failed" and report["error"]["code"] == "download_failed", report
    message = report["error"]["message"]
    assert "connected to 127.0.0.1" in message and "KLING_MCP_ALLOW_PRIVATE_DOWNLOADS" in message
    assert not list(settings.output_dir.glob("*.mp4*"))


@pytest.mark.parametrize(
    ("location", "said"),
    [("http://169.254.169.254/latest/meta-data", "link-local"), ("file:///etc/passwd", "http(s)")],
)
async def test_a_redirect_is_checked_like_the_link(client, emulator, settings, location, said):
    """The emulator is on loopback, so its own links are allowed; a hop elsewhere is not."""
    emulator.inject_fault("wavespeed", "media", "redirect", times=100, value=location)
    report = await done(client, (await submit(client, provider="wavespeed"))["task_id"])
    assert report["status"] == "failed" and report["error"]["code"] == "download_failed", report
    assert said in report["error"]["message"]
    assert not list(settings.output_dir.glob("*.mp4*"))


async def test_a_file_link_from_the_provider_is_refused(client, emulator, settings):
    emulator.inject_fault("wavespeed", "poll", "result_url", times=100, value="file:///etc/passwd")
    report = await done(client, (await submit(client, provider="wavespeed"))["task_id"])
    assert report["error"]["code"] == "download_failed", report
    assert "file: link" in report["error"]["message"] and "http(s)" in report["error"]["message"]
    assert not list(settings.output_dir.glob("*"))


@pytest.mark.parametrize(("fault", "said"), [(None, "declares"), ("truncated", "sent more than")])
async def test_a_clip_above_the_size_ceiling_is_stopped(tmp_path, emulator, fault, said):
    """Declared (Content-Length) or received (no length given): either stops the download."""
    if fault:
        emulator.inject_fault("novita", "media", fault, times=10, fraction=1.0)
    settings = make_settings(tmp_path, emulator, max_clip_bytes=2000)
    async with Client(build_server(settings)) as client:
        report = await done(client, (await submit(client, provider="novita"))["task_id"])
    assert report["error"]["code"] == "download_failed", report
    assert said in report["error"]["message"] and "KLING_MCP_MAX_CLIP_BYTES" in report["error"]["message"]
    assert not list(settings.output_dir.glob("*.mp4*"))


# -- 2. failures the user sees, and recovers from ---------------------------------------------


async def test_a_wrong_content_length_is_shown_then_fails_and_recovers(client, emulator, settings):
    emulator.inject_fault("novita", "media", "wrong_length", times=100)
    task_id = (await submit(client, provider="novita"))["task_id"]

    async def as_it_stands() -> dict:
        # The task's resource, not check_task: a check waits up to five seconds for the poll
        # under way, and the retries may all have failed by then.
        resource = await client.read_resource(f"kling-video://tasks/{task_id}")
        return json.loads(resource.contents[0].text)

    running = await eventually(
        as_it_stands, lambda report: report["warnings"], interval=0.1, what="a warning about the failed download attempt"
    )
    assert running["status"] == "running" and "download attempt failed" in running["warnings"][-1], running
    assert "trouble" in running["message"]
    failed = await done(client, task_id)
    assert failed["error"]["code"] == "download_failed" and "Content-Length" in failed["error"]["message"], failed
    assert failed["error"]["retryable"] is True
    assert leftovers(settings.output_dir) == [] and not list(settings.output_dir.glob("*.mp4"))

    emulator.emulator.faults.clear()  # the storage server is fixed
    recovered = await done(client, task_id)
    assert recovered["status"] == "succeeded", recovered
    assert recovered["warnings"] == []


async def test_an_output_folder_that_is_gone_is_reported_and_recovered(tmp_path, emulator):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the output folder should be")
    settings = make_settings(tmp_path, emulator, output_dir=blocked)
    async with Client(build_server(settings)) as client:
        task_id = (await submit(client, provider="novita"))["task_id"]
        failed = await done(client, task_id)
        assert failed["status"] == "failed" and failed["error"]["code"] == "storage_error", failed
        assert str(blocked) in failed["error"]["message"] and "create it" in failed["error"]["message"]
        assert "check_task again" in failed["error"]["message"]
        blocked.unlink()  # the user fixes it
        recovered = await done(client, task_id)
    assert recovered["status"] == "succeeded", recovered
    assert Path(recovered["file_path"]).parent == blocked


def test_a_full_disk_says_to_free_space():
    """The advice for the other local faults (a full disk cannot be made in a test as root)."""
    import errno

    from kling_video_mcp.tasks.downloads import storage_error

    folder = Path("/videos")
    assert "free space there" in storage_error(OSError(errno.ENOSPC, "No space left on device"), folder).message
    assert "make it writable" in storage_error(PermissionError(errno.EACCES, "Permission denied"), folder).message
    assert "read-only" in storage_error(OSError(errno.EROFS, "Read-only file system"), folder).message


async def test_companions_that_cannot_be_written_are_reported(client, emulator, settings):
    from kling_video_mcp.models import TaskRecord
    from kling_video_mcp.tasks.files import clip_filename

    report = await submit(client, provider="novita", prompt=f"{PROMPT} [[render:40]]")  # 2 s render
    with sqlite3.connect(settings.journal_path) as db:
        (row,) = db.execute("SELECT record FROM tasks WHERE task_id = ?", (report["task_id"],)).fetchone()
    name = clip_filename(TaskRecord.model_validate_json(row))
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    for blocker in (name + ".last.png", name + ".json"):  # folders where the files must go
        (settings.output_dir / blocker).mkdir()
    finished = await done(client, report["task_id"])
    assert finished["status"] == "succeeded", finished
    warnings = " ".join(finished["warnings"])
    assert "last frame could not be saved" in warnings and "sidecar" in warnings, finished
    assert finished["last_frame_path"] is None and finished["sidecar_path"] is None
    assert leftovers(settings.output_dir) == []

    chained = await client.call_tool(
        "animate_image", {"image": f"task:{report['task_id']}", "prompt": "on", "provider": "novita"}
    )
    error = chained.structured_content["error"]
    assert error["code"] == "validation_error" and "no last frame" in error["message"], error
    assert "last frame could not be saved" in error["message"]


async def test_check_task_says_a_timed_out_task_timed_out(tmp_path, emulator):
    """A provider that always answers an undocumented status, and a short ceiling."""
    emulator.inject_fault("novita", "poll", "odd_status", times=1000, value="TASK_STATUS_RECONSIDERING")
    settings = make_settings(tmp_path, emulator, task_ceiling_seconds=0.5)
    async with Client(build_server(settings)) as client:
        task_id = (await submit(client, provider="novita"))["task_id"]
        listed = await done(client, task_id)
        assert listed["error"]["code"] == "timed_out", listed
        checked = (await client.call_tool("check_task", {"task_id": task_id})).structured_content
    assert checked["status"] == "running"
    assert "timed out" in checked["warnings"][0] and "resumed watching" in checked["warnings"][0], checked


async def test_an_orphaned_submit_is_reported_at_once_and_found_by_adoption(tmp_path, emulator):
    from kling_video_mcp.models import GenerationRequest, TaskRecord
    from kling_video_mcp.journal.sqlite import SqliteJournal

    settings = make_settings(tmp_path, emulator)
    journal = SqliteJournal(settings.journal_path)
    request = GenerationRequest(provider="novita", mode="4k", kind="t2v", prompt="cut off by kill -9", duration=3)
    await journal.save(TaskRecord(
        task_id="e" * 32, provider="novita", mode="4k", kind="t2v", endpoint="kling-v3.0-4k-t2v", request=request,
        fingerprint=request.fingerprint(), estimated_cost_usd=1.26,
    ))  # fmt: skip  (journaled a moment ago, as a kill -9 mid-submit leaves it)
    await journal.aclose()
    async with httpx2.AsyncClient() as http:  # what the cut-off submit made at the provider
        made = await http.post(
            emulator.url("novita") + "/v3/async/kling-v3.0-4k-t2v",
            json={"prompt": "cut off by kill -9", "duration": 3},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    async with Client(build_server(settings)) as client:
        checked = await client.call_tool("check_task", {"task_id": "e" * 32})
        error = checked.structured_content["error"]
        assert error["code"] == "unknown_outcome" and "$1.26" in error["message"] and "dashboard" in error["message"]
        adopted = await client.call_tool(
            "check_task", {"task_id": made.json()["task_id"], "provider": "novita", "mode": "4k"}
        )
        assert adopted.structured_content["task_id"] == "e" * 32, adopted.structured_content
        finished = await done(client, "e" * 32)
    assert finished["status"] == "succeeded" and finished["estimated_cost_usd"] == 1.26, finished


async def test_a_submit_cut_off_by_kill_9_is_reported_at_once_after_restart(tmp_path, emulator):
    """A real kill -9 while the provider holds the submit: the next server says so at once."""
    import signal
    import sys

    from mcp import StdioServerParameters
    from test_restart import RECORD_PID_AND_SERVE

    emulator.inject_fault("novita", "submit", "hang", seconds=30)  # the task is made; the answer never comes
    pid_file = tmp_path / "server.pid"
    first = StdioServerParameters(
        command=sys.executable, args=["-c", RECORD_PID_AND_SERVE, str(pid_file)], env=server_env(emulator, tmp_path)
    )

    async def submit_and_die() -> None:
        try:
            async with Client(first) as client:
                await client.call_tool("generate_video", {"prompt": "in flight", "duration": 3, "provider": "novita"})
        except Exception:
            pass  # the broken pipe of the killed server

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            group.start_soon(submit_and_die)
            await eventually(lambda: submits(emulator, "novita"), timeout=60, interval=0.02, what="the submit reached the provider")
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
            group.cancel_scope.cancel()
    restarted = StdioServerParameters(command=console_script(), args=[], env=server_env(emulator, tmp_path))
    async with Client(restarted) as client:
        listed = (await client.call_tool("list_tasks", {})).structured_content["tasks"]
    assert len(listed) == 1 and listed[0]["status"] == "failed", listed
    error = listed[0]["error"]
    assert error["code"] == "unknown_outcome" and "check_task" in error["message"] and "$1.26" in error["message"]


# -- 3. secrets -------------------------------------------------------------------------------


def test_a_base_url_with_credentials_is_refused_at_start_up(tmp_path, emulator):
    env = server_env(emulator, tmp_path, WAVESPEED_BASE_URL="https://alice:hunter2-pass@proxy.example/wavespeed")
    run = subprocess.run([console_script()], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "WAVESPEED_BASE_URL" in run.stderr and "must not carry credentials" in run.stderr and "WAVESPEED_API_KEY" in run.stderr
    assert "hunter2" not in run.stderr + run.stdout


@pytest.mark.parametrize("target", ["submit", "poll"])
async def test_a_provider_that_echoes_the_key_never_shows_it(tmp_path, emulator, caplog, target):
    token = "http-token-that-must-stay-secret"
    settings = make_settings(tmp_path, emulator, http_token=token)
    emulator.inject_fault("wavespeed", target, "echo_key", status=401, message=f"Invalid key (token {token})")
    caplog.set_level(logging.DEBUG)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("generate_video", {"prompt": PROMPT, "provider": "wavespeed"})
        if not result.is_error:
            result = await wait_done(client, result.structured_content["task_id"])
    report = result.structured_content
    assert report["error"]["code"] == "auth_error", report
    assert "Bearer [redacted]" in report["error"]["message"] and "[redacted])" in report["error"]["message"]
    seen = [json.dumps(report), result.content[0].text, *(record.getMessage() for record in caplog.records)]
    seen.append(settings.journal_path.read_bytes().decode(errors="replace"))
    for text in seen:
        assert KEY not in text and token not in text


def test_tokens_in_query_strings_are_redacted_in_the_access_log(tmp_path):
    from test_http import http_server, sandbox_env

    with http_server(sandbox_env(tmp_path), log_dir=tmp_path) as server:
        answer = httpx2.get(f"{server.base}/healthz?token=tok-SECRET-1&sig=sig-SECRET-2&api_key=key-SECRET-3&page=2")
        assert answer.status_code == 200
        log = eventually_sync(server.log, lambda text: "/healthz?" in text, timeout=10, what="the access line in the log")
    assert "/healthz?token=[redacted]&sig=[redacted]&api_key=[redacted]&page=2" in log, log[-2000:]
    assert "SECRET" not in log


# -- 4. input that must not slip through ------------------------------------------------------


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 60-odd-byte PNG whose header declares ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 8)) + chunk(b"IEND", b"")


async def test_hostile_images_are_refused_naming_the_field(client, emulator, tmp_path):
    import base64

    truncated = png_bytes()[:60]
    (tmp_path / "truncated.png").write_bytes(truncated)
    (tmp_path / "huge.png").write_bytes(huge_png())
    cases = {
        str(tmp_path / "truncated.png"): "damaged or truncated",
        "data:image/png;base64," + base64.b64encode(truncated).decode(): "damaged or truncated",
        str(tmp_path / "huge.png"): "megapixels",
        "~nosuchuser/x.png": "cannot be found",
        "file://fileserver.example/share/x.png": "file:// URI must name a file on this machine",
    }
    for image, said in cases.items():
        result = await client.call_tool("animate_image", {"image": image, "prompt": "on", "provider": "novita"})
        error = result.structured_content["error"]
        assert error["code"] == "validation_error" and error["message"].startswith("image: ") and said in error["message"], (image[:40], error)
    assert total_requests(emulator) == 0


async def test_a_nul_in_an_image_path_over_http_is_a_validation_error(tmp_path, emulator):
    """Served as over HTTP: local images only from KLING_MCP_IMAGE_DIRS."""
    settings = make_settings(tmp_path, emulator)
    async with Client(build_server(settings, clip_base_url="http://127.0.0.1:8000", image_dirs=[tmp_path])) as client:
        result = await client.call_tool("animate_image", {"image": f"{tmp_path}/x.png\x00.txt", "prompt": "on", "provider": "novita"})
    error = result.structured_content["error"]
    assert error["code"] == "validation_error" and "image: " in error["message"] and "NUL" in error["message"], error
    assert total_requests(emulator) == 0


async def test_an_image_dir_file_is_read_where_it_was_checked(tmp_path, emulator, monkeypatch):
    """A symlink swapped between the folder check and the read must not lead outside the folder."""
    from kling_video_mcp.tasks import images

    allowed, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    allowed.mkdir()
    elsewhere.mkdir()
    (allowed / "in.png").write_bytes(png_bytes(color="teal"))
    (elsewhere / "secret.png").write_bytes(png_bytes(color="red"))
    link = allowed / "link.png"
    link.symlink_to(allowed / "in.png")
    checked = images._inside

    def check_then_swap(path, folders):
        inside = checked(path, folders)
        link.unlink()
        link.symlink_to(elsewhere / "secret.png")  # the race, made certain
        return inside

    monkeypatch.setattr(images, "_inside", check_then_swap)
    settings = make_settings(tmp_path, emulator)
    async with Client(build_server(settings, clip_base_url="http://127.0.0.1:8000", image_dirs=[allowed])) as client:
        result = await client.call_tool("animate_image", {"image": str(link), "prompt": "on", "provider": "wavespeed"})
    assert not result.is_error, result.structured_content
    [sent] = (emulator.emulator.store.root / "uploads").iterdir()  # what WaveSpeed received
    assert sent.read_bytes() == png_bytes(color="teal")


async def test_a_nul_in_a_clip_name_is_not_found(tmp_path):
    from kling_video_mcp.config import Settings
    from kling_video_mcp.surface.http import HttpConfig, build_app

    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "x.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    settings = Settings(output_dir=tmp_path / "clips", state_dir=tmp_path / "state")
    app = build_app(settings, HttpConfig())
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
        assert (await http.get("/clips/x.mp4")).status_code == 200
        answer = await http.get("/clips/x.mp4%00.txt")
    assert answer.status_code == 404 and "Traceback" not in answer.text


async def test_an_odd_task_id_from_the_provider_stays_in_its_path_segment(client, emulator):
    emulator.inject_fault("wavespeed", "submit", "task_id", value="../../x?inject=1")
    report = await submit(client, provider="wavespeed")
    await done(client, report["task_id"])
    polls = [r for r in emulator.requests("wavespeed") if r["method"] == "GET"]
    # Sent as /api/v3/predictions/..%2F..%2Fx%3Finject%3D1/result: one segment, not /api/x?inject=1.
    assert polls and all(r["path"].startswith("/api/v3/predictions/") and r["path"].endswith("/result") for r in polls), polls
    assert all(not r["query"] for r in polls)  # "?inject=1" was sent encoded, inside the id


async def test_an_odd_task_id_is_refused_at_adoption(client, emulator):
    result = await client.call_tool("check_task", {"task_id": "../../x?inject=1", "provider": "wavespeed", "mode": "std"})
    error = result.structured_content["error"]
    assert error["code"] == "validation_error" and error["message"].startswith("task_id:"), error
    assert total_requests(emulator) == 0
