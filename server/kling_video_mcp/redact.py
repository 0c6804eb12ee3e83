"""Secrets out of everything the server shows: provider answers, and log lines on every transport.

Two edges, one module:

- **Provider answers.** :func:`redacted_response` is applied by
  :class:`~kling_video_mcp.providers.http.ProviderHTTP` to every answer before anything reads
  it, so a provider that echoes the key (``Invalid key: Bearer ws-...``) cannot put it into a
  result, the journal or a log line. It redacts the raw text and, for a JSON body, every string
  the decoded JSON yields: a key echoed with JSON escapes (``ws\\/9fKx``, ``\\u002d`` for ``-``)
  matches no raw byte, only the decoded text. The secrets are
  :meth:`~kling_video_mcp.config.Settings.secrets`.
- **Log lines.** :func:`filter_logs` puts one :class:`LogRedactor` on the loggers that print
  URLs: uvicorn's access log (every request's full path), uvicorn's error log, and httpx2's
  request log (the submit URLs). It hides the values of secret-looking query parameters
  (signed links, a misplaced ``?token=``) and the token of every webhook URL.
  :func:`~kling_video_mcp.surface.server.build_server` calls it, so stdio and both HTTP
  transports are covered alike.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import httpx2

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 4
"""Shorter values are not treated as secrets: redacting them would garble ordinary words."""


def _worth_hiding(secrets: Sequence[str]) -> list[str]:
    """``secrets`` long enough to redact, longest first so a secret that contains another is replaced whole."""
    return sorted((secret for secret in secrets if len(secret) >= MIN_SECRET_CHARS), key=len, reverse=True)


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every one of ``secrets`` (of :data:`MIN_SECRET_CHARS` or more) replaced by ``[redacted]``."""
    for secret in _worth_hiding(secrets):
        text = text.replace(secret, REDACTED)
    return text


def redact_json(value: Any, secrets: Sequence[str]) -> Any:
    """A decoded JSON value with :func:`redact` applied to every string in it, object keys included."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [redact_json(item, secrets) for item in value]
    if isinstance(value, dict):
        return {redact(key, secrets): redact_json(item, secrets) for key, item in value.items()}
    return value


_REBUILT_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding"})


def _redacted_body(response: httpx2.Response, secrets: list[str]) -> bytes | None:
    """The body with ``secrets`` redacted, or ``None`` when it holds none of them.

    A JSON string can spell any character as an escape (``\\/``, ``\\u002d``), so a body with a
    backslash is also decoded and every string in it checked; without one, the decoded strings
    are byte for byte in the raw text, and the raw check is the whole check.
    """
    body = response.content
    if b"\\" in body:
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError):
            decoded = None
        if decoded is not None and (cleaned := redact_json(decoded, secrets)) != decoded:
            return json.dumps(cleaned, ensure_ascii=False).encode()
    if any(secret.encode() in body for secret in secrets):
        return redact(response.text, secrets).encode()
    return None


def redacted_response(response: httpx2.Response, secrets: Sequence[str]) -> httpx2.Response:
    """``response`` itself when nothing in it holds one of ``secrets``, else a copy whose body
    (raw, and every string of its decoded JSON) and reason phrase are redacted. The body must
    have been read."""
    hidden = _worth_hiding(secrets)
    body = _redacted_body(response, hidden)
    extensions = dict(response.extensions)
    phrase = extensions.get("reason_phrase")
    if isinstance(phrase, bytes) and any(secret.encode() in phrase for secret in hidden):
        extensions["reason_phrase"] = redact(phrase.decode("latin-1"), hidden).encode("latin-1", "replace")
    elif body is None:
        return response
    headers = [(name, value) for name, value in response.headers.items() if name.lower() not in _REBUILT_HEADERS]
    return httpx2.Response(
        response.status_code,
        headers=headers,
        content=response.content if body is None else body,
        request=response.request,
        extensions=extensions,
    )


# -- log lines -----------------------------------------------------------------------------------

_SECRET_QUERY = re.compile(r"(?i)([?&](?:[^=&#]*[_-])?(?:token|key|sig|signature|access_token)=)[^&#\s\"]*")
"""A query parameter named ``token``, ``key``, ``sig`` or ``access_token`` (or ending in one,
``api_key``, ``X-Amz-Signature``), up to its value's end."""
_WEBHOOK_TOKEN = re.compile(r"((?:/|%2F)webhooks(?:/|%2F))[^/?&#\s\"%]+", re.IGNORECASE)
"""A webhook token in a path, or in a URL-encoded query (a provider that takes ``?webhook=``)."""


def redact_query(text: str) -> str:
    """``text`` with the values of secret-looking query parameters replaced by ``[redacted]``."""
    return _SECRET_QUERY.sub(rf"\1{REDACTED}", text)


def hide_webhook_token(text: str) -> str:
    """``text`` with the token of every webhook URL in it replaced by ``…``."""
    return _WEBHOOK_TOKEN.sub(r"\1…", text)


class LogRedactor(logging.Filter):
    """Applies :func:`redact_query` and :func:`hide_webhook_token` to a record's message and
    arguments. An argument that holds nothing to hide is left as it was (a number stays a number
    for ``%d``); one that does becomes its redacted text."""

    @staticmethod
    def _clean(value: object) -> object:
        if isinstance(value, (int, float)):
            return value
        text = str(value)
        cleaned = hide_webhook_token(redact_query(text))
        return value if cleaned == text else cleaned

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean(arg) for arg in record.args)
        record.msg = self._clean(record.msg)
        return True


_REDACTOR = LogRedactor()
URL_LOGGERS = ("uvicorn.access", "uvicorn.error", "httpx2")
"""The loggers whose lines carry URLs: request paths (uvicorn), outgoing requests (httpx2)."""


def filter_logs() -> None:
    """Put the one :class:`LogRedactor` on every logger of :data:`URL_LOGGERS` (idempotent)."""
    for name in URL_LOGGERS:
        logging.getLogger(name).addFilter(_REDACTOR)
