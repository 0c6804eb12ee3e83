"""The provider edge, the parser and the size limits under attack: the real server through ``mcp.Client`` against the emulator, each hostile
provider answer an emulator fault, each test failing on the code before the fix it names.

- a result URL naming loopback by a host name (``localhost``, ``127.1``, ``2130706433``) in
  public-only mode: no byte reaches the loopback listener (item 8);
- a NUL in a task id is the same validation error on SQLite and PostgreSQL (item 11);
- films have a length limit and a nesting limit, and a long film's preview is a bounded sample (item 12).
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import av
import pytest
from mcp import Client

from conftest import make_settings
from helpers import total_requests, wait_done
from kling_video_mcp.config import Settings
from kling_video_mcp.media.previews import MAX_PREVIEW_SECONDS
from kling_video_mcp.surface.server import build_server
from kling_video_mcp.tasks.assembly import MAX_NESTING
from test_assembly import assemble, make_clips

pytestmark = pytest.mark.anyio


# -- 8. no byte to a refused address -----------------------------------------------------------------


@dataclass
class Listener:
    """A TCP listener on 127.0.0.1 that records every connection and every byte it receives."""

    port: int = 0
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)


@contextmanager
def loopback_listener() -> Iterator[Listener]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    seen = Listener(port=server.getsockname()[1])
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            seen.connections += 1
            with conn:
                conn.settimeout(1)
                try:
                    while chunk := conn.recv(65536):
                        seen.received += chunk
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stopping.set()
        thread.join()
        server.close()


@pytest.mark.parametrize("host", ["localhost", "127.1", "2130706433"])
async def test_a_loopback_link_by_name_gets_no_byte_in_public_only_mode(tmp_path, emulator, host):
    settings = make_settings(tmp_path, emulator, allow_private_downloads=False)
    with loopback_listener() as listener:
        emulator.inject_fault("wavespeed", "poll", "result_url", times=100, value=f"http://{host}:{listener.port}/clip.mp4")
        async with Client(build_server(settings)) as client:
            made = await client.call_tool("generate_video", {"prompt": "a hostile link", "duration": 3, "provider": "wavespeed"})
            report = (await wait_done(client, made.structured_content["task_id"])).structured_content
    assert (listener.connections, bytes(listener.received)) == (0, b"")  # not even a connection
    assert report["status"] == "failed" and report["error"]["code"] == "download_failed", report
    message = report["error"]["message"]
    assert "127.0.0.1, a loopback address" in message and "KLING_MCP_ALLOW_PRIVATE_DOWNLOADS" in message


# -- 11. task ids, the same on both backends --------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_nul_in_a_task_id_is_a_validation_error_on_both_backends(tmp_path, emulator, request, backend):
    url = request.getfixturevalue("database_url") if backend == "postgres" else None
    settings = make_settings(tmp_path, emulator, database_url=url)
    hostile = "0123abcd\x00' OR 1=1"
    calls = [
        ("task_id", "check_task", {"task_id": hostile}),
        ("task_ids.0", "check_task", {"task_ids": [hostile]}),
        ("task_id", "check_task", {"task_id": hostile, "provider": "novita", "mode": "4k"}),  # adoption
        ("image", "animate_image", {"image": f"task:{hostile}", "prompt": "on", "duration": 3}),
        ("task_ids.1", "assemble_video", {"task_ids": ["a" * 32, hostile]}),
        ("task_id", "confirm_spend", {"task_id": hostile, "decision": "decline"}),
    ]
    async with Client(build_server(settings)) as client:
        errors = [(name, (await client.call_tool(tool, arguments)).structured_content["error"]) for name, tool, arguments in calls]
    for name, error in errors:
        assert error["code"] == "validation_error", (name, error)
        assert f"{name}: " in error["message"] and "printable ASCII characters without spaces" in error["message"], error
    assert total_requests(emulator) == 0


# -- 12. films are bounded ----------------------------------------------------------------------------------


def film_settings(tmp_path, emulator, **overrides) -> Settings:
    return make_settings(tmp_path, emulator, provider="novita", **overrides)


async def test_a_film_longer_than_the_limit_is_refused_naming_the_setting(tmp_path, emulator):
    settings = film_settings(tmp_path, emulator, max_film_seconds=20)
    async with Client(build_server(settings)) as client:
        shots = await make_clips(client, {"duration": 3}, {"duration": 3})
        fits = await assemble(client, shots * 3)  # 18 s
        over = await client.call_tool("assemble_video", {"task_ids": shots * 4})  # 24 s
    assert fits["assembly"]["expected_duration_seconds"] == pytest.approx(18, abs=0.2)
    assert over.is_error, over.structured_content
    error = over.structured_content["error"]
    assert error["code"] == "validation_error", error
    assert error["message"].startswith("task_ids: the film would be 24 s long, above the 20 s")
    assert "KLING_MCP_MAX_FILM_SECONDS" in error["message"]
    assert Settings().max_film_seconds == 1800  # the default: half an hour


async def test_films_nest_no_deeper_than_the_limit(tmp_path, emulator):
    """Each level doubles here; with twenty copies it would multiply by twenty, at no cost."""
    settings = film_settings(tmp_path, emulator)
    async with Client(build_server(settings)) as client:
        film = (await assemble(client, await make_clips(client, {"duration": 3}, {"duration": 3})))["task_id"]
        for _level in range(2, MAX_NESTING + 1):
            film = (await assemble(client, [film, film], wait_seconds=30))["task_id"]
        deeper = await client.call_tool("assemble_video", {"task_ids": [film, film]})
    assert deeper.is_error, deeper.structured_content
    error = deeper.structured_content["error"]
    assert error["code"] == "validation_error", error
    assert error["message"].startswith(f"task_ids: the film would nest films {MAX_NESTING + 1} deep")


async def test_the_preview_of_a_long_film_is_a_bounded_sample(tmp_path, emulator):
    settings = film_settings(tmp_path, emulator)
    async with Client(build_server(settings)) as client:
        shots = await make_clips(client, {"duration": 15}, {"duration": 15})
        scene = await assemble(client, shots * 5, wait_seconds=30)  # 150 s
        read = await client.read_resource(f"kling-video://previews/{scene['task_id']}")
    preview = tmp_path / "preview.mp4"
    preview.write_bytes(base64.b64decode(read.contents[0].blob))
    with av.open(str(preview)) as container:
        seconds = float(container.duration / av.time_base)
        frames = sum(1 for _ in container.decode(video=0))
    assert scene["assembly"]["expected_duration_seconds"] == pytest.approx(150, abs=0.5)
    assert MAX_PREVIEW_SECONDS - 2 <= seconds <= MAX_PREVIEW_SECONDS + 1, seconds
    assert frames >= (MAX_PREVIEW_SECONDS - 2) * 12  # a watchable sample, not a few stills
