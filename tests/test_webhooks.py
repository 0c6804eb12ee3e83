"""Webhooks instead of polling, end to end: the emulator calls back like the providers,
workers on one PostgreSQL journal receive it, and the task's lease holder polls once.

Every worker's ``KLING_MCP_PUBLIC_URL`` names the first worker, as a load balancer would: tasks
are submitted on the second, so the webhook reaches a worker that does not hold the lease and
must pass the word on. Nothing here calls ``check_task``, which asks for polls of its own:
delivery is watched in the database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest

from kling_video_mcp.models import GenerationRequest, TaskRecord
from kling_video_mcp.tasks.watcher import Pace, next_poll_delay
from helpers import eventually
from workers import connect, delivered, query, wait_delivered, workers

pytestmark = pytest.mark.anyio

PUBLIC = {"KLING_MCP_PUBLIC_URL": "http://127.0.0.1:{port0}"}


def polls(emulator, flavor: str) -> list[dict]:
    return [
        r for r in emulator.requests(flavor)
        if r["method"] == "GET" and ("task-result" in r["path"] or "/predictions/" in r["path"])
    ]  # fmt: skip


def webhook_url(emulator, flavor: str) -> str:
    """The webhook URL the (only) submit carried, read from what the emulator received."""
    (submit,) = [r for r in emulator.requests(flavor) if r["method"] == "POST" and "upload" not in r["path"]]
    return submit["query"]["webhook"] if flavor == "wavespeed" else submit["json"]["extra"]["webhook"]["url"]


def test_while_a_webhook_is_expected_polls_are_only_a_safety_net():
    request = GenerationRequest(provider="novita", mode="std", kind="t2v", prompt="a gull")
    record = TaskRecord(
        task_id="t", provider="novita", mode="std", kind="t2v", endpoint="kling-v3.0-std-t2v", request=request,
        fingerprint=request.fingerprint(), status="running", eta_seconds=40,
    )  # fmt: skip
    polling = Pace(expected_seconds=90, min_interval=2, max_interval=30)
    hooked = Pace(expected_seconds=90, min_interval=2, max_interval=30, webhook=True)
    assert next_poll_delay(record, polling) == 20  # half the remaining 40 s
    assert next_poll_delay(record, hooked) == 40 + 45  # past the end by half the usual render time
    record.eta_seconds = None
    record.created_at = record.created_at.replace(year=2000)  # long overdue
    assert next_poll_delay(record, hooked) == 45  # then every half of the usual render time
    record.status = "succeeded"
    assert next_poll_delay(record, hooked) == 0  # the download never waits


@pytest.fixture
def emulator_settings(emulator) -> Iterator[None]:
    """Puts the shared emulator's webhook settings back after a test that changed them."""
    yield
    emulator.config.update({"drop_webhooks": False})


async def submit(server, flavor: str, prompt: str) -> str:
    async with connect(server) as client:
        result = await client.call_tool("generate_video", {"prompt": prompt, "duration": 3, "provider": flavor})
    assert not result.is_error, result.structured_content
    return result.structured_content["task_id"]


@pytest.mark.parametrize("flavor", ["novita", "wavespeed"])
async def test_a_webhook_finishes_the_task_with_at_most_two_polls(emulator, tmp_path, database_url, flavor):
    with workers(emulator, tmp_path, database_url, count=2, **PUBLIC) as (first, second):
        task_id = await submit(second, flavor, "a hummingbird")
        wait_delivered(database_url, [task_id])
        logs = first.log() + second.log()
    url = webhook_url(emulator, flavor)
    assert url.startswith(f"{first.base}/webhooks/") and len(urlsplit(url).path.rsplit("/", 1)[1]) >= 40
    assert [hook["status"] for hook in emulator.emulator.webhooks] == [202]
    assert len(polls(emulator, flavor)) <= 2
    token = urlsplit(url).path.rsplit("/", 1)[1]
    assert "POST /webhooks/…" in logs and token not in logs


async def test_a_dropped_webhook_is_covered_by_the_safety_net(emulator, emulator_settings, tmp_path, database_url):
    emulator.config.update({"drop_webhooks": True})
    with workers(emulator, tmp_path, database_url, count=2, **PUBLIC) as (_first, second):
        task_id = await submit(second, "novita", "a heron, unannounced [[render:40]]")  # 2 s
        wait_delivered(database_url, [task_id], timeout=60)
    assert emulator.emulator.webhooks == []
    assert 2 <= len(polls(emulator, "novita")) <= 4  # the first poll and the safety net's, not a steady stream


async def test_forged_webhooks_change_nothing(emulator, tmp_path, database_url):
    # Polls ten times slower than the suite's usual pace: the safety net's next poll is over a minute
    # after the first, so every poll counted here is one the webhooks caused, even on a slow machine.
    slower = {"KLING_MCP_POLL_TIME_SCALE": "0.2"}
    with workers(emulator, tmp_path, database_url, count=2, **PUBLIC, **slower) as (first, second):
        task_id = await submit(second, "novita", "a lighthouse that never finishes [[slow]]")
        url = webhook_url(emulator, "novita")
        await eventually(lambda: polls(emulator, "novita"), timeout=10, interval=0.02, what="a first poll")
        before = query(database_url, "SELECT record FROM tasks")
        forged_body = {"event_type": "ASYNC_TASK_RESULT", "payload": {"task": {"status": "TASK_STATUS_SUCCEED"}}}
        async with httpx2.AsyncClient(timeout=10) as http:
            unknown = await http.post(f"{first.base}/webhooks/{'x' * 43}", json=forged_body)
            assert unknown.status_code == 404
            assert query(database_url, "SELECT record FROM tasks") == before
            oversized = await http.post(url, content=b"{" + b" " * 300_000 + b"}")
            assert oversized.status_code == 413
            polled = len(polls(emulator, "novita"))
            started = time.monotonic()
            known = await http.post(url, json=forged_body)
        # Answered at once, and the only effect is one early poll, which finds the task still running.
        assert known.status_code == 202 and time.monotonic() - started < 1.0
        await eventually(lambda: len(polls(emulator, "novita")) > polled, timeout=10, interval=0.02, what="the early poll")
        await anyio.sleep(0.5)
        async with connect(first) as client:
            listed = await client.call_tool("list_tasks", {})
    (row,) = listed.structured_content["tasks"]
    assert row["status"] in ("queued", "running") and not delivered(database_url, task_id)
    assert len(polls(emulator, "novita")) == polled + 1
    assert not list((tmp_path / "clips").glob("*.mp4"))


class _FlakyReceiver:
    """A webhook receiver on loopback that answers 500 to the first ``failures`` calls, then 204."""

    def __init__(self, failures: int) -> None:
        import http.server
        import json
        import threading

        received: list[dict] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the standard library's name
                received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(500 if len(received) <= failures else 204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.received = received
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


async def test_the_emulator_retries_a_webhook_until_it_gets_a_2xx(emulator):
    receiver = _FlakyReceiver(failures=2)
    try:
        async with httpx2.AsyncClient(headers={"Authorization": "Bearer test-key"}, timeout=10) as http:
            body = {"prompt": "a kite", "duration": 3, "extra": {"webhook": {"url": receiver.url}}}
            submitted = await http.post(emulator.url("novita") + "/v3/async/kling-v3.0-std-t2v", json=body)
            assert submitted.status_code == 200, submitted.text
            await eventually(lambda: len(emulator.emulator.webhooks) >= 3, timeout=20, interval=0.02, what="three webhook calls")
    finally:
        receiver.close()
    assert [hook["status"] for hook in emulator.emulator.webhooks] == [500, 500, 204]
    event = receiver.received[-1]
    assert event["event_type"] == "ASYNC_TASK_RESULT"  # docs/providers.md#novita-webhooks: the Task Result, wrapped
    assert event["payload"]["task"]["status"] == "TASK_STATUS_SUCCEED" and event["payload"]["videos"][0]["video_url"]


async def test_a_refused_webhook_url_is_dropped_and_the_task_polled(emulator, tmp_path):
    """WaveSpeed documents a public HTTPS webhook URL (docs/providers.md#wavespeed-webhooks); if it refuses ours, the
    refusal created nothing, so the submit goes once more without it."""
    from mcp import Client

    from conftest import make_settings
    from helpers import submits, wait_done
    from kling_video_mcp.surface.server import build_server

    emulator.inject_fault("wavespeed", "submit", "status", status=400)
    settings = make_settings(tmp_path, emulator, public_url="http://127.0.0.1:9")
    async with Client(build_server(settings)) as client:
        submitted = await client.call_tool("generate_video", {"prompt": "a crane", "duration": 3, "provider": "wavespeed"})
        assert not submitted.is_error, submitted.structured_content
        done = await wait_done(client, submitted.structured_content["task_id"])
    assert done.structured_content["status"] == "succeeded"
    sent = submits(emulator, "wavespeed")
    assert len(sent) == 2 and "webhook" in sent[0]["query"] and "webhook" not in sent[1]["query"]

