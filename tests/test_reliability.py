"""Never lose a paid clip: faults on every leg of a task, idempotency, the ceiling, recovery."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client

from conftest import KEY, make_settings
from helpers import eventually, submits, wait_done
from kling_video_mcp.surface.server import build_server

pytestmark = pytest.mark.anyio


def media_gets(emulator, flavor: str) -> list[dict]:
    return [r for r in emulator.requests(flavor) if r["method"] == "GET" and "/__fake/media/" in r["path"]]


def polls(emulator, flavor: str) -> list[dict]:
    return [r for r in emulator.requests(flavor) if "task-result" in r["path"] or "/predictions/" in r["path"]]


async def submit(client, **arguments):
    result = await client.call_tool("generate_video", {"prompt": "a windmill in a storm", "duration": 3, **arguments})
    assert not result.is_error, result.structured_content
    return result.structured_content


async def test_journaled_before_the_tool_returns(client, settings):
    report = await submit(client, provider="wavespeed")
    with sqlite3.connect(settings.journal_path) as db:
        row = db.execute("SELECT provider, provider_task_id, record FROM tasks WHERE task_id = ?", (report["task_id"],)).fetchone()
    provider, provider_task_id, record = row
    assert provider == "wavespeed" and provider_task_id
    record = json.loads(record)
    assert record["request"]["prompt"] == "a windmill in a storm"
    assert record["estimated_cost_usd"] == pytest.approx(1.26)
    assert record["endpoint"] == "kwaivgi/kling-v3.0-4k/text-to-video"


async def test_clip_is_fetched_without_anyone_asking(client, settings):
    report = await submit(client, provider="novita")
    await eventually(lambda: list(settings.output_dir.glob("*.mp4")), timeout=20, what="a clip in the output folder")
    [clip] = settings.output_dir.glob("*.mp4")
    assert report["task_id"][:12] in clip.name
    # Its companions are written atomically beside it right after; once they are, nothing temporary is left.
    await eventually(
        lambda: not list(settings.output_dir.glob("*.part")),
        timeout=20, what="no temporary file left beside the clip and its companions",
    )


async def test_submit_429_is_retried_honouring_retry_after(client, emulator):
    emulator.inject_fault("novita", "submit", "status", times=2, status=429, retry_after=0.2)
    started = anyio.current_time()
    report = await submit(client, provider="novita")
    assert anyio.current_time() - started >= 0.4  # waited what Retry-After asked, twice
    assert len(submits(emulator, "novita")) == 3
    assert (await wait_done(client, report["task_id"])).structured_content["status"] == "succeeded"


async def test_a_retry_after_beyond_the_budget_gives_up_at_once(client, emulator):
    emulator.inject_fault("novita", "submit", "status", times=1, status=429, retry_after=60)
    started = anyio.current_time()
    result = await client.call_tool("generate_video", {"prompt": "a tram", "provider": "novita"})
    assert anyio.current_time() - started < 20  # not the 60 s asked for: the tool call must return
    assert result.structured_content["error"]["code"] == "rate_limited"
    assert len(submits(emulator, "novita")) == 1


@pytest.mark.parametrize(
    ("kind", "params"), [("created_then_status", {"status": 502}), ("status", {"status": 500})]
)
async def test_submit_that_may_have_reached_the_provider_is_never_resent(client, emulator, kind, params):
    emulator.inject_fault("highway", "submit", kind, **params)
    result = await client.call_tool("generate_video", {"prompt": "a lantern", "provider": "highway"})
    assert result.is_error
    report = result.structured_content
    assert report["error"]["code"] == "unknown_outcome"
    assert report["task_id"]
    message = report["error"]["message"]
    assert "$2.10" in message and "check_task" in message and "not re-sent" in message
    assert len(submits(emulator, "highway")) == 1

    again = await client.call_tool("generate_video", {"prompt": "a lantern", "provider": "highway"})
    assert again.structured_content["task_id"] == report["task_id"]  # the same record, not a second payment
    assert len(submits(emulator, "highway")) == 1
    checked = await client.call_tool("check_task", {"task_id": report["task_id"]})
    assert checked.structured_content["error"]["code"] == "unknown_outcome"


async def test_submit_read_timeout_is_an_unknown_outcome(tmp_path, emulator):
    emulator.inject_fault("novita", "submit", "hang", seconds=3)
    settings = make_settings(tmp_path, emulator, read_timeout=0.5)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("generate_video", {"prompt": "fog", "provider": "novita"})
    assert result.structured_content["error"]["code"] == "unknown_outcome"
    assert len(submits(emulator, "novita")) == 1


@pytest.mark.parametrize("status", [429, 503])
async def test_poll_errors_are_retried_and_never_fail_the_task(client, emulator, status):
    emulator.inject_fault("wavespeed", "poll", "status", times=3, status=status)
    report = await submit(client, provider="wavespeed")
    done = await wait_done(client, report["task_id"])
    assert done.structured_content["status"] == "succeeded", done.structured_content


async def test_cut_off_download_is_resumed_and_verified(client, emulator, settings):
    emulator.inject_fault("novita", "media", "truncate", fraction=0.4)
    report = await submit(client, provider="novita")
    done = (await wait_done(client, report["task_id"])).structured_content
    assert done["status"] == "succeeded"
    gets = media_gets(emulator, "novita")
    assert len(gets) >= 2 and any("range" in r["headers"] for r in gets[1:])
    async with httpx2.AsyncClient() as http:  # the emulator's own copy, for comparison
        original = (await http.get(done["provider_video_url"])).content
    clip = Path(done["file_path"]).read_bytes()
    assert clip == original and done["size_bytes"] == len(original)
    assert done["sha256"] == hashlib.sha256(original).hexdigest()
    assert not list(settings.output_dir.glob("*.part"))


async def test_expired_result_url_is_refreshed_from_the_provider(client, emulator):
    emulator.inject_fault("wavespeed", "media", "expired", times=2)
    report = await submit(client, provider="wavespeed")
    done = (await wait_done(client, report["task_id"])).structured_content
    assert done["status"] == "succeeded"
    assert len(media_gets(emulator, "wavespeed")) == 3
    assert len(polls(emulator, "wavespeed")) >= 3  # a fresh result was fetched after each refusal


async def test_links_that_never_work_fail_plainly(client, emulator):
    emulator.inject_fault("novita", "media", "expired", times=50)
    report = await submit(client, provider="novita")
    done = await wait_done(client, report["task_id"])
    assert done.is_error
    message = done.structured_content["error"]["message"]
    assert "download links kept failing" in message and "fresh" in message


async def test_a_provider_that_is_down_does_not_stop_the_others(tmp_path, emulator):
    settings = make_settings(tmp_path, emulator, novita_base_url="http://127.0.0.1:9")
    async with Client(build_server(settings)) as client:
        down = await client.call_tool("generate_video", {"prompt": "x", "provider": "novita"})
        assert down.structured_content["error"]["code"] == "provider_unreachable"
        report = await submit(client, provider="highway")
        assert (await wait_done(client, report["task_id"])).structured_content["status"] == "succeeded"


async def test_identical_request_returns_the_existing_task(client, emulator):
    first = await submit(client, provider="novita", sound=True)
    second = await submit(client, provider="novita", sound=True)
    assert second["task_id"] == first["task_id"] and second["reused_existing"] is True
    assert "force_new" in second["message"]
    other = await submit(client, provider="novita", sound=False)
    assert other["task_id"] != first["task_id"]
    forced = await submit(client, provider="novita", sound=True, force_new=True)
    assert forced["task_id"] != first["task_id"]
    assert len(submits(emulator, "novita")) == 3


async def test_idempotency_window_is_configurable(tmp_path, emulator):
    settings = make_settings(tmp_path, emulator, idempotency_window_seconds=0)
    async with Client(build_server(settings)) as client:
        first, second = await submit(client), await submit(client)
    assert first["task_id"] != second["task_id"]


async def test_a_task_that_never_finishes_times_out_and_can_be_checked_again(tmp_path, emulator):
    settings = make_settings(tmp_path, emulator, task_ceiling_seconds=0.5)
    async with Client(build_server(settings)) as client:
        report = await submit(client, prompt="forever [[slow]]", provider="novita")
        done = await wait_done(client, report["task_id"])
        assert done.structured_content["error"]["code"] == "timed_out"
        assert done.structured_content["error"]["retryable"] is True
        provider_task_id = polls(emulator, "novita")[0]["query"]["task_id"]
        emulator.complete("novita", provider_task_id)
        again = await wait_done(client, report["task_id"])
    assert again.structured_content["status"] == "succeeded", again.structured_content


async def test_recover_a_task_submitted_elsewhere(client, emulator):
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            emulator.url("novita") + "/v3/async/kling-v3.0-pro-t2v",
            json={"prompt": "made by another tool", "duration": 3},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    provider_task_id = response.json()["task_id"]
    first = await client.call_tool("check_task", {"task_id": provider_task_id, "provider": "novita", "mode": "pro"})
    assert not first.is_error, first.structured_content
    done = await wait_done(client, first.structured_content["task_id"])
    assert done.structured_content["status"] == "succeeded"
    unknown = await client.call_tool("check_task", {"task_id": "0" * 32, "provider": "novita", "mode": "pro"})
    assert unknown.structured_content["error"]["code"] == "not_found"


async def test_api_key_never_appears_in_results_or_logs(tmp_path, emulator, caplog):
    secret = "sk-secret-value-42"
    settings = make_settings(tmp_path, emulator, wavespeed_api_key=secret, novita_api_key=secret)
    emulator.inject_fault("novita", "poll", "status", times=1, status=500)
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    async with Client(build_server(settings)) as client:
        for arguments in ({"provider": "wavespeed"}, {"provider": "novita"}):
            result = await client.call_tool("generate_video", {"prompt": "x", **arguments})
            seen.append(json.dumps(result.structured_content) + result.content[0].text)
            if not result.is_error:
                done = await wait_done(client, result.structured_content["task_id"])
                seen.append(json.dumps(done.structured_content))
    seen += [record.getMessage() for record in caplog.records]
    assert seen and not any(secret in text for text in seen)


HOLD_LOCK = "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(60)"


async def test_a_clip_another_process_is_downloading_is_left_to_it(client, settings):
    report = await submit(client, prompt="a harbour at dawn [[render:40]]", provider="novita")  # 2 s render
    lock = settings.state_dir / "locks" / f"{report['task_id']}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        await anyio.sleep(3)  # the render is over; this server must not download meanwhile
        waiting = await client.call_tool("check_task", {"task_id": report["task_id"]})
        assert waiting.structured_content["status"] == "running"
        assert "downloading" in waiting.structured_content["message"]
        assert not list(settings.output_dir.glob("*.mp4*"))
    finally:
        holder.kill()
        holder.wait()
    done = await wait_done(client, report["task_id"])
    assert done.structured_content["status"] == "succeeded"


async def test_an_outage_that_mentions_credit_is_not_an_empty_account(client, emulator):
    emulator.inject_fault("wavespeed", "poll", "status", times=1, status=503, message="billing/credit service unavailable")
    report = await submit(client, provider="wavespeed")
    done = await wait_done(client, report["task_id"])
    assert done.structured_content["status"] == "succeeded", done.structured_content


async def test_concurrent_identical_requests_pay_once(client, emulator):
    results: list[dict] = []

    async def one() -> None:
        results.append(await submit(client, prompt="twins", provider="novita"))

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(one)
    assert len({result["task_id"] for result in results}) == 1
    assert len(submits(emulator, "novita")) == 1


async def test_concurrent_requests_cannot_overrun_the_budget(tmp_path, emulator):
    settings = make_settings(tmp_path, emulator, budget_usd=2.5)  # room for one 3 s 4K clip ($1.26), not two
    outcomes: list[str] = []
    async with Client(build_server(settings)) as client:

        async def one(prompt: str) -> None:
            result = await client.call_tool("generate_video", {"prompt": prompt, "duration": 3})
            outcomes.append(result.structured_content["error"]["code"] if result.is_error else "submitted")

        async with anyio.create_task_group() as group:
            for prompt in ("one", "two", "three"):
                group.start_soon(one, prompt)
    assert sorted(outcomes) == ["budget_exceeded", "budget_exceeded", "submitted"]
    assert len(submits(emulator, "novita")) == 1


async def test_a_local_fault_does_not_take_the_server_down(tmp_path, emulator):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the output folder should be")
    settings = make_settings(tmp_path, emulator, output_dir=blocked)
    async with Client(build_server(settings)) as client:
        report = await submit(client, provider="novita")
        failed = await eventually(  # the render ends and the download fails
            lambda: client.call_tool("check_task", {"task_id": report["task_id"]}),
            lambda result: result.structured_content.get("error"), timeout=20, what="the download failed",
        )  # fmt: skip
        checked = failed.structured_content
        assert checked["error"]["code"] == "storage_error" and str(blocked) in checked["error"]["message"], checked
        other = await client.call_tool("generate_video", {"prompt": "still serving", "provider": "highway", "dry_run": True})
        assert not other.is_error


async def test_a_submit_cut_off_by_a_crash_is_settled_as_unknown(tmp_path, emulator):
    from datetime import timedelta

    from kling_video_mcp.models import GenerationRequest, TaskRecord, utcnow
    from kling_video_mcp.journal.sqlite import SqliteJournal

    settings = make_settings(tmp_path, emulator)
    journal = SqliteJournal(settings.journal_path)
    request = GenerationRequest(provider="novita", mode="4k", kind="t2v", prompt="lost in flight")
    await journal.save(TaskRecord(
        task_id="f" * 32, provider="novita", mode="4k", kind="t2v", endpoint="kling-v3.0-4k-t2v", request=request,
        fingerprint=request.fingerprint(), estimated_cost_usd=2.10, created_at=utcnow() - timedelta(hours=1),
    ))  # fmt: skip
    await journal.aclose()
    async with Client(build_server(settings)) as client:
        checked = await client.call_tool("check_task", {"task_id": "f" * 32})
    error = checked.structured_content["error"]
    assert error["code"] == "unknown_outcome" and "$2.10" in error["message"] and "dashboard" in error["message"]


async def test_a_dry_run_prices_even_right_after_the_same_request(client, emulator):
    await submit(client, provider="novita")
    priced = await client.call_tool(
        "generate_video", {"prompt": "a windmill in a storm", "duration": 3, "provider": "novita", "dry_run": True}
    )
    assert priced.structured_content["dry_run"] is True and priced.structured_content["task_id"] is None
