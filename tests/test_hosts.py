"""Kling's own API, fal.ai and Replicate end to end: the real MCP server through ``mcp.Client``
against each host's emulator flavour.

Every mode each rules table allows, text and image to video, multi-shot, sound and an end
frame land a clip on disk; a bad key, a content refusal, an empty account, a rate limit and an
HTTP-200 error each give their error code with nothing re-sent; a server killed mid-render
delivers the clip once after restart; Kling's concurrency limit holds submits instead of failing
them; Replicate's signed webhook makes delivery prompt and a forged one changes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client

from conftest import KEY, POLL_TIME_SCALE, make_settings
from helpers import clip_duration, wait_done
from kling_video_mcp.cli import main
from kling_video_mcp.providers import provider_class
from kling_video_mcp.surface.server import build_server
from test_http import free_port, http_server
from test_mcp_tasks import ask, create, opt_in
from test_restart import deliver_after_restart, submit_then_kill
from test_stdio import server_env
from workers import connect

pytestmark = pytest.mark.anyio

HOSTS = ("kling", "fal", "replicate")
SUBMIT_PATHS = {"kling": "/v1/videos/", "fal": "/fal-ai/kling-video/v3/", "replicate": "/predictions"}
"""A task-creating POST's path on each flavour (uploads and control calls excluded)."""


def host_settings(tmp_path: Path, emulator, **overrides: object):
    """Settings against the emulator, with Kling's JWTs signed by the secret the emulator checks."""
    return make_settings(tmp_path, emulator, kling_secret_key=emulator.config.kling_secret_key, **overrides)


def submits(emulator, host: str) -> list[dict]:
    return [
        request for request in emulator.requests(host)
        if request["method"] == "POST" and SUBMIT_PATHS[host] in request["path"] and "/cancel" not in request["path"]
    ]  # fmt: skip


def sent_body(emulator, host: str) -> dict:
    """The model input of the (only) submit: Replicate wraps it in ``input``."""
    (submit,) = submits(emulator, host)
    body = submit["json"]
    return body["input"] if host == "replicate" else body


def routes(host: str) -> list[tuple[str, str]]:
    return sorted(provider_class(host).rules_table)


async def render(client: Client, tool: str, arguments: dict, timeout: float = 60) -> dict:
    submitted = await client.call_tool(tool, arguments)
    assert not submitted.is_error, submitted.structured_content
    done = await wait_done(client, submitted.structured_content["task_id"], timeout=timeout)
    return done.structured_content


@pytest.mark.parametrize(("host", "kind", "mode"), [(host, kind, mode) for host in HOSTS for kind, mode in routes(host)])
async def test_every_route_the_rules_allow_delivers_a_clip(tmp_path, emulator, png_file, host, kind, mode):
    async with Client(build_server(host_settings(tmp_path, emulator))) as client:
        if kind == "t2v":
            report = await render(client, "generate_video", {"prompt": "a fox in snow", "provider": host, "mode": mode, "duration": 3})
        else:
            report = await render(client, "animate_image", {"image": str(png_file), "prompt": "it turns", "provider": host, "mode": mode, "duration": 3})
    assert report["status"] == "succeeded", report
    assert Path(report["file_path"]).parent == tmp_path / "clips"
    assert clip_duration(report["file_path"]) == pytest.approx(3, abs=0.1)
    assert len(submits(emulator, host)) == 1


EXPECTED_BODIES = {
    # host: (multi-shot fields, sound field) in the host's own names and types
    "kling": ({"multi_shot": True, "shot_type": "customize", "multi_prompt": [
        {"index": 1, "prompt": "a door opens", "duration": "2"}, {"index": 2, "prompt": "a cat walks in", "duration": "3"}]},
        {"sound": "on"}),
    "fal": ({"shot_type": "customize", "multi_prompt": [
        {"prompt": "a door opens", "duration": "2"}, {"prompt": "a cat walks in", "duration": "3"}]},
        {"generate_audio": True}),
    "replicate": ({"multi_prompt": json.dumps([{"prompt": "a door opens", "duration": 2}, {"prompt": "a cat walks in", "duration": 3}])},
                  {"generate_audio": True}),
}  # fmt: skip
SHOTS = [{"prompt": "a door opens", "duration": 2}, {"prompt": "a cat walks in", "duration": 3}]


@pytest.mark.parametrize("host", HOSTS)
async def test_multi_shot_with_sound(tmp_path, emulator, host):
    arguments = {"multi_prompt": SHOTS, "duration": 5, "sound": True, "provider": host, "mode": "pro"}
    if host == "replicate":
        arguments["prompt"] = "a short scene in a kitchen"  # the model always wants prompt
    async with Client(build_server(host_settings(tmp_path, emulator))) as client:
        report = await render(client, "generate_video", arguments)
    assert report["status"] == "succeeded", report
    assert clip_duration(report["file_path"]) == pytest.approx(5, abs=0.1)
    shots, sound = EXPECTED_BODIES[host]
    body = sent_body(emulator, host)
    assert body.items() >= {**shots, **sound}.items(), body


END_FRAME_FIELDS = {"kling": ("image", "image_tail"), "fal": ("start_image_url", "end_image_url"), "replicate": ("start_image", "end_image")}


@pytest.mark.parametrize("host", HOSTS)
async def test_first_and_last_frame_from_local_files(tmp_path, emulator, png_file, host):
    last = tmp_path / "last-frame.png"
    last.write_bytes(png_file.read_bytes())
    arguments = {"image": str(png_file), "end_image": str(last), "prompt": "the light changes", "provider": host, "mode": "pro", "duration": 3}
    async with Client(build_server(host_settings(tmp_path, emulator))) as client:
        report = await render(client, "animate_image", arguments)
    assert report["status"] == "succeeded", report
    body = sent_body(emulator, host)
    first_field, last_field = END_FRAME_FIELDS[host]
    assert body[first_field] and body[last_field]
    if host == "kling":  # inline, raw base64: no data: prefix
        assert not body[first_field].startswith(("data:", "http")) and not body[last_field].startswith("data:")
    else:  # uploaded first, then passed by URL
        assert body[first_field].startswith("http") and body[last_field].startswith("http")


# -- errors: each its code, nothing re-sent ------------------------------------------------------

KEY_OVERRIDES = {"kling": "kling_access_key", "fal": "fal_key", "replicate": "replicate_api_token"}


async def refused(tmp_path, emulator, host: str, prompt: str = "a quiet lake", mode: str = "pro", **overrides: object) -> dict:
    async with Client(build_server(host_settings(tmp_path, emulator, **overrides))) as client:
        result = await client.call_tool("generate_video", {"prompt": prompt, "provider": host, "mode": mode})
        assert result.is_error, result.structured_content
        await anyio.sleep(0.3)  # a re-send, if any, would come now
    return result.structured_content["error"]


@pytest.mark.parametrize("host", HOSTS)
async def test_a_bad_key_is_an_auth_error_naming_the_variable(tmp_path, emulator, host):
    error = await refused(tmp_path, emulator, host, **{KEY_OVERRIDES[host]: "not-a-key-0123456789"})
    assert error["code"] == "auth_error", error
    assert provider_class(host).key_variables[0] in error["message"]
    assert "not-a-key-0123456789" not in error["message"]
    assert len(submits(emulator, host)) <= 1


@pytest.mark.parametrize("host", HOSTS)
async def test_a_depleted_account_is_insufficient_balance_and_final(tmp_path, emulator, host):
    error = await refused(tmp_path, emulator, host, **{KEY_OVERRIDES[host]: "zero-balance-key"})
    assert (error["code"], error["retryable"]) == ("insufficient_balance", False), error
    assert len(submits(emulator, host)) == 1


@pytest.mark.parametrize("host", HOSTS)
async def test_a_content_refusal(tmp_path, emulator, host):
    """Kling refuses at the submit (1301); fal's queue takes it and its result is the 422, behind a
    COMPLETED status; Replicate fails the prediction while it runs (E005). Each is content_policy."""
    arguments = {"prompt": "something forbidden [[reject:illegal_prompt]]", "provider": host, "mode": "pro"}
    async with Client(build_server(host_settings(tmp_path, emulator))) as client:
        result = await client.call_tool("generate_video", arguments)
        if not result.is_error:
            result = await wait_done(client, result.structured_content["task_id"])
            assert result.structured_content["status"] == "failed", result.structured_content
        await anyio.sleep(0.3)
    assert result.structured_content["error"]["code"] == "content_policy", result.structured_content
    assert len(submits(emulator, host)) == 1


@pytest.mark.parametrize("host", HOSTS)
async def test_a_rate_limit_is_retried_while_nothing_exists_then_reported(tmp_path, emulator, host):
    error = await refused(tmp_path, emulator, host, submit_retry_seconds=1.0, **{KEY_OVERRIDES[host]: "ratelimited-key"})
    assert (error["code"], error["retryable"]) == ("rate_limited", True), error
    sent = len(submits(emulator, host))
    await anyio.sleep(0.5)
    assert len(submits(emulator, host)) == sent  # once reported, nothing more goes


@pytest.mark.parametrize("host", HOSTS)
async def test_an_http_200_carrying_an_error_is_that_error(tmp_path, emulator, host):
    """The flavour answers the submit 200 with its empty-account error inside (Kling: envelope code 1102)."""
    error = await refused(tmp_path, emulator, host, prompt="a quiet lake [[ok_error:submit]]")
    assert (error["code"], error["retryable"]) == ("insufficient_balance", False), error
    assert len(submits(emulator, host)) == 1


# -- restart: a kill -9 mid-render loses nothing ----------------------------------------------------


def host_env(emulator, host: str) -> dict[str, str]:
    """The environment variables that point ``host`` at its emulator flavour."""
    provider = provider_class(host)
    env = dict.fromkeys(provider.key_variables, KEY)
    env[provider.base_url_variable] = emulator.url(host)
    if host == "kling":
        env["KLING_SECRET_KEY"] = emulator.config.kling_secret_key
    return env


async def kill_9_mid_render_then_restart(emulator, tmp_path: Path, host: str) -> dict:
    """Submit over stdio, kill -9 the server mid-render, start it again; the task's final report."""

    def rendering() -> bool:
        return len(submits(emulator, host)) == 1 and len(emulator.requests(host)) >= 3  # submitted and polled

    # [[render:200]] at the emulator's 0.05 clock renders for 10 s: the kill lands mid-render.
    arguments = {"prompt": "a long pan over mountains [[render:200]]", "duration": 3, "provider": host, "mode": "pro"}
    env = host_env(emulator, host)
    task_id = await submit_then_kill(emulator, tmp_path, arguments, rendering, **env)
    return await deliver_after_restart(emulator, tmp_path, task_id, **env)


@pytest.mark.parametrize("host", HOSTS)
async def test_kill_9_mid_render_delivers_the_clip_once_after_restart(emulator, tmp_path, host):
    report = await kill_9_mid_render_then_restart(emulator, tmp_path, host)
    assert report["status"] == "succeeded", report
    assert clip_duration(report["file_path"]) == pytest.approx(3, abs=0.1)
    assert len(submits(emulator, host)) == 1  # never re-sent
    assert len(list((tmp_path / "clips").glob("*.mp4"))) == 1  # delivered once


@pytest.fixture
def fal_requests_moved(emulator):
    emulator.config.update({"fal_requests_moved": True})
    yield
    emulator.config.update({"fal_requests_moved": False})


async def test_fal_after_a_restart_follows_the_urls_its_submit_answer_gave(emulator, tmp_path, fal_requests_moved):
    """The URLs are off fal's documented layout, where alone they answer: the restarted server
    finds the render only through the URLs journaled with the task."""
    report = await kill_9_mid_render_then_restart(emulator, tmp_path, "fal")
    assert report["status"] == "succeeded", report
    followed = [r["path"] for r in emulator.requests("fal") if "/requests/" in r["path"]]
    assert followed and all(path.startswith("/queue-moved/requests/") for path in followed), followed


# -- Kling's concurrency limit ---------------------------------------------------------------------


@pytest.fixture
def kling_two_slots(emulator):
    emulator.config.update({"kling_max_running": 2})
    yield
    emulator.config.update({"kling_max_running": None})


async def test_kling_concurrency_limit_holds_submits_until_a_slot_frees(tmp_path, emulator, kling_two_slots):
    async with Client(build_server(host_settings(tmp_path, emulator))) as client:
        answers = []
        for index in range(5):
            # [[render:40]]: 2 s renders at the emulator's clock, so the five overlap and the limit bites
            arguments = {"prompt": f"shot {index} [[render:40]]", "provider": "kling", "mode": "std", "duration": 3}
            result = await client.call_tool("generate_video", arguments)
            assert not result.is_error, result.structured_content  # held, not failed
            answers.append(result.structured_content)
        for held in answers[2:]:  # over the limit: queued, saying why
            assert held["status"] == "queued" and "Waiting for a free slot" in " ".join(held["warnings"]), held
        task_ids = [answer["task_id"] for answer in answers]
        reports = [(await wait_done(client, task_id, timeout=90)).structured_content for task_id in task_ids]
    assert [report["status"] for report in reports] == ["succeeded"] * 5, reports
    async with httpx2.AsyncClient() as http:  # the emulator's own control route
        concurrency = (await http.get(f"{emulator.url('kling')}/__fake/concurrency")).json()
    assert concurrency["peak"][KEY] == 2  # the limit was reached, never passed
    assert len(submits(emulator, "kling")) > 5  # the three over the limit were refused once, held, then sent



# -- webhooks ----------------------------------------------------------------------------------------

WEBHOOK_FIELD = {"kling": ("json", "callback_url"), "fal": ("query", "fal_webhook"), "replicate": ("json", "webhook")}


def webhook_url(emulator, host: str) -> str:
    """The webhook URL the (only) submit carried, read from what the emulator received."""
    (submit,) = submits(emulator, host)
    where, field = WEBHOOK_FIELD[host]
    return submit[where][field]


@contextmanager
def public_server(emulator, tmp_path: Path, host: str) -> Iterator:
    """An HTTP server whose public URL is its own address, so each submit asks for a webhook."""
    port = free_port()
    env = server_env(emulator, tmp_path, **host_env(emulator, host), KLING_MCP_PUBLIC_URL=f"http://127.0.0.1:{port}")
    with http_server(env, log_dir=tmp_path, port=port) as server:
        yield server


async def submit_and_time_delivery(server, tmp_path: Path, host: str) -> float:
    """Seconds from the submit's answer to the clip on disk, watched on disk: ``check_task`` would poll."""
    async with connect(server) as client:
        # [[render:20]]: a 1 s render, so the watcher's first poll (at once) finds it unfinished
        arguments = {"prompt": "a hummingbird [[render:20]]", "provider": host, "mode": "pro", "duration": 3}
        submitted = await client.call_tool("generate_video", arguments)
    assert not submitted.is_error, submitted.structured_content
    started = time.monotonic()
    with anyio.fail_after(60):
        while not list((tmp_path / "clips").glob("*.mp4")):
            await anyio.sleep(0.02)
    return time.monotonic() - started


def deliveries(emulator, host: str) -> list[int]:
    """How our server answered each webhook the emulator sent for this test's task (0: not reached)."""
    url = webhook_url(emulator, host)
    return [delivery["status"] for delivery in emulator.emulator.webhooks if delivery["url"] == url]


SAFETY_NET_SECONDS = 150 * POLL_TIME_SCALE
"""When the first poll of a task that expects a webhook is due at the tests' pace, at the earliest: the
usual end of a Pro render of up to 5 s (150 s, ``Provider.expected_render_seconds``), scaled."""


@pytest.mark.parametrize("host", HOSTS)
async def test_a_webhook_makes_delivery_prompt(tmp_path, emulator, host):
    """Kling's unsigned callback and fal's and Replicate's signed calls each make the watcher poll at once."""
    with public_server(emulator, tmp_path, host) as server:
        took = await submit_and_time_delivery(server, tmp_path, host)
    assert webhook_url(emulator, host).startswith(f"{server.base}/webhooks/")
    assert any(200 <= status < 300 for status in deliveries(emulator, host))
    assert took < SAFETY_NET_SECONDS, f"delivered after {took:.2f} s: polled, not called back"


@pytest.mark.parametrize("host", ["replicate", "fal"])
@pytest.mark.parametrize("spoiled", ["bad_signature", "stale_timestamp"])
async def test_a_forged_or_stale_webhook_is_refused_and_changes_nothing(tmp_path, emulator, host, spoiled):
    emulator.inject_fault(host, "webhook", spoiled, times=10)  # every delivery of this task, retries too
    with public_server(emulator, tmp_path, host) as server:
        async with httpx2.AsyncClient() as http:  # and one with no signature at all, from anyone
            took = await submit_and_time_delivery(server, tmp_path, host)
            forged = await http.post(webhook_url(emulator, host), json={"id": "x", "status": "succeeded", "output": "http://evil.test/x.mp4"})
    assert forged.status_code in (401, 403)
    answers = deliveries(emulator, host)
    # every spoiled delivery refused (the emulator retries them; 0: retried after the server stopped)
    assert any(status in (401, 403) for status in answers) and all(status in (0, 401, 403) for status in answers), answers
    assert took >= SAFETY_NET_SECONDS  # no nudge: the clip came by the safety-net poll alone
    assert len(submits(emulator, host)) == 1


# -- uncertain facts, either way -----------------------------------------------------------------


@pytest.fixture
def emulator_config(emulator) -> Iterator:
    """Changes the shared emulator's settings for one test and puts them back after."""
    before = emulator.config.public()
    changed: list[str] = []

    def change(**values: object) -> None:
        changed.extend(values)
        emulator.config.update(values)

    yield change
    emulator.config.update({name: before[name] for name in changed})


@pytest.mark.parametrize(("host", "setting"), [("kling", "kling_4k_mode"), ("replicate", "replicate_4k_mode")])
async def test_a_host_without_4k_refuses_it_naming_mode_and_charging_nothing(tmp_path, emulator, emulator_config, host, setting):
    """Whether 4K exists there is uncertain: offered, and a host that lacks it gives a clear refusal."""
    emulator_config(**{setting: False})
    error = await refused(tmp_path, emulator, host, mode="4k")
    assert error["code"] == "validation_error" and "mode" in error["message"], error
    assert len(submits(emulator, host)) == 1


async def test_fal_refusing_content_at_the_submit_is_content_policy_too(tmp_path, emulator, emulator_config):
    emulator_config(fal_validation_at="submit")
    error = await refused(tmp_path, emulator, "fal", prompt="something forbidden [[reject:illegal_prompt]]")
    assert error["code"] == "content_policy", error
    assert len(submits(emulator, "fal")) == 1


async def test_fal_answering_a_webhook_submit_with_ids_alone_still_delivers(tmp_path, emulator, emulator_config):
    """fal's webhook page shows a submit with fal_webhook answered by the ids alone: no URLs to follow."""
    emulator_config(fal_webhook_reply_ids_only=True)
    with public_server(emulator, tmp_path, "fal") as server:
        took = await submit_and_time_delivery(server, tmp_path, "fal")
    assert took < SAFETY_NET_SECONDS
    polled = [r["path"] for r in emulator.requests("fal") if r["method"] == "GET" and "/requests/" in r["path"]]
    assert polled and all(path.startswith("/fal-ai/kling-video/requests/") for path in polled)  # the app, not the submit path


# -- doctor ----------------------------------------------------------------------------------------


def test_doctor_checks_each_host_key_without_spending(monkeypatch, tmp_path, emulator, capsys):
    """Kling: its free account-costs read; fal: a lookup of a request that cannot exist; Replicate: its account."""
    for name in ("KLING_MCP_PROVIDER", "KLING_MCP_MODE", "NOVITA_API_KEY", "HIGHWAY_API_KEY", "WAVESPEED_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    variables = {"KLING_MCP_OUTPUT_DIR": str(tmp_path / "clips"), "KLING_MCP_STATE_DIR": str(tmp_path / "state")}
    for host in HOSTS:
        variables |= host_env(emulator, host)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        main(["doctor"])
    out = capsys.readouterr().out
    assert exited.value.code == 0, out
    assert "Kling keys (KLING_ACCESS_KEY, KLING_SECRET_KEY): accepted, 1 live resource pack(s), 1000 units left" in out
    assert "fal.ai key (FAL_KEY): accepted" in out
    assert "Replicate key (REPLICATE_API_TOKEN): accepted, account " in out
    assert KEY not in out and emulator.config.kling_secret_key not in out
    assert all(submits(emulator, host) == [] for host in HOSTS)


@pytest.mark.parametrize("host", ["replicate", "fal"])
async def test_tasks_cancel_stops_the_render_at_a_host_that_can(tmp_path, emulator, host):
    """``tasks/cancel`` (MCP tasks, 2026-07-28) asks fal or Replicate to stop the render: the host
    receives the cancel, and the task says the host agreed (the render may still be billed in part)."""
    arguments = {"prompt": "never ends [[slow]]", "duration": 3, "provider": host, "mode": "std"}
    async with Client(build_server(host_settings(tmp_path, emulator)), mode="auto", extensions=opt_in("auto")) as client:
        task = await create(client, "auto", "generate_video", arguments)
        await ask(client, "tasks/cancel", taskId=task["taskId"])
        cancelled = await ask(client, "tasks/get", taskId=task["taskId"])
    cancels = [r for r in emulator.requests(host) if r["method"] in ("POST", "PUT") and "/cancel" in r["path"]]
    assert len(cancels) == 1, [r["path"] for r in emulator.requests(host)]
    assert cancelled["status"] == "cancelled"
    assert "agreed to stop the render" in cancelled["statusMessage"], cancelled["statusMessage"]
