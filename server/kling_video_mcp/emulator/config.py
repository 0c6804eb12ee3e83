"""Settings of the provider emulator.

One mutable object is shared by every part of a running emulator, so a test may
change, say, ``time_scale`` between two tests without restarting the server.
Values are read when they are needed: a task freezes its own timings when it is
created (docs/providers.md#emulator-task-clock).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

FLAVORS: tuple[str, ...] = ("novita", "highway", "wavespeed", "kling", "fal", "replicate")
"""The emulated providers; each is mounted at ``/<flavor>``."""

HighwayBalanceStyle = Literal["novita", "jiekou", "bare"]
FalValidationMoment = Literal["result", "submit"]


@dataclass
class EmulatorConfig:
    """Every knob of the emulator.

    Durations are seconds. ``time_scale`` multiplies the task clock (queue,
    render and WaveSpeed sync-mode wait), so ``0.01`` turns a 3 s render into
    30 ms. Result-URL lifetimes are *not* scaled: they are a wall-clock promise
    the client reads back from ``video_url_ttl``.
    """

    time_scale: float = 1.0
    queue_seconds: float = 1.0
    """Time a task spends QUEUED / ``created`` (docs/providers.md#emulator-task-clock)."""
    run_seconds: float = 3.0
    """Time a task spends PROCESSING; a ``[[render:N]]`` prompt token overrides it per task."""
    result_ttl_seconds: int = 3600
    """Lifetime of a result URL from the moment a poll hands it out (docs/providers.md#novita-task-result: ``video_url_ttl`` "3600")."""
    state_dir: Path | None = None
    """Where tasks, uploads and clips live; ``None`` uses a private temporary directory."""
    valid_keys: frozenset[str] = frozenset({"test-key", "sandbox"})
    rpm_limit: int = 10_000
    """Submissions allowed per key, per flavor, per rolling minute (docs/providers.md#emulator-keys); 429 beyond."""
    video_long_side: int = 320
    """Pixels on the long side of a synthesized clip (rounded to even)."""
    fps: int = 24
    check_shot_sum: bool = True
    """Reject multi-shot requests whose shot durations do not add up to ``duration`` (docs/providers.md#multi-shot-prompts)."""
    min_shot_seconds: int = 1
    """Shortest allowed shot on routes without a documented rule (official Kling: 1); routes
    with one use it (3 s on WaveSpeed and Novita/HighwayAPI std/4k-i2v: docs/providers.md#shot-lengths)."""
    inline_images_4k_i2v: bool = True
    """Whether Novita/HighwayAPI 4k-i2v take inline (base64) images. Uncertain (docs/providers.md#novita-inline-images):
    ``False`` serves the reading where that route takes only URLs (400 naming the field)."""
    sync_timeout_seconds: float = 90.0
    """WaveSpeed ``enable_sync_mode`` wait before answering ``processing`` / 5004 (docs/providers.md#emulator-switches)."""
    novita_auth_401: bool = False
    """Answer unknown Novita/Highway keys with 401 FAILED_TO_AUTH instead of 403 INVALID_API_KEY (docs/providers.md#novita-errors)."""
    highway_balance_style: HighwayBalanceStyle = "novita"
    """HighwayAPI insufficient-balance body: 400 BILLING_BALANCE_NOT_ENOUGH, 403 NOT_ENOUGH_BALANCE, or bare (docs/providers.md#highway-errors)."""
    wavespeed_output_objects: bool = False
    """WaveSpeed ``outputs`` items as ``{"url": ...}`` objects, as some non-Kling models return them
    (docs/providers.md#wavespeed-task-result), instead of the URL strings Kling returns."""
    wavespeed_balance_status: int = 400
    """HTTP status of WaveSpeed's insufficient-balance answer (docs/providers.md#wavespeed-errors: unknown; 400, 402 or 403)."""
    drop_webhooks: bool = False
    """Never deliver the webhooks submits ask for, as a provider that ignores them would."""
    webhook_retry_seconds: float = 2.0
    """Pause before re-sending a webhook that got no 2xx (scaled by ``time_scale``); Novita's webhook page gives no interval."""

    # -- Kling's official API, fal.ai and Replicate (docs/providers.md, each one's "in the emulator") --
    kling_secret_key: str = "test-secret-key-of-the-kling-emulator"
    """The secret key paired with every valid access key: Kling JWTs must be HS256-signed with it
    (32 bytes or more, as RFC 7518 §3.2 asks of an HS256 key)."""
    kling_max_running: int | None = None
    """Tasks one Kling account may have between ``submitted`` and their end; past it a submit
    answers 429 / 1303. ``None``: no limit (the real limit depends on the resource pack)."""
    kling_4k_mode: bool = True
    """Whether ``mode: "4k"`` exists on Kling's official API (uncertain; most sources say it does).
    ``False`` refuses it with 400 / 1201 naming ``mode``."""
    fal_validation_at: FalValidationMoment = "result"
    """When fal refuses a bad input: ``result`` (the queue takes it, the request ends ``COMPLETED``
    and its result is the 422) or ``submit`` (the 422 answers the submit itself)."""
    fal_webhook_reply_ids_only: bool = False
    """Answer a submit carrying ``fal_webhook`` with only ``request_id`` and ``gateway_request_id``,
    as fal's webhook page shows, instead of the queue's full reply with the three URLs."""
    fal_cancel_stops_running: bool = False
    """Whether cancelling an ``IN_PROGRESS`` fal request stops it (fal only signals the app)."""
    fal_requests_moved: bool = False
    """Give requests submitted meanwhile status, result and cancel URLs off fal's documented layout
    (under ``/queue-moved/``, where alone they answer), as fal warns it may: a client that builds
    those URLs by hand instead of following its submit's answer finds nothing."""
    replicate_4k_mode: bool = True
    """Whether the Replicate model takes ``mode: "4k"`` (added in a later model version)."""
    replicate_retention_seconds: float = 3600.0
    """How long after a Replicate prediction ends its output (file and fields) stays; scaled by
    ``time_scale``. Replicate removes API predictions' data after an hour."""

    def __post_init__(self) -> None:
        if self.state_dir is not None:
            self.state_dir = Path(self.state_dir)
        self.valid_keys = frozenset(self.valid_keys)
        if self.time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        if self.video_long_side < 16 or self.fps < 1:
            raise ValueError("video_long_side must be >= 16 and fps >= 1")
        if self.kling_max_running is not None and self.kling_max_running < 1:
            raise ValueError("kling_max_running must be >= 1, or None for no limit")
        if self.fal_validation_at not in ("result", "submit"):
            raise ValueError('fal_validation_at must be "result" or "submit"')

    def scaled(self, seconds: float) -> float:
        """Real seconds for ``seconds`` of emulated provider time."""
        return seconds * self.time_scale

    def update(self, changes: dict[str, Any]) -> None:
        """Apply ``changes`` (field name -> value), coercing to each field's current type.

        Used by ``POST /__fake/config``; ``state_dir`` cannot change on a live emulator.
        Raises ``ValueError`` for unknown or immutable fields.
        """
        settable = {f.name for f in fields(self)} - {"state_dir"}
        optional = {f.name for f in fields(self) if f.default is None}
        for name, value in changes.items():
            if name not in settable:
                raise ValueError(f"cannot set {name!r}")
            current = getattr(self, name)
            if value is None and name in optional:
                setattr(self, name, None)
                continue
            if isinstance(current, frozenset):
                value = frozenset(value)
            elif isinstance(current, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be a boolean")
            elif isinstance(current, (int, float)):
                value = type(current)(value)
            setattr(self, name, value)
        self.__post_init__()

    def public(self) -> dict[str, Any]:
        """A JSON-ready view of the settings."""
        view = {f.name: getattr(self, f.name) for f in fields(self)}
        view["state_dir"] = str(self.state_dir) if self.state_dir else None
        view["valid_keys"] = sorted(self.valid_keys)
        return view
