"""Injected transport faults for reliability tests (a side channel; prompt tokens are in ``tokens``).

A fault is armed for one flavor and one *target* (which requests it hits) and
is spent after ``times`` matching requests. Kinds and their parameters:

- ``status`` (any target): answer HTTP ``status`` in the flavor's error envelope
  without doing the work; ``retry_after`` (seconds) adds a ``Retry-After`` header;
  ``reason`` / ``message`` override the envelope text.
- ``created_then_status`` (submit): create the task, then answer ``status``.
- ``ok_error`` (submit, poll, upload): answer HTTP 200 whose body carries the error of
  ``status`` instead of a result, without doing the work (docs/providers.md#http-200-errors): WaveSpeed's
  envelope with ``code`` = ``status``; Novita/HighwayAPI a bare ``{"message": ...}`` with no
  ``task_id`` or ``task``.
- ``hang`` (any target): do the work, then wait ``seconds`` before answering.
- ``truncate`` (media, GET only): announce the full ``Content-Length`` but send
  only the first ``fraction`` of the body, then drop the connection.
- ``expired`` (media): answer 403 AccessDenied as an expired presigned URL would.
- ``html`` (media): answer 200 with a ``text/html`` "502 Bad Gateway" page, as a CDN
  fronting the store sometimes does.
- ``truncated`` (media, GET only): a 200 ``video/mp4`` answer without ``Content-Length``
  that ends cleanly after the first ``fraction`` of the clip (nothing tells it is short).
- ``wrong_length`` (media, GET only): declare ``extra`` bytes more than the clip has, send
  all of it, then drop the connection.
- ``redirect`` (media): answer 302 to ``value`` (a private address, a ``file://`` URL...).
- ``echo_key`` (any target): like ``status``, with a message that echoes the request's
  ``Authorization`` header (``Invalid key: Bearer ...``), as some providers' errors do.
- ``echo_key_escaped`` (submit, poll, upload): like ``echo_key``, with the echoed header
  JSON-escaped in the body as PHP's ``json_encode`` and hand-rolled encoders write it: ``/`` as
  ``\\/``, every other character but letters, digits and spaces as ``\\uXXXX`` (``-`` is
  ``\\u002d``). The decoded message holds the key; the raw bytes do not.
- ``odd_status`` (poll): the task's status in the answer becomes ``value`` (an undocumented one).
- ``result_url`` (poll): a finished task's result URL in the answer becomes ``value``.
- ``task_id`` (submit): the created task's id in the answer becomes ``value`` (an odd one).

Kling's official API, fal.ai and Replicate (docs/providers.md#emulator-injected-faults) add targets ``result`` (fal's
``response_url`` fetch, apart from its status poll) and ``cancel`` (fal's and Replicate's cancel),
both taking ``status``, ``hang`` and ``echo_key`` (``result`` also ``ok_error`` and ``result_url``),
and the target ``webhook`` (fal's and Replicate's signed deliveries) with two kinds:

- ``bad_signature`` (webhook): the delivery carries a signature that does not match its body;
- ``stale_timestamp`` (webhook): the delivery is correctly signed, but with a timestamp ten
  minutes old, past the five minutes a verifier accepts.

The rewrite kinds find their field in each host's answer (see ``ANSWER_FIELDS``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .config import FLAVORS

TARGETS = frozenset({"submit", "poll", "media", "upload"})
KIND_TARGETS: dict[str, frozenset[str]] = {
    "status": TARGETS,
    "created_then_status": frozenset({"submit"}),
    "ok_error": frozenset({"submit", "poll", "upload"}),
    "hang": TARGETS,
    "truncate": frozenset({"media"}),
    "expired": frozenset({"media"}),
    "html": frozenset({"media"}),
    "truncated": frozenset({"media"}),
    "wrong_length": frozenset({"media"}),
    "redirect": frozenset({"media"}),
    "echo_key": TARGETS,
    "echo_key_escaped": frozenset({"submit", "poll", "upload"}),
    "odd_status": frozenset({"poll"}),
    "result_url": frozenset({"poll"}),
    "task_id": frozenset({"submit"}),
}

# -- Kling's official API, fal.ai and Replicate ------------------------------------------------
HOST_TARGETS = frozenset({"result", "cancel"})
KIND_TARGETS.update(
    status=KIND_TARGETS["status"] | HOST_TARGETS,
    hang=KIND_TARGETS["hang"] | HOST_TARGETS,
    echo_key=KIND_TARGETS["echo_key"] | HOST_TARGETS,
    ok_error=KIND_TARGETS["ok_error"] | {"result"},
    result_url=KIND_TARGETS["result_url"] | {"result"},
    bad_signature=frozenset({"webhook"}),
    stale_timestamp=frozenset({"webhook"}),
)
STALE_WEBHOOK_SECONDS = 600
"""How old a ``stale_timestamp`` delivery claims to be (verifiers allow 300 s either way)."""
ANSWER_FIELDS: dict[str, dict[str, tuple[str | int, ...]]] = {
    "kling": {
        "task_id": ("data", "task_id"),
        "odd_status": ("data", "task_status"),
        "result_url": ("data", "task_result", "videos", 0, "url"),
    },
    "fal": {"task_id": ("request_id",), "odd_status": ("status",), "result_url": ("video", "url")},
    "replicate": {"task_id": ("id",), "odd_status": ("status",), "result_url": ("output",)},
}
"""Where each rewrite kind finds its field in a host's JSON answer."""


def webhook_tampering(faults: FaultBook, flavor: str) -> tuple[bool, int]:
    """How to spoil the next signed webhook of ``flavor``, as an armed ``webhook`` fault says:
    (sign other bytes than those sent?, seconds to backdate the timestamp)."""
    fault = faults.take(flavor, "webhook")
    kind = fault.kind if fault is not None else None
    return kind == "bad_signature", STALE_WEBHOOK_SECONDS if kind == "stale_timestamp" else 0


def _set_path(body: Any, path: tuple[str | int, ...], value: str) -> None:
    """Set ``body[path...]`` to ``value`` when every step exists (a field missing or null stays so)."""
    *parents, last = path
    for step in parents:
        if not _holds(body, step):
            return
        body = body[step]
    if _holds(body, last):
        body[last] = value


def _holds(container: Any, key: str | int) -> bool:
    if isinstance(key, int):
        return isinstance(container, list) and len(container) > key
    return isinstance(container, dict) and container.get(key) is not None


BODY_ONLY_KINDS = frozenset({"truncate", "truncated", "wrong_length"})
"""Kinds that cut or misdescribe a body: a HEAD (which has none) must not use them up."""
ECHO_KINDS = frozenset({"echo_key", "echo_key_escaped"})
"""Kinds that answer like ``status`` with the request's ``Authorization`` header in the message."""
REWRITE_KINDS = frozenset({"odd_status", "result_url", "task_id"})
"""Kinds that rewrite one field of a successful JSON answer (see :func:`rewrite_answer`)."""


@dataclass(frozen=True)
class Fault:
    """One armed fault; see the module docstring for the meaning of each parameter."""

    flavor: str
    target: str
    kind: str
    times: int = 1
    status: int = 500
    retry_after: float | None = None
    seconds: float = 30.0
    fraction: float = 0.5
    reason: str | None = None
    message: str | None = None
    extra: int = 1000
    value: str | None = None

    def __post_init__(self) -> None:
        if self.flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {', '.join(FLAVORS)}")
        if self.kind not in KIND_TARGETS:
            raise ValueError(f"kind must be one of {', '.join(sorted(KIND_TARGETS))}")
        if self.target not in KIND_TARGETS[self.kind]:
            raise ValueError(f"a {self.kind} fault cannot target {self.target!r}")
        if self.times < 1:
            raise ValueError("times must be >= 1")
        if not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError("fraction must be between 0 and 1")
        if self.seconds < 0 or (self.retry_after is not None and self.retry_after < 0):
            raise ValueError("seconds and retry_after must be >= 0")
        if self.kind in REWRITE_KINDS | {"redirect"} and self.value is None:
            raise ValueError(f"a {self.kind} fault needs a value")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Fault:
        """Build from a JSON object (``POST /__fake/faults``); raises ``ValueError`` on bad input."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault parameter(s): {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(str(exc)) from exc

    def retry_headers(self) -> dict[str, str]:
        """``Retry-After`` as whole seconds (rounded up), when requested."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(math.ceil(self.retry_after))}

    def public(self) -> dict[str, Any]:
        return asdict(self)


def rewrite_answer(body: dict[str, Any], kind: str, value: str, flavor: str | None = None) -> None:
    """Apply a rewrite fault to a provider's JSON answer, in place, in either envelope:
    Novita's ``{task_id}`` / ``{task, videos}`` or WaveSpeed's ``{data: {id, status, outputs}}``;
    for the hosts of ``ANSWER_FIELDS``, at that host's field."""
    if flavor in ANSWER_FIELDS:
        path = ANSWER_FIELDS[flavor].get(kind)
        if path is not None:
            _set_path(body, path, value)
        return
    data = body.get("data") if isinstance(body.get("data"), dict) else None
    task = body.get("task") if isinstance(body.get("task"), dict) else data
    if kind == "task_id":
        if "task_id" in body:
            body["task_id"] = value
        elif data is not None:
            data["id"] = value
    elif kind == "odd_status" and task is not None:
        task["status"] = value
    elif kind == "result_url":
        videos = body.get("videos")
        if isinstance(videos, list) and videos:
            videos[0]["video_url"] = value
        elif data is not None and data.get("outputs"):
            data["outputs"] = [value]


def json_escaped(text: str) -> str:
    """``text`` as it reads inside a JSON string when every character that may be escaped is:
    ``/`` as ``\\/``, anything but letters, digits and spaces as ``\\uXXXX``."""
    return "".join(
        "\\/" if char == "/" else char if char.isascii() and (char.isalnum() or char == " ") else f"\\u{ord(char):04x}"
        for char in text
    )


def escape_echo(body: bytes, echoed: str) -> bytes:
    """A JSON ``body`` with the string ``echoed`` (written unescaped by the JSON encoder) spelled
    :func:`json_escaped` instead: the ``echo_key_escaped`` answer."""
    return body.replace(echoed.encode(), json_escaped(echoed).encode())


@dataclass
class _Armed:
    fault: Fault
    remaining: int


class FaultBook:
    """Armed faults in arming order; the first match is served and counted down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[_Armed] = []

    def arm(self, fault: Fault) -> None:
        with self._lock:
            self._armed.append(_Armed(fault, fault.times))

    def take(self, flavor: str, target: str, accepts: Callable[[Fault], bool] = lambda _f: True) -> Fault | None:
        """Spend one use of the first fault armed for (``flavor``, ``target``) that ``accepts`` allows."""
        with self._lock:
            for entry in self._armed:
                fault = entry.fault
                if fault.flavor == flavor and fault.target == target and accepts(fault):
                    entry.remaining -= 1
                    if entry.remaining == 0:
                        self._armed.remove(entry)
                    return fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        """Armed faults with their remaining uses (for ``GET /__fake/faults``)."""
        with self._lock:
            return [{**entry.fault.public(), "remaining": entry.remaining} for entry in self._armed]

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()
