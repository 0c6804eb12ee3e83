"""The screening room in a real browser: Debian's chromium driven by Playwright.

The view (the shipped ``surface/view/screening-room.html``) runs as hosts run it: in a
sandboxed iframe under the CSP its resource declares, inside a host page built on ext-apps's
own host side (``AppBridge``, ``tests/view_host/host.html``, built from ``ui/host/``). The host
forwards the view's ``tools/call`` and ``resources/read`` to the real server through
``mcp.Client``: in process (media through ``resources/read``, as over stdio) or over HTTP (media
through signed links, as a remote deployment serves them).

Also here, without a browser: the shipped HTML is not older than its ``ui/`` sources, clients
without Apps get exactly the results they got before the view existed, and the signed links'
rules (valid, tampered, expired, unsigned).

Screenshots of each state go to ``test-output/view/`` (override with ``KLING_VIEW_SCREENSHOTS``).
Without ``/usr/bin/chromium`` the browser tests skip, saying so; ``.ci/run`` installs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp.client.streamable_http import streamable_http_client
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID

from conftest import make_settings
from helpers import clip_duration, eventually, submit_count, wait_done
from kling_video_mcp.surface.server import build_server
from kling_video_mcp.surface.signed_urls import UrlSigner
from kling_video_mcp.surface.view import MEDIA_META_KEY, VIEW_URI
from test_http import TOKEN, authed, http_server, sandbox_env

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parent.parent
UI = REPO / "ui"
SHIPPED_VIEW = REPO / "server" / "kling_video_mcp" / "surface" / "view" / "screening-room.html"
TEST_HOST = Path(__file__).resolve().parent / "view_host" / "host.html"
UI_SOURCES = ("build.mjs", "package.json", "package-lock.json", "src", "host")
"""What ``ui/build.mjs`` hashes (its ``SOURCES``)."""
SCREENSHOTS = Path(os.environ.get("KLING_VIEW_SCREENSHOTS", REPO / "test-output" / "view"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason=f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run installs it)",
)
HOST_URL = "http://localhost:9/view-host.html"
APPS = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})
"""What an Apps host declares in its capabilities (2026-07-28 era)."""


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


# -- the shipped HTML is built from the current sources ------------------------------------


def ui_source_hash() -> str:
    """The hash ``ui/build.mjs`` stamps into its outputs (see its ``sourceHash``)."""
    paths = []
    for name in UI_SOURCES:
        root = UI / name
        paths += [root] if root.is_file() else [path for path in root.rglob("*") if path.is_file()]
    digest = hashlib.sha256()
    for relative in sorted(path.relative_to(UI).as_posix() for path in paths):
        digest.update(f"{relative}\0{hashlib.sha256((UI / relative).read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


@pytest.mark.parametrize("built", [SHIPPED_VIEW, TEST_HOST], ids=["view", "test-host"])
def test_built_html_is_not_older_than_its_sources(built: Path):
    stamp = re.search(r"source-sha256: ([0-9a-f]{64})", built.read_text(encoding="utf-8")[:400])
    assert stamp, f"{built} carries no source stamp: rebuild it with `cd ui && npm ci && npm run build`"
    assert stamp.group(1) == ui_source_hash(), (
        f"{built.relative_to(REPO)} is older than ui/: run `cd ui && npm ci && npm run build` and commit the result"
    )


def test_the_view_is_one_self_contained_file_using_the_official_app_class():
    html = SHIPPED_VIEW.read_text(encoding="utf-8")
    # Nothing fetched from anywhere: no external scripts, styles or imports.
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|\bimport\s*\(?\s*[\"']https?:", html)
    assert "ui/initialize" in html  # the ext-apps App handshake is bundled in
    lock = json.loads((UI / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@modelcontextprotocol/ext-apps"]["version"] == "2.0.4"


# -- preview proxies and link signatures, directly ----------------------------------------------


def test_a_preview_is_h264_at_most_480p_with_the_clips_length_and_sound(tmp_path):
    from kling_video_mcp.emulator.media import ClipSpec, Shot, render_clip
    from kling_video_mcp.media.previews import make_preview
    from kling_video_mcp.media.probe import probe

    clip = tmp_path / "full.mp4"
    render_clip(ClipSpec([Shot("a 1080p clip at 60 fps", 2)], duration=2, fps=60, width=1920, height=1080, sound=True), clip)
    preview = probe(make_preview(clip, tmp_path / "previews" / "task.mp4"))
    assert (preview.width, preview.height, preview.video_codec) == (854, 480, "h264")
    assert preview.fps == 30 and preview.has_audio
    assert abs(preview.duration_seconds - probe(clip).duration_seconds) < 0.1
    assert (tmp_path / "previews" / "task.mp4").stat().st_size < clip.stat().st_size
    assert [path.name for path in (tmp_path / "previews").iterdir()] == ["task.mp4"]  # no temporary left behind


def test_links_are_signed_with_kling_mcp_url_secret_when_set(tmp_path, monkeypatch):
    from kling_video_mcp.config import Settings
    from kling_video_mcp.surface.signed_urls import Verdict

    monkeypatch.setenv("KLING_MCP_URL_SECRET", "one shared secret for every worker")
    settings = Settings(state_dir=tmp_path / "state")
    worker_a = UrlSigner.for_settings(settings, "https://videos.example.com")
    worker_b = UrlSigner.for_settings(Settings(state_dir=tmp_path / "elsewhere"), "https://videos.example.com")
    query = dict(part.split("=") for part in urlsplit(worker_a.url("clips", "a b.mp4")).query.split("&"))
    assert worker_b.verify("clips", "a b.mp4", query) is Verdict.VALID  # same key, another state folder
    assert not (tmp_path / "state" / "url-secret").exists()  # nothing generated when the variable is set
    generated = UrlSigner.for_settings(Settings(state_dir=tmp_path / "state", url_secret=""), "https://videos.example.com")
    assert generated.verify("clips", "a b.mp4", query) is Verdict.INVALID  # a blank variable means "generate one"
    assert (tmp_path / "state" / "url-secret").stat().st_mode & 0o777 == 0o600


# -- clients without Apps keep today's results ---------------------------------------------


async def test_clients_without_apps_get_exactly_the_results_they_got_before(tmp_path, emulator, era):
    settings = make_settings(tmp_path, emulator)
    async with Client(build_server(settings), mode=era) as plain:
        submitted = await plain.call_tool("generate_video", {"prompt": "a lighthouse at dusk", "duration": 5})
        task_id = submitted.structured_content["task_id"]
        before = await wait_done(plain, task_id)
        tools = {tool.name: tool for tool in (await plain.list_tools()).tools}
    async with Client(build_server(settings), extensions=[APPS]) as apps_host:
        with_view = await apps_host.call_tool("check_task", {"task_id": task_id})
    # The plain client's result: text, the resource link and the contact sheet, as always,
    # and nothing of the view's in _meta.
    assert [block.type for block in before.content] == ["text", "resource_link", "image"]
    assert MEDIA_META_KEY not in (before.meta or {})
    # The Apps host gets the very same content and structured content, plus the view's facts.
    assert _dump(with_view)["content"] == _dump(before)["content"]
    assert with_view.structured_content == before.structured_content
    assert with_view.meta[MEDIA_META_KEY] == {task_id: {"prompt": "a lighthouse at dusk"}}  # stdio: no links
    # Binding adds _meta.ui to the tool; its name, schema and description are untouched.
    assert tools["check_task"].meta == {"ui": {"resourceUri": VIEW_URI}}
    assert "ui" not in (tools["list_tasks"].meta or {})


# -- the browser -----------------------------------------------------------------------------

Forward = Callable[[str, dict[str, Any]], Awaitable[Any]]


def forward_to(client: Client) -> Forward:
    """The host's link to the server: the view's requests, answered by ``client``."""

    async def forward(method: str, params: dict[str, Any]) -> Any:
        if method == "tools/call":
            return _dump(await client.call_tool(params["name"], params.get("arguments") or {}))
        if method == "resources/read":
            return _dump(await client.read_resource(params["uri"]))
        raise ValueError(f"the test host forwards no {method}")

    return forward


class Screen:
    """One browser page hosting the view."""

    def __init__(self, page: Any, name: str) -> None:
        self.page = page
        self.name = name

    @property
    def view(self) -> Any:
        return self.page.frame_locator("iframe")

    async def shot(self, state: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.name}-{state}.png"
        await self.page.screenshot(path=str(path))
        return path

    async def host_log(self) -> list[str]:
        return await self.page.evaluate("window.hostLog")

    async def video(self, selector: str, expression: str) -> Any:
        """Evaluate ``expression`` (with ``v`` bound to the element) on a video in the view."""
        return await self.view.locator(selector).first.evaluate(f"v => {expression}")


@asynccontextmanager
async def hosted_view(client: Client, name: str, tool_input: dict[str, Any], result: Any) -> AsyncIterator[Screen]:
    """chromium showing the view for ``result`` (a tool result) in the test host."""
    from playwright.async_api import async_playwright

    resource = await client.read_resource(VIEW_URI)
    html = resource.contents[0].text
    csp = ((resource.contents[0].meta or {}).get("ui") or {}).get("csp") or {}
    host_html = TEST_HOST.read_text(encoding="utf-8")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # The server listens on loopback: a person would allow the page to reach it (Local
            # Network Access); a host reaching a public KLING_MCP_PUBLIC_URL needs no such grant.
            page = await browser.new_page(viewport={"width": 900, "height": 640}, permissions=["local-network-access"])
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.route(HOST_URL, lambda route: route.fulfill(body=host_html, content_type="text/html"))
            await page.expose_function("mcpRequest", forward_to(client))
            await page.goto(HOST_URL)
            await page.evaluate("([h, c, i, r]) => window.mountView(h, c, i, r)", [html, csp, tool_input, _dump(result)])
            await page.frame_locator("iframe").locator("body[data-ready=true]").wait_for(timeout=15_000)
            yield Screen(page, name)
            assert not errors, errors
        finally:
            await browser.close()


async def assert_plays(screen: Screen, expected_seconds: float, source: str) -> None:
    """The player loaded the preview from ``source`` with the clip's duration, and plays."""
    player = "video.player"
    await eventually(lambda: screen.video(player, "v.readyState"), lambda state: state >= 1, timeout=20, interval=0.1,
                     what="the player loaded the clip")  # fmt: skip
    assert await screen.video(player, "v.dataset.source") == source
    duration = await screen.video(player, "v.duration")
    assert abs(duration - expected_seconds) < 0.25, (duration, expected_seconds)
    await screen.video(player, "(v.muted = true, v.play())")
    await eventually(lambda: screen.video(player, "v.currentTime"), lambda played: played >= 0.5, timeout=10, interval=0.1,
                     what="the player played half a second")  # fmt: skip


@needs_chromium
async def test_player_plays_the_clip_through_resources_read(tmp_path, emulator):
    settings = make_settings(tmp_path, emulator)
    prompt = "a paper boat drifting down a rainy street"
    async with Client(build_server(settings), extensions=[APPS]) as client:
        submitted = await client.call_tool("generate_video", {"prompt": prompt, "duration": 5})
        done = await wait_done(client, submitted.structured_content["task_id"])
        report = done.structured_content
        async with hosted_view(client, "player", {"task_id": report["task_id"]}, done) as screen:
            await assert_plays(screen, clip_duration(report["file_path"]), source="resource")
            text = await screen.view.locator("section.single").inner_text()
            assert prompt in text and f"${report['estimated_cost_usd']:.2f}" in text
            assert "5.00 s" in text  # the clip's facts, read from the file
            assert f"resources/read kling-video://previews/{report['task_id']}" in await screen.host_log()
            await screen.shot("playing")


@needs_chromium
async def test_player_follows_a_render_live_then_plays_it(tmp_path, emulator):
    settings = make_settings(tmp_path, emulator)
    async with Client(build_server(settings), extensions=[APPS]) as client:
        # [[render:80]]: the emulator renders it for 4 s of real time (its clock runs 20x).
        submitted = await client.call_tool("generate_video", {"prompt": "a slow sunrise [[render:80]]", "duration": 3})
        assert submitted.structured_content["status"] in ("queued", "running")
        async with hosted_view(client, "render", {"prompt": "a slow sunrise"}, submitted) as screen:
            await screen.view.locator(".progress").wait_for()
            await screen.shot("rendering")
            await screen.view.locator("video.player").wait_for(timeout=30_000)  # polled check_task until done
            assert "tools/call check_task" in await screen.host_log()
            await assert_plays(screen, 3.0, source="resource")
            await screen.shot("finished")


@needs_chromium
async def test_storyboard_grid_refreshes_until_every_shot_is_done_and_makes_the_final_cut(tmp_path, emulator):
    settings = make_settings(tmp_path, emulator)
    prompts = ["shot one: a door opens", "shot two: a cat walks in [[render:200]]", "shot three: the cat sits"]
    async with Client(build_server(settings), extensions=[APPS]) as client:
        ids = []
        for prompt in prompts:
            submitted = await client.call_tool("generate_video", {"prompt": prompt, "duration": 3})
            ids.append(submitted.structured_content["task_id"])
        await wait_done(client, ids[0])
        await wait_done(client, ids[2])
        board = await client.call_tool("check_task", {"task_ids": ids})
        assert [row["status"] for row in board.structured_content["tasks"]] == ["succeeded", "running", "succeeded"]
        async with hosted_view(client, "storyboard", {"task_ids": ids}, board) as screen:
            cards = screen.view.locator("li.card")
            assert await cards.count() == 3
            assert [await cards.nth(i).get_attribute("data-task-id") for i in range(3)] == ids  # in order
            assert [await cards.nth(i).get_attribute("data-status") for i in range(3)] == ["succeeded", "running", "succeeded"]
            assert await screen.view.locator("button.final-cut").is_disabled()
            await eventually(  # thumbnails of the finished shots load
                lambda: screen.view.locator("li.card video.thumb").evaluate_all("vs => vs.filter(v => v.readyState >= 1).length"),
                lambda loaded: loaded >= 2, timeout=15, interval=0.1, what="two thumbnails loaded",
            )  # fmt: skip
            await screen.shot("rendering")
            # The view polls check_task through the host until the slow shot is done.
            await screen.view.locator(f"li.card[data-task-id='{ids[1]}'][data-status=succeeded]").wait_for(timeout=30_000)
            assert (await screen.host_log()).count("tools/call check_task") >= 1
            cut = screen.view.locator("button.final-cut")
            assert await cut.is_enabled()
            await screen.shot("done")
            await cut.click()
            await eventually(screen.host_log, lambda log: "tools/call assemble_video" in log, timeout=10, interval=0.1,
                             what="the view called assemble_video")  # fmt: skip
            task_id = await screen.view.locator("section.single").get_attribute("data-task-id")
            record = (await client.call_tool("check_task", {"task_id": task_id})).structured_content
            assert record["status"] in ("queued", "running", "succeeded"), record
            assert record["model"] == "Final cut of 3 shots"
            await screen.shot("final-cut")
            # The view follows the assembly and then plays the film: the three 3 s shots in a row.
            await screen.view.locator("video.player").wait_for(timeout=30_000)
            await assert_plays(screen, 9.0, source="resource")
            await screen.shot("film")


@needs_chromium
@pytest.mark.parametrize("decision", ["confirm", "decline"])
async def test_confirm_and_decline_answer_a_request_awaiting_the_persons_yes(tmp_path, emulator, decision):
    # A 5 s 4K render costs more than $1: journaled as awaiting_confirmation, nothing sent.
    settings = make_settings(tmp_path, emulator, confirm_above_usd=1.0)
    async with Client(build_server(settings), extensions=[APPS]) as client:
        parked = await client.call_tool("generate_video", {"prompt": "a fox in the snow", "duration": 5})
        report = parked.structured_content
        assert report["status"] == "awaiting_confirmation" and submit_count(emulator) == 0, report
        async with hosted_view(client, f"confirm-{decision}", {"prompt": "a fox in the snow"}, parked) as screen:
            box = screen.view.locator(".consent")
            assert f"${report['estimated_cost_usd']:.2f}" in await box.inner_text()
            await screen.shot("asking")
            await box.locator(f"button[data-decision={decision}]").click()
            await eventually(screen.host_log, lambda log: "tools/call confirm_spend" in log, timeout=10, interval=0.1,
                             what="the view called confirm_spend")  # fmt: skip
            if decision == "confirm":
                # Sent now; the view follows the render and then plays it.
                await screen.view.locator("video.player").wait_for(timeout=30_000)
                assert submit_count(emulator) == 1
                await assert_plays(screen, 5.0, source="resource")
            else:
                await screen.view.locator("[data-status=failed]").wait_for()
                assert "declined" in await screen.view.locator("section.single").inner_text()
                assert submit_count(emulator) == 0
            await screen.shot("answered")
    # The model cannot call it: a client without Apps neither lists it nor may call it.
    async with Client(build_server(settings)) as plain:
        assert "confirm_spend" not in {tool.name for tool in (await plain.list_tools()).tools}


# -- over HTTP: signed links, the CSP, and the same player -----------------------------------


@asynccontextmanager
async def http_apps_client(tmp_path: Path) -> AsyncIterator[tuple[Any, Client, httpx2.AsyncClient]]:
    env = sandbox_env(tmp_path, KLING_MCP_HTTP_TOKEN=TOKEN)
    with http_server(env, log_dir=tmp_path) as server:
        async with authed() as http:
            async with Client(streamable_http_client(server.mcp_url, http_client=http), extensions=[APPS]) as client:
                yield server, client, http


async def finished_with_preview(client: Client, prompt: str) -> Any:
    """A finished task's check_task result, once its preview is made (just after delivery)."""
    submitted = await client.call_tool("generate_video", {"prompt": prompt, "duration": 3})
    task_id = submitted.structured_content["task_id"]
    done = await wait_done(client, task_id)
    assert done.structured_content["status"] == "succeeded", done.structured_content
    if "preview_url" in done.meta[MEDIA_META_KEY][task_id]:
        return done
    return await eventually(
        lambda: client.call_tool("check_task", {"task_id": task_id}),
        lambda checked: "preview_url" in checked.meta[MEDIA_META_KEY][task_id], timeout=20, interval=0.1,
        what="the preview was made",
    )  # fmt: skip


@needs_chromium
async def test_over_http_the_view_streams_a_signed_preview_link_its_csp_allows(tmp_path):
    async with http_apps_client(tmp_path) as (server, client, _):
        done = await finished_with_preview(client, "a kite over dunes")
        task_id = done.structured_content["task_id"]
        links = done.meta[MEDIA_META_KEY][task_id]
        assert links["preview_url"].startswith(f"{server.base}/previews/{task_id}.mp4?exp=")
        resource = await client.read_resource(VIEW_URI)
        assert resource.contents[0].mime_type == APP_MIME_TYPE
        assert resource.contents[0].meta["ui"]["csp"]["resourceDomains"] == [server.base]
        async with hosted_view(client, "http-player", {"prompt": "a kite over dunes"}, done) as screen:
            await assert_plays(screen, 3.0, source="link")
            assert not any(line.startswith("resources/read kling-video://previews") for line in await screen.host_log())
            await screen.shot("playing")


async def test_signed_links_open_media_without_the_token_and_nothing_else(tmp_path):
    async with http_apps_client(tmp_path) as (server, client, http):
        done = await finished_with_preview(client, "a lantern in fog")
        task_id = done.structured_content["task_id"]
        links = done.meta[MEDIA_META_KEY][task_id]
        preview = (tmp_path / "clips" / ".previews" / f"{task_id}.mp4").read_bytes()
        clip_name = Path(done.structured_content["file_path"]).name
        key = (tmp_path / "state" / "url-secret").read_bytes().strip()
        expired = UrlSigner(key, server.base).url("previews", f"{task_id}.mp4", now=time.time() - 7200)
        async with httpx2.AsyncClient(timeout=30) as anonymous:  # no token, as a <video> element
            signed = await anonymous.get(links["preview_url"])
            ranged = await anonymous.get(links["preview_url"], headers={"Range": "bytes=0-99"})
            clip = await anonymous.get(links["clip_url"])
            url = urlsplit(links["preview_url"])
            tampered = await anonymous.get(links["preview_url"][:-3] + ("AAA" if not url.query.endswith("AAA") else "BBB"))
            other_file = await anonymous.get(links["clip_url"].replace(f"/clips/{clip_name}", f"/clips/x{clip_name}"))
            moved = await anonymous.get(f"{server.base}/clips/{task_id}.mp4?{url.query}")  # a preview's signature on /clips
            late = await anonymous.get(expired)
            unsigned = await anonymous.get(f"{server.base}/previews/{task_id}.mp4")
            sig_only = await anonymous.get(f"{server.base}/previews/{task_id}.mp4?sig=abc")
            # Look-alikes of a signature are no signature: the token is needed (no way around the sign-in).
            look_alikes = [
                await anonymous.get(f"{server.base}/{route}?{query}")
                for route in (f"previews/{task_id}.mp4", f"clips/{clip_name}")
                for query in ("xsig=1", "exp=1&xsig=1", "a=sig=1")
            ]
            elsewhere = [await anonymous.get(f"{server.base}{path}?{url.query}") for path in ("/healthz", "/mcp")]
        with_token = await http.get(f"{server.base}/previews/{task_id}.mp4")
    assert signed.status_code == 200 and signed.content == preview and signed.headers["content-type"] == "video/mp4"
    assert ranged.status_code == 206 and ranged.content == preview[:100]
    assert clip.status_code == 200 and hashlib.sha256(clip.content).hexdigest() == done.structured_content["sha256"]
    assert [r.status_code for r in (tampered, other_file, moved, late, sig_only)] == [403] * 5
    assert "expired" in late.text
    # No signature and no token: the bearer challenge, as on every other route (RFC 6750 §3).
    assert unsigned.status_code == 401 and "Bearer" in unsigned.headers["www-authenticate"]
    assert [r.status_code for r in elsewhere] == [401, 401]  # a signature opens media routes only
    assert [r.status_code for r in look_alikes] == [401] * 6
    assert with_token.status_code == 200 and with_token.content == preview
