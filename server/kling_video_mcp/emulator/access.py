"""Who may call, and how often: API-key classification and the per-minute limiter.

The special keys and their meaning come from docs/providers.md#emulator-keys; each
flavor turns a :class:`KeyStatus` into its own error envelope (see the same
section).
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from enum import Enum

ZERO_BALANCE_KEY = "zero-balance-key"
RATELIMITED_KEY = "ratelimited-key"
FORBIDDEN_KEY = "forbidden-key"
SPECIAL_KEYS = frozenset({ZERO_BALANCE_KEY, RATELIMITED_KEY, FORBIDDEN_KEY})

WINDOW_SECONDS = 60.0


class KeyStatus(Enum):
    """Outcome of reading the ``Authorization`` header."""

    MISSING = "missing"
    UNKNOWN = "unknown"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    OK = "ok"


@dataclass(frozen=True)
class Caller:
    """The caller's key (``""`` when absent) and what it entitles them to."""

    key: str
    status: KeyStatus

    @property
    def broke(self) -> bool:
        """True for the key whose account has no balance (docs/providers.md#emulator-keys)."""
        return self.key == ZERO_BALANCE_KEY


def identify(authorization: str | None, valid_keys: frozenset[str], scheme: str = "bearer") -> Caller:
    """Classify a raw ``Authorization`` header value against ``valid_keys``.

    Only ``<scheme> <key>`` is accepted: ``Bearer`` (docs/providers.md#emulator-keys), ``Key`` on fal.ai; any other
    scheme is an unknown key, an empty header a missing one.
    """
    raw = (authorization or "").strip()
    if not raw:
        return Caller("", KeyStatus.MISSING)
    sent_scheme, _, key = raw.partition(" ")
    key = key.strip()
    if sent_scheme.lower() != scheme:
        return Caller(raw, KeyStatus.UNKNOWN)
    if not key:
        return Caller("", KeyStatus.MISSING)
    if key == FORBIDDEN_KEY:
        return Caller(key, KeyStatus.FORBIDDEN)
    if key == RATELIMITED_KEY:
        return Caller(key, KeyStatus.RATE_LIMITED)
    if key in valid_keys or key in SPECIAL_KEYS:
        return Caller(key, KeyStatus.OK)
    return Caller(key, KeyStatus.UNKNOWN)


class RateLimiter:
    """Sliding one-minute window of submissions per (flavor, key).

    The window is real time, not scaled: ``rpm_limit`` is a rate, not a duration
    of the emulated task clock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: defaultdict[tuple[str, str], deque[float]] = defaultdict(deque)

    def allow(self, flavor: str, key: str, limit: int, now: float) -> bool:
        """Record one submission at ``now`` (unix seconds) unless ``limit`` is already reached."""
        with self._lock:
            hits = self._hits[(flavor, key)]
            while hits and hits[0] <= now - WINDOW_SECONDS:
                hits.popleft()
            if len(hits) >= limit:
                return False
            hits.append(now)
            return True

    def clear(self) -> None:
        with self._lock:
            self._hits.clear()
