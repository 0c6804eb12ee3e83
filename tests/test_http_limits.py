"""How big and how deep an MCP message over HTTP may be: deep nesting refused, a 10 MB image fits.

Black-box: the installed console script serving streamable HTTP on a loopback port, with and
without sign-in (sign-in reads the body first, to learn the scopes a request needs). A body of
deeply nested JSON is refused with 400 before anything parses it; a 9 MB picture sent as a
``data:`` URI (twice, as ``image`` and ``end_image``) reaches the tool; a bigger picture gets a
``validation_error`` naming ``image`` and its size; a body over the limit gets 413 saying the limit.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from kling_video_mcp.surface.limits import MAX_BODY_BYTES, MAX_JSON_DEPTH, nested_deeper_than
from test_http import TOKEN, HttpServer, http_server, sandbox_env

pytestmark = pytest.mark.anyio

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
"""Without sign-in the token is ignored; with it, it is the caller's."""


@pytest.fixture(scope="module", params=["sign-in", "loopback"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """One server for the module's tests, with the shared token or without sign-in."""
    folder = tmp_path_factory.mktemp(f"limits-{request.param}")
    extra = {"KLING_MCP_HTTP_TOKEN": TOKEN} if request.param == "sign-in" else {}
    with http_server(sandbox_env(folder, **extra), log_dir=folder) as running:
        yield running


@asynccontextmanager
async def connected(server: HttpServer) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http:
        async with Client(streamable_http_client(server.mcp_url, http_client=http)) as client:
            yield client


def noise_png(side: int) -> bytes:
    """A PNG of random pixels, ``side`` x ``side``, stored uncompressed: about 3 * side**2 bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(3 * side * side)).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def deep_call(depth: int) -> bytes:
    arguments = '{"prompt": ' + "[" * depth + "]" * depth + "}"
    return ('{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "generate_video", "arguments": '
            + arguments + "}}").encode()  # fmt: skip


@pytest.mark.parametrize("body", [b"[" * 3000, deep_call(3000)], ids=["bare", "in-a-tool-call"])
def test_deeply_nested_json_is_refused_with_400_before_parsing(server, body):
    answer = httpx2.post(server.mcp_url, content=body, headers=HEADERS, timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == -32700 and f"deeper than {MAX_JSON_DEPTH}" in answer.json()["error"]["message"]
    assert "RecursionError" not in server.log()
    assert httpx2.get(f"{server.base}/healthz", headers=HEADERS).status_code == 200


async def test_two_9_mb_images_as_data_uris_reach_the_tool(server):
    image, end_image = noise_png(1750), noise_png(1740)
    assert 9_000_000 < len(image) < 10 * 1024 * 1024 and 9_000_000 < len(end_image)
    async with connected(server) as client:
        result = await client.call_tool(
            "animate_image",
            {"image": data_uri(image), "end_image": data_uri(end_image), "prompt": "the sea", "duration": 3, "dry_run": True},
        )
    assert not result.is_error, result.structured_content
    assert result.structured_content["estimated_cost_usd"] == 0  # the sandbox, checked and priced


async def test_an_image_over_10_mb_is_a_validation_error_naming_image_and_its_size(server):
    image = noise_png(1900)  # 10.8 MB
    async with connected(server) as client:
        result = await client.call_tool("animate_image", {"image": data_uri(image), "prompt": "the sea", "dry_run": True})
    assert result.is_error
    error = result.structured_content["error"]
    assert error["code"] == "validation_error" and error["message"].startswith("image: ")
    assert f"{len(image) / 1e6:.1f} MB" in error["message"] and "at most 10 MB" in error["message"]


def test_a_body_over_the_limit_gets_413_saying_the_limit(server):
    padding = "x" * (MAX_BODY_BYTES + 1000)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "animate_image", "arguments": {"image": padding}}})
    answer = httpx2.post(server.mcp_url, content=body, headers=HEADERS, timeout=60)
    assert answer.status_code == 413
    assert f"at most {MAX_BODY_BYTES / 1e6:.1f} MB" in answer.text and "data: URIs" in answer.text


def test_the_depth_scan_skips_strings_and_stops_at_the_limit():
    assert not nested_deeper_than(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', 3)
    assert not nested_deeper_than(b'{"a": "\\"[[[[", "b": [[[]]]}', 4)
    assert nested_deeper_than(b'{"a": "\\"[[[[", "b": [[[[]]]]}', 4)
    assert nested_deeper_than(b"[" * 65, MAX_JSON_DEPTH) and not nested_deeper_than(b"[" * 64, MAX_JSON_DEPTH)
