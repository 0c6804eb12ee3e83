"""Fault tokens written into prompts, so tests need no side channel (docs/providers.md#emulator-prompt-tokens).

Recognised tokens (anything else in double brackets is left alone):

- ``[[fail:moderation]]``, ``[[fail:internal]]``, ``[[fail:timeout]]``: the task
  fails when its render ends;
- ``[[reject:illegal_prompt]]``, ``[[reject:illegal_image]]``: synchronous 400 at submit;
- ``[[slow]]``: the task never finishes;
- ``[[expire]]``: result URLs live 1 s;
- ``[[fault:create]]``: submit answers 500 CREATE_TASK_FAILED;
- ``[[render:N]]``: this task renders for N seconds (before ``time_scale``) instead of ``run_seconds``;
- ``[[ok_error:submit]]``: the submit answers HTTP 200 carrying the insufficient-balance error
  instead of a task (docs/providers.md#http-200-errors: WaveSpeed's envelope ``code`` 400; Novita/HighwayAPI a bare
  ``{"message"}``); ``[[ok_error:poll]]``: the task is created, and every poll of it answers
  HTTP 200 carrying the "failed to get the result" error (``code`` 500) instead of the task;
- ``[[eta:zero]]``: Novita/HighwayAPI report ``task.eta`` 0 while the task runs, as Novita was seen
  doing near the end of a render; ``progress_percent`` still rises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_TOKEN = re.compile(r"\[\[([a-z_]+)(?::([^\]]*))?\]\]")

FAILURES = frozenset({"moderation", "internal", "timeout"})
REJECTIONS = frozenset({"illegal_prompt", "illegal_image"})
OK_ERROR_TARGETS = frozenset({"submit", "poll"})


@dataclass(frozen=True)
class Directives:
    """What the tokens of one request ask for; the default is a normal task."""

    fail: str | None = None
    reject: str | None = None
    slow: bool = False
    expire: bool = False
    fault_create: bool = False
    render_seconds: float | None = None
    eta_zero: bool = False
    ok_error: str | None = None
    """``submit`` or ``poll``: which answers carry an error in an HTTP 200."""


def read_directives(texts: Iterable[str]) -> Directives:
    """Collect the directives in ``texts`` (prompt, every shot prompt, image fields).

    When a token kind repeats, the first occurrence wins.
    """
    found: dict[str, object] = {}
    for text in texts:
        for name, arg in _TOKEN.findall(text):
            if name == "fail" and arg in FAILURES:
                found.setdefault("fail", arg)
            elif name == "reject" and arg in REJECTIONS:
                found.setdefault("reject", arg)
            elif name == "slow" and not arg:
                found.setdefault("slow", True)
            elif name == "expire" and not arg:
                found.setdefault("expire", True)
            elif name == "fault" and arg == "create":
                found.setdefault("fault_create", True)
            elif name == "ok_error" and arg in OK_ERROR_TARGETS:
                found.setdefault("ok_error", arg)
            elif name == "eta" and arg == "zero":
                found.setdefault("eta_zero", True)
            elif name == "render":
                seconds = _non_negative_number(arg)
                if seconds is not None:
                    found.setdefault("render_seconds", seconds)
    return Directives(**found)  # type: ignore[arg-type]


def strip_tokens(text: str) -> str:
    """``text`` without any ``[[...]]`` token, whitespace collapsed (what the clip shows)."""
    return " ".join(_TOKEN.sub(" ", text).split())


def _non_negative_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 else None
