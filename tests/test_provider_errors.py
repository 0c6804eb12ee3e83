"""Provider errors come back as clear isError results that say what to do, never with the key."""

from __future__ import annotations

import json

import pytest
from mcp import Client

from conftest import make_settings
from helpers import submits, total_requests
from kling_video_mcp.surface.server import build_server

pytestmark = pytest.mark.anyio


async def call(tmp_path, emulator, arguments: dict, **settings_overrides):
    settings = make_settings(tmp_path, emulator, **settings_overrides)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("generate_video", {"prompt": "a quiet lake", **arguments})
    assert result.is_error, result.structured_content
    text = result.content[0].text + json.dumps(result.structured_content)
    return result.structured_content, text


@pytest.mark.parametrize(
    ("provider", "key_setting", "key_env"),
    [("novita", "novita_api_key", "NOVITA_API_KEY"), ("highway", "highway_api_key", "HIGHWAY_API_KEY"),
     ("wavespeed", "wavespeed_api_key", "WAVESPEED_API_KEY")],
)  # fmt: skip
async def test_rejected_key_says_which_variable_to_fix(tmp_path, emulator, provider, key_setting, key_env):
    secret = "sk-live-0123456789abcdef"
    report, text = await call(tmp_path, emulator, {"provider": provider}, **{key_setting: secret})
    assert report["error"]["code"] == "auth_error"
    assert key_env in report["error"]["message"]
    assert secret not in text


async def test_missing_key_is_refused_before_sending(tmp_path, emulator):
    report, _ = await call(tmp_path, emulator, {"provider": "highway"}, highway_api_key=None)
    assert report["error"]["code"] == "auth_error"
    assert "HIGHWAY_API_KEY" in report["error"]["message"] and "sandbox" in report["error"]["message"]
    assert total_requests(emulator) == 0


@pytest.mark.parametrize("provider", ["novita", "wavespeed"])
async def test_insufficient_balance(tmp_path, emulator, provider):
    key = {"novita_api_key": "zero-balance-key", "wavespeed_api_key": "zero-balance-key"}
    report, _ = await call(tmp_path, emulator, {"provider": provider}, **key)
    assert report["error"]["code"] == "insufficient_balance"
    assert "Top up" in report["error"]["message"]


async def test_rate_limited_submit_is_retried_then_reported(tmp_path, emulator):
    report, _ = await call(tmp_path, emulator, {"provider": "novita"}, novita_api_key="ratelimited-key", submit_retry_seconds=1.0)
    assert report["error"]["code"] == "rate_limited"
    assert report["error"]["retryable"] is True
    assert len(submits(emulator, "novita")) >= 2


async def test_content_refused_at_submit(tmp_path, emulator):
    report, _ = await call(tmp_path, emulator, {"prompt": "bad [[reject:illegal_prompt]]", "provider": "novita"})
    assert report["error"]["code"] == "content_policy"


async def test_provider_down_is_a_clear_error(tmp_path, emulator):
    report, _ = await call(tmp_path, emulator, {"provider": "novita"}, novita_base_url="http://127.0.0.1:9")
    assert report["error"]["code"] == "provider_unreachable"
    assert "nothing was submitted" in report["error"]["message"]
