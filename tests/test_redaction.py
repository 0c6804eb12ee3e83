"""Secrets never leave the server: a key a provider echoes, raw or JSON-escaped, and tokens in log lines.

The end-to-end tests drive the real server through ``mcp.Client`` against an emulator that
accepts keys with the characters JSON may escape (``/``, ``+``, ``=``, ``-``) and echoes them
back escaped (the ``echo_key_escaped`` fault: ``ws\\/9f``, ``\\u002d``). The unit tests cover
:mod:`kling_video_mcp.redact` directly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client

from conftest import EMULATOR_TIME_SCALE, make_settings
from helpers import wait_done
from kling_video_mcp.emulator import EmulatorConfig, EmulatorServer
from kling_video_mcp.emulator.faults import json_escaped
from kling_video_mcp.redact import REDACTED, LogRedactor, filter_logs, redact_json, redacted_response
from kling_video_mcp.surface.server import build_server

KEYS = {
    "slash": "ws/9fKxQ2/Lm8pR4tV7yB1nD5",
    "plus": "ws+9fKxQ2+Lm8pR4tV7yB1nD5",
    "equals": "ws9fKxQ2Lm8pR4tV7yB1nD5==",
    "dash": "ws-9fKxQ2-Lm8pR4tV7yB1nD5",
}
"""WaveSpeed keys with each character a JSON encoder may escape (base64 and UUID alphabets)."""


@pytest.fixture(scope="module")
def escaping_provider() -> Iterator[EmulatorServer]:
    """An emulator of its own that accepts the :data:`KEYS` (the shared one knows only the test key)."""
    config = EmulatorConfig(time_scale=EMULATOR_TIME_SCALE, valid_keys=frozenset(KEYS.values()))
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def provider(escaping_provider: EmulatorServer) -> EmulatorServer:
    escaping_provider.reset()
    return escaping_provider


def shown_to_anyone(result, settings, caplog) -> list[str]:
    """Everything a caller, the journal or a log line got to see."""
    seen = [json.dumps(result.structured_content), *(block.text for block in result.content if hasattr(block, "text"))]
    seen += [record.getMessage() for record in caplog.records]
    seen.append(settings.journal_path.read_bytes().decode(errors="replace"))
    return seen


@pytest.mark.anyio
@pytest.mark.parametrize("target", ["submit", "poll"])
@pytest.mark.parametrize("name", sorted(KEYS))
async def test_a_key_echoed_with_json_escapes_never_reaches_the_caller(tmp_path, provider, caplog, name, target):
    key = KEYS[name]
    settings = make_settings(tmp_path, provider, wavespeed_api_key=key)  # type: ignore[arg-type]
    provider.inject_fault("wavespeed", target, "echo_key_escaped", status=401, message="Invalid key")
    caplog.set_level(logging.DEBUG)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("generate_video", {"prompt": "a quiet harbour", "duration": 3, "provider": "wavespeed"})
        if not result.is_error:
            result = await wait_done(client, result.structured_content["task_id"])
    report = result.structured_content
    assert report["error"]["code"] == "auth_error", report
    assert f"Bearer {REDACTED}" in report["error"]["message"], report["error"]["message"]
    escaped = json_escaped(key)
    spellings = {key, escaped, json.dumps(escaped)[1:-1]}  # as sent, as echoed, as re-encoded
    for text in shown_to_anyone(result, settings, caplog):
        assert not any(spelling in text for spelling in spellings), text


@pytest.mark.parametrize("name", sorted(KEYS))
def test_the_fault_echoes_the_key_only_in_escaped_form(provider, name):
    """What makes the test above meaningful: the raw answer does not hold the key, its decoded JSON does."""
    key = KEYS[name]
    provider.inject_fault("wavespeed", "submit", "echo_key_escaped", status=401, message="Invalid key")
    answer = httpx2.post(
        provider.url("wavespeed") + "/api/v3/kwaivgi/kling-v3.0-std/text-to-video",
        headers={"Authorization": f"Bearer {key}"}, json={"prompt": "x"},
    )  # fmt: skip
    assert answer.status_code == 401
    assert key.encode() not in answer.content and json_escaped(key).encode() in answer.content
    assert answer.json()["message"] == f"Invalid key: Bearer {key}"


# -- kling_video_mcp.redact, unit by unit --------------------------------------------------------


def test_every_string_of_a_decoded_answer_is_redacted_keys_included():
    secret = KEYS["dash"]
    answer = {"error": {secret: [f"Bearer {secret}", 7, None]}, "ok": False}
    assert redact_json(answer, [secret]) == {"error": {REDACTED: [f"Bearer {REDACTED}", 7, None]}, "ok": False}


@pytest.mark.parametrize("name", sorted(KEYS))
def test_a_response_is_rebuilt_only_when_it_holds_a_secret(name):
    key = KEYS[name]
    request = httpx2.Request("GET", "https://provider.example/poll")
    clean = httpx2.Response(401, json={"message": "Invalid key"}, request=request)
    assert redacted_response(clean, [key]) is clean
    body = b'{"message": "Bearer ' + json_escaped(key).encode() + b'", "escaped_but_harmless": "a\\/b"}'
    echoed = httpx2.Response(401, content=body, headers={"content-type": "application/json"}, request=request)
    cleaned = redacted_response(echoed, [key])
    assert cleaned.json() == {"message": f"Bearer {REDACTED}", "escaped_but_harmless": "a/b"}
    assert cleaned.status_code == 401 and int(cleaned.headers["content-length"]) == len(cleaned.content)
    in_phrase = httpx2.Response(401, content=b"{}", extensions={"reason_phrase": f"Bad {key}".encode()}, request=request)
    assert redacted_response(in_phrase, [key]).reason_phrase == f"Bad {REDACTED}"


def test_a_short_value_is_no_secret():
    request = httpx2.Request("GET", "https://provider.example/poll")
    answer = httpx2.Response(200, json={"status": "ok"}, request=request)
    assert redacted_response(answer, ["ok"]) is answer


def test_log_lines_lose_query_secrets_and_webhook_tokens_and_keep_numbers():
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/clips/a.mp4?sig=SECRET-SIG&expires=9&folder=x", "1.1", 200), None,
    )  # fmt: skip
    httpx_line = logging.LogRecord(
        "httpx2", logging.INFO, __file__, 1, "HTTP Request: %s %s",
        ("POST", httpx2.URL("https://api.example/submit?webhook=https%3A%2F%2Fme.example%2Fwebhooks%2FTOKEN-123")), None,
    )  # fmt: skip
    redactor = LogRedactor()
    assert redactor.filter(record) and redactor.filter(httpx_line)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /clips/a.mp4?sig=[redacted]&expires=9&folder=x HTTP/1.1" 200'
    assert "TOKEN-123" not in httpx_line.getMessage() and "%2Fwebhooks%2F…" in httpx_line.getMessage()


def test_building_the_server_filters_the_url_loggers_once(tmp_path: Path, emulator):
    build_server(make_settings(tmp_path, emulator))
    filter_logs()  # idempotent
    for name in ("uvicorn.access", "uvicorn.error", "httpx2"):
        assert len([f for f in logging.getLogger(name).filters if isinstance(f, LogRedactor)]) == 1
