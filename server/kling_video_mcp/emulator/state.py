"""The emulator's shared state and the operations on it that do not depend on a flavor.

One :class:`Emulator` backs one app: its settings, tasks and files, the request
log, armed faults and the rate limiter. The Python API of ``EmulatorServer``
and the HTTP control endpoints both end up here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import httpx2

from .access import RateLimiter
from .config import FLAVORS, EmulatorConfig
from .faults import Fault, FaultBook
from .journal import RequestLog
from .media import ClipSpec, fit_background, frame_size, render_clip
from .rules import ASPECT_RATIOS, ImageInput, Submission
from .store import Store, write_atomic
from .tasks import Outcome, Phase, Shot, Task
from .tokens import Directives, strip_tokens

log = logging.getLogger(__name__)

UNREACHABLE_HOST = "unreachable.invalid"
EXPIRE_TOKEN_TTL = 1
"""Seconds a result URL lives when the prompt carries ``[[expire]]`` (docs/providers.md#emulator-prompt-tokens)."""
WEBHOOK_RETRIES = 5
"""Novita: "up to 5 retries" after a timeout or a non-2xx answer (docs/providers.md#novita-webhooks)."""
WEBHOOK_TIMEOUT_SECONDS = 5.0
"""Novita: a webhook not answered within 5 s counts as failed (docs/providers.md#novita-webhooks)."""
WEBHOOK_WATCH_SECONDS = 0.02
"""How often a pending webhook looks whether its task has ended."""

WebhookBody = Callable[[Task, float], dict[str, Any]]
"""The JSON body of a webhook about a task at an instant."""
WebhookSigner = Callable[[Task, bytes], Mapping[str, str]]
"""Headers that authenticate one delivery of a raw webhook body."""


class Emulator:
    """State shared by every flavor of one emulator app."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.store = Store(config.state_dir)
        self.faults = FaultBook()
        self.journal = RequestLog()
        self.limiter = RateLimiter()
        self._render_locks: dict[str, threading.Lock] = {}
        self.webhooks: list[dict[str, Any]] = []
        """Every webhook delivery attempt: ``{task_id, url, status}`` (``status`` 0: no answer)."""
        self._deliveries: set[asyncio.Task[None]] = set()

    @staticmethod
    def now() -> float:
        """Wall-clock unix seconds: the task clock must survive restarts, so no monotonic time."""
        return time.time()

    # -- control -----------------------------------------------------------

    def reset(self) -> None:
        """Forget every task, upload, clip, recorded request, armed fault and rate-limit window."""
        self.store.clear()
        self.journal.clear()
        self.faults.clear()
        self.limiter.clear()
        self.webhooks.clear()

    def inject_fault(self, flavor: str, target: str, kind: str, times: int = 1, **params: Any) -> Fault:
        """Arm a fault (see ``faults``); raises ``ValueError`` for an impossible combination."""
        fault = Fault(flavor=flavor, target=target, kind=kind, times=times, **params)
        self.faults.arm(fault)
        return fault

    def complete(self, flavor: str, task_id: str) -> Task:
        """Make a task succeed now; raises ``KeyError`` when ``flavor`` has no such task."""
        task = self.find_task(flavor, task_id)
        if task is None:
            raise KeyError(task_id)
        task.force_success(self.now())
        self.store.save(task)
        return task

    # -- tasks -------------------------------------------------------------

    def find_task(self, flavor: str, task_id: str, key: str | None = None) -> Task | None:
        """The task ``task_id`` of ``flavor`` (and of ``key``, when given: other keys' tasks do not exist, docs/providers.md#emulator-routes)."""
        task = self.store.get(task_id)
        if task is None or task.flavor != flavor or (key is not None and task.key != key):
            return None
        return task

    async def create_task(
        self, flavor: str, task_id: str, key: str, submission: Submission, directives: Directives
    ) -> Task:
        """Register a task for an accepted submission, freezing its timings now (docs/providers.md#emulator-task-clock).

        A download failure ends the task as soon as it leaves the queue; otherwise
        it renders for ``run_seconds`` (or ``[[render:N]]``), both scaled.
        """
        config, created = self.config, self.now()
        images = [image for image in (submission.image, submission.end_image) if image is not None]
        outcome = _outcome(directives, images)
        render = directives.render_seconds if directives.render_seconds is not None else config.run_seconds
        run = 0.0 if outcome is Outcome.MEDIA else config.scaled(render)
        # i2v frames take the first image's shape; when the image is unseen (external URL), t2v's default.
        image = submission.image
        background = image.data if image is not None else None
        if image is not None and background is not None:
            ratio = image.width / image.height
        else:
            ratio = ASPECT_RATIOS[submission.aspect_ratio]
        width, height = frame_size(config.video_long_side, ratio)
        task = Task(
            id=task_id,
            flavor=flavor,
            key=key,
            model=submission.model.name,
            duration=submission.duration,
            sound=submission.sound,
            width=width,
            height=height,
            shots=[Shot(strip_tokens(shot.text), shot.seconds) for shot in submission.scenes()],
            created_at=created,
            starts_at=created + config.scaled(config.queue_seconds),
            run_seconds=run,
            outcome=outcome,
            slow=directives.slow,
            url_ttl=EXPIRE_TOKEN_TTL if directives.expire else config.result_ttl_seconds,
            has_background=background is not None,
            time_scale=config.time_scale,
            eta_zero=directives.eta_zero,
            ok_error_polls=directives.ok_error == "poll",
        )
        if background is not None:
            png = await anyio.to_thread.run_sync(fit_background, background, (width, height))
            write_atomic(self.store.background_path(task.id), png)
        self.store.save(task)
        log.info("%s task %s created (%s, %ss, outcome=%s)", flavor, task.id, task.model, task.duration, outcome)
        return task

    async def clip(self, task: Task) -> Path:
        """The rendered clip of ``task``, rendering it off the event loop on first use."""
        path = self.store.clip_path(task.id)
        if not path.exists():
            await anyio.to_thread.run_sync(self._render_once, task, path)
        return path

    def _render_once(self, task: Task, path: Path) -> None:
        # Two first downloads of one clip must not render it twice; setdefault is atomic under the GIL.
        with self._render_locks.setdefault(task.id, threading.Lock()):
            if path.exists():
                return
            started = time.perf_counter()
            background = self.store.background_path(task.id) if task.has_background else None
            spec = ClipSpec(task.shots, task.duration, self.config.fps, task.width, task.height, task.sound, background)
            render_clip(spec, path)
            elapsed = time.perf_counter() - started
            log.info("rendered %s (%ss, %dx%d) in %.2fs", task.id, task.duration, task.width, task.height, elapsed)

    # -- webhooks ----------------------------------------------------------

    def send_webhook(
        self,
        task: Task,
        url: str,
        body: WebhookBody,
        *,
        sign: WebhookSigner | None = None,
        stages: Sequence[str] = ("ended",),
    ) -> None:
        """POST ``body(task, instant)`` to ``url`` as the task passes each of ``stages``
        (docs/providers.md#emulator-webhooks).

        Stages: ``created`` (at once), ``started`` (it left the queue; skipped when it ended without
        running) and ``ended``. The body describes the stage: ``instant`` is the start for
        ``started``, the moment of delivery otherwise. ``sign(task, raw_body)`` returns headers that
        authenticate one attempt (fal's ED25519, Replicate's Standard Webhooks). A delivery that gets
        no 2xx within :data:`WEBHOOK_TIMEOUT_SECONDS` is retried up to :data:`WEBHOOK_RETRIES`
        times. ``drop_webhooks`` (read at each delivery) sends nothing. Call from the emulator's
        event loop (a request handler).
        """
        delivery = asyncio.get_running_loop().create_task(self._deliver_webhook(task.id, url, body, sign, stages))
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)

    async def _deliver_webhook(
        self, task_id: str, url: str, body: WebhookBody, sign: WebhookSigner | None, stages: Sequence[str]
    ) -> None:
        for stage in stages:
            task = await self._reached(task_id, stage)
            if task is None:
                return  # reset meanwhile
            if stage == "started" and task.phase(task.starts_at) is not Phase.RUNNING:
                continue
            instant = task.starts_at if stage == "started" else self.now()
            await self._post_webhook(task, url, body(task, instant), sign)

    async def _reached(self, task_id: str, stage: str) -> Task | None:
        """The task once it has passed ``stage``, or ``None`` when it no longer exists."""
        while True:
            task = self.store.get(task_id)  # read again: a forced completion changes its end
            if task is None:
                return None
            now = self.now()
            ended = task.phase(now) in (Phase.SUCCEEDED, Phase.FAILED)
            if ended or stage == "created" or (stage == "started" and now >= task.starts_at):
                return task
            await anyio.sleep(WEBHOOK_WATCH_SECONDS)

    async def _post_webhook(self, task: Task, url: str, payload: dict[str, Any], sign: WebhookSigner | None) -> None:
        if self.config.drop_webhooks:
            log.info("task %s: webhook dropped (drop_webhooks)", task.id)
            return
        raw = json.dumps(payload).encode()
        async with httpx2.AsyncClient(timeout=WEBHOOK_TIMEOUT_SECONDS) as client:
            for attempt in range(1 + WEBHOOK_RETRIES):
                if attempt:
                    await anyio.sleep(self.config.scaled(self.config.webhook_retry_seconds))
                headers = {"content-type": "application/json", **(sign(task, raw) if sign else {})}
                try:
                    status = (await client.post(url, content=raw, headers=headers)).status_code
                except httpx2.TransportError:
                    status = 0
                self.webhooks.append({"task_id": task.id, "url": url, "status": status})
                if 200 <= status < 300:
                    return
        log.info("task %s: webhook never answered 2xx; gave up after %d retries", task.id, WEBHOOK_RETRIES)

    # -- media -------------------------------------------------------------

    def resolve_image_url(self, url: str, own_netloc: str) -> ImageInput:
        """What a provider would find at an image URL (docs/providers.md#emulator-validation).

        URLs on this emulator's media routes are read from the store (an unknown
        name cannot be downloaded); ``unreachable.invalid`` cannot be downloaded;
        any other URL is taken on trust, never fetched.
        """
        parts = urlsplit(url)
        if parts.hostname == UNREACHABLE_HOST:
            return ImageInput(url, unreachable=True)
        if parts.netloc != own_netloc:
            return ImageInput(url)
        segments = parts.path.split("/")
        if len(segments) == 5 and segments[1] in FLAVORS and segments[2:4] == ["__fake", "media"]:
            path = self.store.upload_path(segments[4])
            return ImageInput(url, data=path.read_bytes()) if path else ImageInput(url, unreachable=True)
        return ImageInput(url, unreachable=True)


def _outcome(directives: Directives, images: list[ImageInput]) -> Outcome:
    """How a task will end: a download failure first (it happens before rendering), then prompt tokens."""
    if any(image.unreachable for image in images):
        return Outcome.MEDIA
    return Outcome(directives.fail) if directives.fail else Outcome.SUCCESS
