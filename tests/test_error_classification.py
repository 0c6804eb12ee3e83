"""Error classification of provider answers (``providers/http.py``): pure functions, no server.

:func:`classify_error` maps an error answer (status, the provider's ``reason`` and ``message``)
to the error a user sees; :func:`classify_body_error` does the same for an error an HTTP 200
carries in its body. The rules are docs/providers.md#error-classification and
docs/providers.md#http-200-errors.
"""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime

import httpx2
import pytest

from kling_video_mcp.errors import (
    AuthError,
    ContentPolicy,
    InsufficientBalance,
    InvalidRequest,
    KlingError,
    NotFound,
    ProviderError,
    RateLimited,
)
from kling_video_mcp.models import utcnow
from kling_video_mcp.providers.http import classify_body_error, classify_error, retry_after_seconds

PROVIDER, KEY_ENV = "Novita AI", "NOVITA_API_KEY"


def answer(status: int, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.Response(status, headers=headers, request=httpx2.Request("POST", "https://api.example/v3/async/x"))


def classify(status: int, reason: str = "", message: str = "", headers: dict[str, str] | None = None) -> KlingError:
    return classify_error(answer(status, headers), reason=reason, message=message, provider=PROVIDER, key_env=KEY_ENV)


@pytest.mark.parametrize(
    ("status", "reason", "message", "expected"),
    [
        (429, "", "slow down", RateLimited),
        (400, "RATE_LIMIT_EXCEEDED", "", RateLimited),
        (503, "", "billing/credit service unavailable", ProviderError),  # an outage, not an empty account
        (400, "BILLING_BALANCE_NOT_ENOUGH", "", InsufficientBalance),
        (403, "NOT_ENOUGH_BALANCE", "", InsufficientBalance),
        (402, "", "Insufficient credits", InsufficientBalance),
        (400, "", "insufficient balance", InsufficientBalance),
        (401, "", "bad key", AuthError),
        (403, "", "forbidden", AuthError),
        (400, "INVALID_API_KEY", "", AuthError),
        (400, "ILLEGAL_PROMPT", "prompt not allowed", ContentPolicy),
        (404, "", "no such task", NotFound),
        (400, "TASK_NOT_FOUND", "", NotFound),
        (400, "INVALID_REQUEST_BODY", "duration must be 3-15", InvalidRequest),
        (422, "", "unprocessable", InvalidRequest),
        (409, "", "conflict", ProviderError),
    ],
)
def test_each_answer_becomes_the_error_its_rule_names(status, reason, message, expected):
    error = classify(status, reason, message)
    assert type(error) is expected, error
    assert PROVIDER in error.message


def test_a_server_error_is_retryable_and_a_refusal_is_not():
    assert classify(502, message="bad gateway").retryable
    assert not classify(400, "INVALID_REQUEST_BODY", "bad").retryable
    assert not classify(409, message="conflict").retryable


def test_the_message_quotes_the_provider_and_names_the_key_variable():
    error = classify(401, "FAILED_TO_AUTH", "failed to authenticate API key")
    assert "failed to authenticate API key" in error.message and KEY_ENV in error.message
    assert "HTTP 401" in classify(401).message  # no text at all: the status still says what happened


@pytest.mark.parametrize(("value", "seconds"), [("7", 7.0), ("0", 0.0), ("-3", 0.0), ("soon", None)])
def test_retry_after_in_seconds(value, seconds):
    assert retry_after_seconds(answer(429, {"Retry-After": value})) == seconds
    limited = classify(429, headers={"Retry-After": value})
    assert isinstance(limited, RateLimited) and limited.retry_after == seconds


def test_retry_after_as_an_http_date():
    when = format_datetime(utcnow() + timedelta(seconds=120), usegmt=True)
    assert retry_after_seconds(answer(429, {"Retry-After": when})) == pytest.approx(120, abs=2)
    assert retry_after_seconds(answer(429)) is None


def body_error(code: object, reason: str = "", message: str = "") -> KlingError:
    return classify_body_error(answer(200), code=code, reason=reason, message=message, provider=PROVIDER, key_env=KEY_ENV)


def test_an_error_in_a_200_is_classified_by_its_code():
    assert type(body_error(401, message="bad key")) is AuthError
    assert type(body_error(429)) is RateLimited
    assert type(body_error(400, message="duration must be 5 or 10")) is InvalidRequest
    assert type(body_error(500, message="internal")) is ProviderError and body_error(500).retryable


def test_an_error_in_a_200_without_a_code_is_read_from_its_words():
    assert type(body_error(None, message="insufficient balance")) is InsufficientBalance
    assert type(body_error(None, reason="INVALID_API_KEY")) is AuthError
    assert type(body_error(None, reason="ILLEGAL_PROMPT")) is ContentPolicy
    passing = body_error(None, message="something odd")  # nothing says the request was wrong
    assert type(passing) is ProviderError and passing.retryable and "something odd" in passing.message


@pytest.mark.parametrize("code", [True, 200, 302, 600, "401"])
def test_a_code_that_is_no_error_status_is_ignored(code):
    error = body_error(code, message="something odd")
    assert type(error) is ProviderError and error.retryable
