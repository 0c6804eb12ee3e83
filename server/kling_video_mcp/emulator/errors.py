"""The provider-neutral error every handler raises; each flavor renders its own envelope.

``reason`` uses Novita's vocabulary (docs/providers.md#novita-errors), which Novita and
HighwayAPI send as-is and WaveSpeed drops (docs/providers.md#wavespeed-errors: only ``code`` and ``message``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """An HTTP error answer: ``status``, Novita-style ``reason``, human ``message``, extra ``headers``.

    ``body``, when given, is sent verbatim instead of the flavor's envelope (a
    provider that answers off-envelope, e.g. HighwayAPI's bare balance error, docs/providers.md#highway-errors).
    ``in_ok`` sends the error inside an HTTP 200, as providers sometimes do (docs/providers.md#http-200-errors).
    """

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        *,
        in_ok: bool = False,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = dict(headers or {})
        self.body = body
        self.in_ok = in_ok


def invalid(message: str, reason: str = "INVALID_REQUEST_BODY") -> ApiError:
    """A 400 for a request the provider refuses to accept (docs/providers.md#emulator-validation)."""
    return ApiError(400, reason, message)
