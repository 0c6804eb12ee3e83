"""The HTTP deployment, black-box: the installed console script serving on a loopback port.

Covers the issue's "HTTP deployment" list: loopback by default, DNS-rebinding protection on
every bind, the bearer token, the refusal to expose the server without one, ``--stateless``,
``/clips/{file}`` (Range, confinement, public links), local images confined to
``KLING_MCP_IMAGE_DIRS`` over HTTP but not on stdio, ``/healthz``, and one SSE session.

Servers bind 127.0.0.1 only; a non-loopback bind is tested where it is refused before binding,
and Host/Origin rules for such a bind are tested in process, without a socket.

``http_server`` and ``sandbox_env`` here are shared with the Inspector and conformance tests.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ResourceLink
from pydantic import SecretStr

from conftest import EMULATOR_TIME_SCALE, png_bytes
from helpers import eventually_sync, total_requests, wait_done
from kling_video_mcp.config import Settings
from kling_video_mcp.surface.http import HttpConfig, StartRefused, build_app, check_bind
from test_stdio import console_script, server_env

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token-for-tests-only-0123456789"
STARTUP_SECONDS = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_env() -> dict[str, str]:
    """This process's environment without provider keys or server settings (so: the sandbox)."""
    return {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("KLING_MCP_")}


def sandbox_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The server's environment for the free sandbox: no keys, fast clock, temporary folders."""
    env = clean_env()
    env.update(
        KLING_MCP_OUTPUT_DIR=str(tmp_path / "clips"),
        KLING_MCP_STATE_DIR=str(tmp_path / "state"),
        KLING_MCP_SANDBOX_TIME_SCALE=str(EMULATOR_TIME_SCALE),
        KLING_MCP_POLL_TIME_SCALE="0.02",
    )
    env.update(extra)
    return env


@dataclass
class HttpServer:
    """A running ``kling-video-mcp`` HTTP server subprocess."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base}/mcp"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def http_server(env: dict[str, str], *args: str, log_dir: Path, port: int | None = None) -> Iterator[HttpServer]:
    """Start ``kling-video-mcp --transport streamable-http`` (unless ``args`` name another) on
    ``port`` (default: a free one) of 127.0.0.1, wait until ``/healthz`` answers, and stop it
    afterwards. The server's output goes to a log file in ``log_dir``."""
    server = start_server(env, *args, log_dir=log_dir, port=port)
    try:
        wait_healthy(server, token=env.get("KLING_MCP_HTTP_TOKEN"))
        yield server
    finally:
        stop_server(server)


def start_server(env: dict[str, str], *args: str, log_dir: Path, port: int | None = None) -> HttpServer:
    """Launch the server process (see :func:`http_server`) without waiting for it."""
    port = port or free_port()
    argv = [console_script(), "--transport", "streamable-http", *args, "--port", str(port)]
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    return HttpServer(port, process, log_path)


def wait_healthy(server: HttpServer, token: str | None = None) -> None:
    """Return once the server's ``/healthz`` answers 200; fail with its log if it exits or takes too long."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def healthy() -> bool:
        assert server.process.poll() is None, f"the server exited with {server.process.returncode}:\n{server.log()}"
        try:
            return httpx2.get(f"{server.base}/healthz", headers=headers, timeout=2).status_code == 200
        except httpx2.TransportError:
            return False

    eventually_sync(healthy, timeout=STARTUP_SECONDS, interval=0.1, what=lambda: f"/healthz answered 200; the log:\n{server.log()}")


def stop_server(server: HttpServer) -> None:
    """SIGTERM, and SIGKILL if it has not stopped 10 s later (nothing to do if it is gone already)."""
    if server.process.poll() is None:
        server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def authed(token: str = TOKEN) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)


# -- binding -------------------------------------------------------------------------------


def test_binds_loopback_by_default_and_answers_healthz(tmp_path):
    with http_server(sandbox_env(tmp_path), log_dir=tmp_path) as server:
        health = httpx2.get(f"{server.base}/healthz")
        log = server.log()
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert re.search(rf"Uvicorn running on http://127\.0\.0\.1:{server.port}\b", log), log


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_refuses_a_network_bind_without_a_token(tmp_path, host):
    port = free_port()
    done = subprocess.run(
        [console_script(), "--transport", "streamable-http", "--host", host, "--port", str(port)],
        env=sandbox_env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "KLING_MCP_HTTP_TOKEN" in done.stderr and "127.0.0.1" in done.stderr, done.stderr
    with socket.socket() as probe:  # nothing was bound, not even briefly left behind
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_bind_rule():
    check_bind("127.0.0.1", None)
    check_bind("127.0.0.2", None)
    check_bind("::1", None)
    check_bind("localhost", None)
    check_bind("0.0.0.0", SecretStr(TOKEN))
    with pytest.raises(StartRefused, match="KLING_MCP_HTTP_TOKEN"):
        check_bind("10.1.2.3", None)


def test_stateless_is_only_for_streamable_http(tmp_path):
    argv = [console_script(), "--transport", "sse", "--stateless"]
    done = subprocess.run(argv, env=sandbox_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--stateless applies to --transport streamable-http" in done.stderr


def test_a_bad_public_url_stops_the_start_with_the_reason(tmp_path):
    done = subprocess.run(
        [console_script(), "--transport", "streamable-http", "--port", str(free_port())],
        env=sandbox_env(tmp_path, KLING_MCP_PUBLIC_URL="videos.example.com"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "KLING_MCP_PUBLIC_URL" in done.stderr and "http://" in done.stderr and "Traceback" not in done.stderr


# -- DNS-rebinding protection ---------------------------------------------------------------


async def test_host_and_origin_are_checked_on_a_network_bind(tmp_path):
    """In process (no socket): a 0.0.0.0 bind still rejects foreign Host and Origin headers."""
    settings = Settings(
        output_dir=tmp_path / "clips", state_dir=tmp_path / "state", http_token=TOKEN,
        public_url="https://videos.example.com", allowed_hosts=["10.0.0.5:8000"],
        allowed_origins=["https://studio.example.com"],
    )  # fmt: skip
    app = build_app(settings, HttpConfig(host="0.0.0.0", port=8000))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://videos.example.com") as http:
        assert (await http.get("/healthz", headers=auth)).status_code == 200  # the public URL's host
        assert (await http.get("/healthz", headers=auth | {"Host": "10.0.0.5:8000"})).status_code == 200
        assert (await http.get("/healthz", headers=auth | {"Host": "127.0.0.1:8000"})).status_code == 200
        assert (await http.get("/healthz", headers=auth | {"Host": "attacker.example"})).status_code == 421
        assert (await http.get("/healthz", headers=auth | {"Origin": "https://attacker.example"})).status_code == 403
        assert (await http.get("/healthz", headers=auth | {"Origin": "https://studio.example.com"})).status_code == 200
        assert (await http.get("/clips/x.mp4", headers=auth | {"Host": "attacker.example"})).status_code == 421


def test_host_and_origin_are_checked_on_every_route_over_loopback(tmp_path):
    with http_server(sandbox_env(tmp_path), log_dir=tmp_path) as server:
        for path in ("/healthz", "/clips/x.mp4", "/mcp"):
            assert httpx2.get(server.base + path, headers={"Host": "attacker.example"}).status_code == 421, path
            assert httpx2.get(server.base + path, headers={"Origin": "http://attacker.example"}).status_code == 403, path
        assert httpx2.get(f"{server.base}/healthz", headers={"Origin": f"http://localhost:{server.port}"}).status_code == 200


# -- the token ------------------------------------------------------------------------------


async def test_every_request_needs_the_bearer_token(tmp_path):
    env = sandbox_env(tmp_path, KLING_MCP_HTTP_TOKEN=TOKEN)
    with http_server(env, log_dir=tmp_path) as server:
        refusals = [
            httpx2.get(f"{server.base}/healthz"),
            httpx2.get(f"{server.base}/clips/x.mp4"),
            httpx2.post(server.mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}),
            httpx2.get(f"{server.base}/healthz", headers={"Authorization": "Bearer wrong"}),
            httpx2.get(f"{server.base}/healthz", headers={"Authorization": TOKEN}),  # no scheme
            httpx2.get(f"{server.base}/healthz", headers={"Authorization": f"Basic {TOKEN}"}),
        ]
        async with authed() as http, Client(streamable_http_client(server.mcp_url, http_client=http)) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
        log = server.log()
    assert [r.status_code for r in refusals] == [401] * len(refusals)
    assert all(r.headers["www-authenticate"].startswith("Bearer") for r in refusals)
    assert all(TOKEN not in r.text for r in refusals)
    assert {"generate_video", "animate_image", "check_task"} <= names
    assert TOKEN not in log


# -- clips ---------------------------------------------------------------------------------


async def test_finished_clip_is_linked_at_the_public_url_and_served_with_range(tmp_path, era):
    port = free_port()
    # The public URL names the server differently from its bind address, as a proxy's would.
    env = sandbox_env(tmp_path, KLING_MCP_HTTP_TOKEN=TOKEN, KLING_MCP_PUBLIC_URL=f"http://localhost:{port}/")
    with http_server(env, log_dir=tmp_path, port=port) as server:
        async with authed() as http:
            async with Client(streamable_http_client(server.mcp_url, http_client=http), mode=era) as client:
                submitted = await client.call_tool("generate_video", {"prompt": "a kite over dunes", "duration": 3})
                assert not submitted.is_error, submitted.structured_content
                done = await wait_done(client, submitted.structured_content["task_id"])
            report = done.structured_content
            assert report["status"] == "succeeded", report
            file_path = Path(report["file_path"])
            link = next(block for block in done.content if isinstance(block, ResourceLink))
            expected = f"http://localhost:{port}/clips/{file_path.name}"
            assert str(link.uri) == report["file_uri"] == expected
            assert expected in done.content[0].text
            whole = await http.get(expected)
            part = await http.get(expected, headers={"Range": "bytes=100-199"})
            tail = await http.get(expected, headers={"Range": "bytes=-10"})
            head = await http.head(expected)
            unauthenticated = httpx2.get(expected)
    data = file_path.read_bytes()
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert hashlib.sha256(whole.content).hexdigest() == report["sha256"]
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert tail.status_code == 206 and tail.content == data[-10:]
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(data)
    assert unauthenticated.status_code == 401


def test_only_clips_inside_the_output_folder_are_served(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "real.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (clips / "notes.txt").write_text("not a clip")
    (clips / "half.mp4.part").write_bytes(b"partial download")
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"outside the output folder")
    (clips / "escape.mp4").symlink_to(secret)
    (clips / "sub").mkdir()
    (clips / "sub" / "nested.mp4").write_bytes(b"nested")
    with http_server(sandbox_env(tmp_path), log_dir=tmp_path) as server:
        def status(path: str) -> int:
            return httpx2.get(server.base + path).status_code

        assert status("/clips/real.mp4") == 200
        for path in (
            "/clips/notes.txt", "/clips/half.mp4.part", "/clips/escape.mp4", "/clips/sub/nested.mp4",
            "/clips/..%2Fsecret.mp4", "/clips/%2E%2E/secret.mp4", "/clips/../secret.mp4", "/clips/missing.mp4",
        ):  # fmt: skip
            assert status(path) == 404, path


# -- local images -----------------------------------------------------------------------------


def _data_uri() -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes()).decode()


async def _animate(client: Client, image: str) -> dict:
    arguments = {"image": image, "prompt": "it moves", "duration": 3, "provider": "wavespeed"}
    result = await client.call_tool("animate_image", arguments)
    return result.structured_content


async def test_over_http_local_images_come_only_from_the_image_dirs(tmp_path, emulator, png_file):
    """Default: no folder at all, so a caller cannot make the server upload /etc/passwd."""
    with http_server(server_env(emulator, tmp_path), log_dir=tmp_path) as server:
        async with Client(server.mcp_url, mode="legacy") as client:
            refused = [await _animate(client, reference) for reference in ("/etc/passwd", str(png_file), png_file.as_uri())]
            assert total_requests(emulator) == 0  # nothing read was sent anywhere
            by_data_uri = await _animate(client, _data_uri())
    for report in refused:
        assert report["error"]["code"] == "validation_error", report
        assert "KLING_MCP_IMAGE_DIRS" in report["error"]["message"] and "data: URI" in report["error"]["message"]
    assert by_data_uri["status"] in ("queued", "running"), by_data_uri


async def test_over_http_an_image_dir_admits_its_own_files_only(tmp_path, emulator):
    allowed, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    allowed.mkdir()
    elsewhere.mkdir()
    (allowed / "in.png").write_bytes(png_bytes())
    (elsewhere / "out.png").write_bytes(png_bytes(color="red"))
    (allowed / "link.png").symlink_to(elsewhere / "out.png")
    env = server_env(emulator, tmp_path, KLING_MCP_IMAGE_DIRS=os.pathsep.join([str(allowed), str(tmp_path / "none")]))
    with http_server(env, log_dir=tmp_path) as server:
        async with Client(server.mcp_url, mode="legacy") as client:
            outside = await _animate(client, str(elsewhere / "out.png"))
            via_symlink = await _animate(client, str(allowed / "link.png"))
            escaping = await _animate(client, str(allowed / ".." / "elsewhere" / "out.png"))
            assert total_requests(emulator) == 0
            inside = await _animate(client, str(allowed / "in.png"))
    for report in (outside, via_symlink, escaping):
        assert report["error"]["code"] == "validation_error", report
        assert str(allowed) in report["error"]["message"]
    assert inside["status"] in ("queued", "running"), inside
    uploads = [r for r in emulator.requests("wavespeed") if r["path"].endswith("/media/upload/binary")]
    assert len(uploads) == 1  # WaveSpeed takes local images by upload: the allowed file went


async def test_on_stdio_any_readable_image_is_taken(tmp_path, emulator, png_file):
    """stdio serves the user's own machine: KLING_MCP_IMAGE_DIRS is an HTTP setting only."""
    env = server_env(emulator, tmp_path, KLING_MCP_IMAGE_DIRS=str(tmp_path / "unrelated"))
    async with Client(StdioServerParameters(command=console_script(), args=[], env=env), mode="legacy") as client:
        report = await _animate(client, str(png_file))
    assert report["status"] in ("queued", "running"), report


# -- stateless and SSE ---------------------------------------------------------------------------


async def test_stateless_mode_keeps_no_sessions(tmp_path, era):
    with http_server(sandbox_env(tmp_path), "--stateless", log_dir=tmp_path) as server:
        initialize = httpx2.post(
            server.mcp_url,
            headers={"Accept": "application/json, text/event-stream"},
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        )  # fmt: skip
        async with Client(server.mcp_url, mode=era) as client:
            submitted = await client.call_tool("generate_video", {"prompt": "waves", "duration": 3})
            done = await wait_done(client, submitted.structured_content["task_id"])
    assert initialize.status_code == 200 and "mcp-session-id" not in initialize.headers
    assert done.structured_content["status"] == "succeeded", done.structured_content


async def test_sse_transport_end_to_end(tmp_path):
    with http_server(sandbox_env(tmp_path), "--transport", "sse", log_dir=tmp_path) as server:
        async with Client(sse_client(f"{server.base}/sse"), mode="legacy") as client:
            submitted = await client.call_tool("generate_video", {"prompt": "a lighthouse at dusk", "duration": 3})
            done = await wait_done(client, submitted.structured_content["task_id"])
        clip = httpx2.get(done.structured_content["file_uri"])
    report = done.structured_content
    assert report["status"] == "succeeded", report
    assert report["file_uri"] == f"{server.base}/clips/{Path(report['file_path']).name}"
    assert clip.status_code == 200 and hashlib.sha256(clip.content).hexdigest() == report["sha256"]


# -- configuration ---------------------------------------------------------------------------------


def test_http_settings_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("KLING_MCP_IMAGE_DIRS", os.pathsep.join(["/srv/images", "", "/tmp/more"]))
    monkeypatch.setenv("KLING_MCP_ALLOWED_HOSTS", "videos.example.com, 10.0.0.5:*")
    monkeypatch.setenv("KLING_MCP_ALLOWED_ORIGINS", "https://studio.example.com")
    monkeypatch.setenv("KLING_MCP_PUBLIC_URL", "https://videos.example.com/kling/")
    monkeypatch.setenv("KLING_MCP_HTTP_TOKEN", "  ")
    settings = Settings()
    assert settings.image_dirs == [Path("/srv/images"), Path("/tmp/more")]
    assert settings.allowed_hosts == ["videos.example.com", "10.0.0.5:*"]
    assert settings.allowed_origins == ["https://studio.example.com"]
    assert settings.public_url == "https://videos.example.com/kling"
    assert settings.http_token is None  # a blank token is no token, never one an empty header matches

