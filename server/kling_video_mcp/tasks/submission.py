"""Submission: from a checked request to a task its provider renders, sent at most once.

:meth:`Submission.submit` is the whole protocol: check the request (rules, key, images), price
it against the per-request cap and the budgets, return an identical recent task instead of
paying twice, journal the new task under a submit lock, ask for a person's yes above
``KLING_MCP_CONFIRM_ABOVE_USD`` (:mod:`kling_video_mcp.tasks.consent`), and send it with a
webhook URL when webhooks are on. A submit whose answer never came (a timeout, a crash) is an
*unknown outcome*: never re-sent, counted against the budget, and linked to the provider's
task when the user finds it in the dashboard (:class:`~kling_video_mcp.tasks.adoption.Adoption`).

Every method that acts for a caller takes their ``owner`` and sees only their tasks.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Literal, NamedTuple

import anyio
from filelock import FileLock
from filelock import Timeout as FileLockTimeout

from kling_video_mcp.config import Settings
from kling_video_mcp.errors import ConcurrencyLimited, InvalidRequest, KlingError, UnknownOutcome
from kling_video_mcp.journal import Journal, token_digest
from kling_video_mcp.models import GenerationRequest, ImageSource, TaskRecord, utcnow
from kling_video_mcp.providers import Provider, Providers, Submitted, provider_class
from kling_video_mcp.tasks import consent, validation
from kling_video_mcp.tasks.budgets import Budgets
from kling_video_mcp.tasks.consent import ConsentAnswer, ConsentDesk
from kling_video_mcp.tasks.delivery import Delivery
from kling_video_mcp.tasks.images import frame_image, resolve_image
from kling_video_mcp.tasks.slots import RETRY_SECONDS, HeldSubmits, is_held
from kling_video_mcp.tasks.watcher import Watcher

log = logging.getLogger(__name__)

TASK_REFERENCE = "task:"
WebhookVerdict = Literal["nudged", "unknown", "refused"]
"""What became of a webhook call: its task polled now, no task has its token, or its signature was bad."""
ORPHAN_AFTER = timedelta(minutes=10)
"""On a shared journal (several machines, whose submit lock files cannot be seen), a journaled
submit with no provider task id this old was cut off by a crash: a live submit answers within
``request_deadline`` plus its 429 retries. One machine tells by the submit's lock file at once."""


@dataclass(frozen=True)
class SubmitOptions:
    """How to submit: ``max_cost_usd`` refuses an estimate above it (else ``KLING_MCP_MAX_COST_USD``);
    ``force_new`` pays for a new task even when an identical recent one exists."""

    max_cost_usd: float | None = None
    force_new: bool = False


class SubmitResult(NamedTuple):
    record: TaskRecord
    """Sent (``queued``), parked for a person's yes (``awaiting_confirmation``), or the recent identical task."""
    reused: bool
    """``True`` when ``record`` is an identical recent request's task (nothing new was sent)."""


class Submission:
    """Checks, prices, journals and sends requests; settles and adopts submits without an answer."""

    def __init__(
        self, settings: Settings, journal: Journal, providers: Providers, delivery: Delivery, watcher: Watcher
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.providers = providers
        self.consent = ConsentDesk(settings, journal)
        self.budgets = Budgets(settings, journal)
        self._delivery = delivery
        self._watcher = watcher
        self._submitting: dict[str, FileLock] = {}
        self.held = HeldSubmits(journal, self._resend, retry_seconds=RETRY_SECONDS * settings.poll_time_scale)
        """Submits waiting for a free slot at a provider that limits running tasks (:mod:`.slots`)."""
        self._held_images: dict[str, dict[str, ImageSource]] = {}
        """The checked images of this process's held submits, sent as they were checked."""

    # -- checks and prices ------------------------------------------------------------

    async def prepare(
        self, request: GenerationRequest, *, owner: str, image_dirs: Sequence[Path] | None = None
    ) -> dict[str, ImageSource]:
        """Check everything that can be checked without sending anything; returns the images.

        ``image_dirs`` limits local image files to those folders (see :func:`resolve_image`);
        ``task:<id>`` references name ``owner``'s tasks only.
        Images are read and decoded in a worker thread (up to 10 MB each), off the event loop.

        Raises:
            InvalidRequest: a rule is broken (field and rule named).
            AuthError: the provider has no key configured.
        """
        validation.check(request)
        self.providers.require_key(request.provider)
        references = {"image": request.image, "end_image": request.end_image}
        return {field: await self._image(field, ref, image_dirs, owner) for field, ref in references.items() if ref}

    async def _image(self, field: str, reference: str, image_dirs: Sequence[Path] | None, owner: str) -> ImageSource:
        """Resolve an image reference; ``task:<id>`` (or ``task:<id>#last_frame``) is an earlier clip's
        last frame, made again first if it went missing."""
        if not reference.startswith(TASK_REFERENCE):
            return await anyio.to_thread.run_sync(partial(resolve_image, field, reference, allowed_dirs=image_dirs))
        task_id, _, part = reference.removeprefix(TASK_REFERENCE).partition("#")
        if part not in ("", "last_frame"):
            raise InvalidRequest(f"{field}: {reference!r} names #{part}; only #last_frame is available.")
        record = await self.journal.get(task_id, owner)
        if record is None or not record.delivered:
            state = "unknown" if record is None else "not finished with a clip and its last frame yet"
            raise InvalidRequest(f"{field}: task {task_id!r} is {state}; chain from a task whose clip succeeded.")
        record = await self._delivery.repair(record)
        last_frame = Path(record.last_frame_path) if record.last_frame_path else None
        if last_frame is None or not last_frame.is_file():
            problems = record.companion_problems
            why = problems.get("last_frame") or problems.get("facts") or " ".join(record.warnings)
            if not why:
                gone = record.file_path is None or not Path(record.file_path).is_file()
                why = "the clip is gone from disk, so it cannot be made again" if gone else "it was not made"
            raise InvalidRequest(f"{field}: task {task_id!r} has its clip but no last frame ({why}); chain from another task.")
        # The last frame is the server's own file, so it is allowed whatever image_dirs says.
        return await anyio.to_thread.run_sync(frame_image, field, last_frame)

    async def find_duplicate(self, request: GenerationRequest, owner: str) -> TaskRecord | None:
        """``owner``'s task from an identical request within the idempotency window that may still pay off.

        A task the provider failed is not a duplicate; one with an unknown outcome is (it may
        be running and billed).
        """
        since = utcnow() - timedelta(seconds=self.settings.idempotency_window_seconds)
        record = await self.journal.same_request_since(request.fingerprint(), since, owner)
        if record is None or (record.status == "failed" and record.error_code != UnknownOutcome.code):
            return None
        return record

    async def question(self, request: GenerationRequest, options: SubmitOptions, *, owner: str) -> str | None:
        """What to ask the person before sending ``request`` (see :func:`consent.question`), or
        ``None`` when there is nothing to ask: it spends nothing here (an identical recent task is
        returned instead), or :meth:`submit` refuses it anyway (broken rules, no key, over a cap)."""
        estimate = self.budgets.estimate(request)
        if not consent.needs_confirmation(self.settings, estimate) or validation.problems(request):
            return None
        try:
            self.providers.require_key(request.provider)
            await self.budgets.check_cost(request, options.max_cost_usd, owner=owner)
        except KlingError:
            return None
        if not options.force_new and await self.find_duplicate(request, owner) is not None:
            return None
        return consent.question(request, estimate)

    # -- the protocol -----------------------------------------------------------------

    async def submit(
        self, request: GenerationRequest, options: SubmitOptions, *, owner: str, consent_answer: ConsentAnswer,
        can_show_view: bool, image_dirs: Sequence[Path] | None,
    ) -> SubmitResult:
        """Check, price, journal and send ``owner``'s request; return without waiting for the render.

        ``consent_answer`` is the person's answer when they were asked (``not_asked`` else);
        ``can_show_view``: the client shows the screening room, where a request needing a yes
        nobody gave yet is parked (``awaiting_confirmation``, nothing sent).

        Raises:
            InvalidRequest, AuthError: see :meth:`prepare`. BudgetExceeded: see :meth:`Budgets.check_cost`.
            Declined: the person said no, or the request needs a yes this client cannot get.
            UnknownOutcome: the provider may have created the task (it is journaled as such).
            KlingError: the provider refused it (nothing was created or journaled).
        """
        images = await self.prepare(request, owner=owner, image_dirs=image_dirs)
        if consent_answer in ("declined", "dismissed"):
            raise consent.declined_by_person(self.budgets.estimate(request), dismissed=consent_answer == "dismissed")
        adapter = await self.providers.get(request.provider)
        record, reused = await self.reserve(
            request, adapter, max_cost_usd=options.max_cost_usd, force_new=options.force_new, owner=owner
        )
        if reused:
            return SubmitResult(record, True)
        estimate = record.estimated_cost_usd or 0.0
        if consent_answer == "confirmed":
            record.notes.append(f"The person confirmed spending about ${estimate:.2f} when the client asked them.")
        elif consent.needs_confirmation(self.settings, estimate):
            # Not asked (the client cannot): parked for the screening room if it shows one, else refused.
            return SubmitResult(await self.hold_for_consent(record, can_show_view=can_show_view), False)
        return SubmitResult(await self.send(record, images, adapter), False)

    async def send_confirmed(
        self, found: TaskRecord, *, image_dirs: Sequence[Path] | None, keep_refused: bool = False
    ) -> TaskRecord:
        """Send the request of ``found`` (a record already found for its owner) that the person
        confirmed; a task no longer waiting is returned as it is (never sent twice).

        ``keep_refused``: a refusal is returned as the task it left (an MCP task must not vanish under
        its client): a request the provider refuses outright stays journaled as failed with that error
        instead of being withdrawn.

        Raises:
            Declined: it had already ended as declined (answered no, or no answer in time).
            KlingError: its images no longer pass the checks (the task fails), or the provider refused it.
            Neither with ``keep_refused``.
        """
        try:
            return await self._send_confirmed(found.task_id, image_dirs=image_dirs)
        except KlingError as exc:
            if not keep_refused:
                raise
            if (kept := await self.journal.get(found.task_id)) is not None:
                return kept  # the refusal is on the task already (a failed check, a decline)
            found.status, found.error_code, found.error_message = "failed", exc.code, exc.message
            found.finished_at, found.confirm_by = utcnow(), None
            return await self.journal.save(found)

    async def _send_confirmed(self, task_id: str, *, image_dirs: Sequence[Path] | None) -> TaskRecord:
        record = await self.claim_confirmed(task_id)
        if record is None:
            return await self._delivery.get(task_id)
        assert record.request is not None
        try:
            images = await self.prepare(record.request, owner=record.owner, image_dirs=image_dirs)
            adapter = await self.providers.get(record.request.provider)
        except KlingError as exc:
            await self._delivery.record_error(task_id, exc, final=True)
            self.release_submit(task_id)
            raise
        except BaseException:
            # Cut off before sending (the call was cancelled): nothing went out, so it waits for the
            # person's answer again instead of looking like a submit lost in flight.
            with anyio.CancelScope(shield=True):
                await self.consent.park(record)
            self.release_submit(task_id)
            raise
        return await self.send(record, images, adapter)

    # -- reserving and sending --------------------------------------------------------

    async def reserve(
        self, request: GenerationRequest, adapter: Provider, *, max_cost_usd: float | None, force_new: bool,
        owner: str,
    ) -> tuple[TaskRecord, bool]:
        """Journal a new task of ``owner``'s for ``request``, or return their identical recent one (``True``).

        The duplicate check, the cost check and the journal write happen inside one
        critical section of the journal, held by one submit at a time on every worker, so
        two concurrent calls (on one worker or several) can neither both pay for the same
        request nor both fit into the last of the budget.

        Raises:
            BudgetExceeded: see :meth:`Budgets.check_cost`.
        """
        async with self.journal.exclusive("submit"):
            if not force_new and (existing := await self.find_duplicate(request, owner)) is not None:
                return existing, True
            estimate = await self.budgets.check_cost(request, max_cost_usd, owner=owner)
            record = TaskRecord(
                task_id=uuid.uuid4().hex,
                owner=owner,
                provider=request.provider,
                mode=request.mode,
                kind=request.kind,
                endpoint=adapter.endpoint(request.kind, request.mode),
                request=request,
                fingerprint=request.fingerprint(),
                estimated_cost_usd=estimate,
            )
            # Held until the submit is answered: a record without a provider task id whose lock is
            # free was cut off (the process died mid-submit; the OS released its lock).
            lock = FileLock(self._submit_lock_path(record.task_id), timeout=0)
            lock.acquire()
            self._submitting[record.task_id] = lock
            try:
                return await self.journal.save(record), False
            except BaseException:
                self.release_submit(record.task_id)  # not journaled: nothing to settle
                raise

    def _submit_lock_path(self, task_id: str) -> Path:
        folder = self.settings.state_dir / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"submit-{task_id}.lock"

    def release_submit(self, task_id: str) -> None:
        """Drop the submit lock :meth:`reserve` took: the task is answered, or will not be sent now."""
        if (lock := self._submitting.pop(task_id, None)) is not None:
            lock.release()
            Path(lock.lock_file).unlink(missing_ok=True)

    async def hold_for_consent(self, record: TaskRecord, *, can_show_view: bool) -> TaskRecord:
        """Park a just-reserved task for a person's yes (nothing sent), or refuse it.

        Its submit lock is released first: a parked task is not in flight, and the orphan rule
        leaves it alone (only ``queued`` records can be orphans).

        Raises:
            Declined: the client can neither ask the person nor show the view.
        """
        self.release_submit(record.task_id)
        return await self.consent.hold(record, can_show_view=can_show_view)

    async def claim_confirmed(self, task_id: str) -> TaskRecord | None:
        """Take a task the person confirmed for sending, under its submit lock (see :meth:`reserve`);
        ``None`` when it is not waiting (already sent, or being sent by another server process).

        Raises:
            Declined: it had already ended as declined.
        """
        lock = FileLock(self._submit_lock_path(task_id), timeout=0)
        try:
            lock.acquire()
        except FileLockTimeout:
            return None
        self._submitting[task_id] = lock
        record = None
        try:
            record = await self.consent.claim(task_id)
        finally:
            if record is None:  # not waiting, or declined: nothing will be sent
                self.release_submit(task_id)
        return record

    async def send(self, record: TaskRecord, images: dict[str, ImageSource], adapter: Provider) -> TaskRecord:
        """Submit a reserved task to its provider and start watching it.

        Raises:
            UnknownOutcome: the provider may have created a task; the record keeps the error.
            KlingError: the provider refused (nothing was created; the record is removed).
        """
        try:
            return await self._send(record, images, adapter)
        finally:
            self.release_submit(record.task_id)  # only once the answer (or the unknown outcome) is journaled

    async def _resend(self, record: TaskRecord) -> None:
        """Send a held submit that :class:`HeldSubmits` claimed, under its submit lock as a first
        submit is (see :data:`~kling_video_mcp.tasks.slots.Resend`).

        Its images are the ones checked at submit time; after a restart they are read again from
        the same references, which passed the caller's checks (folders, owner) when it was submitted.

        Raises:
            ConcurrencyLimited: the account is still full (held again by the caller).
        """
        lock = FileLock(self._submit_lock_path(record.task_id), timeout=0)
        lock.acquire()
        self._submitting[record.task_id] = lock
        try:
            assert record.request is not None
            images = self._held_images.get(record.task_id)
            if images is None:
                images = await self.prepare(record.request, owner=record.owner)
            adapter = await self.providers.get(record.provider)
        except KlingError as exc:
            await self._delivery.record_error(record.task_id, exc, final=True)
            self.release_submit(record.task_id)
            return
        try:
            await self._send(record, images, adapter, resending=True)
        except ConcurrencyLimited:
            raise  # held again, its images kept for the next try
        except UnknownOutcome:
            pass  # _send journaled it on the task
        except KlingError as exc:
            # Refused outright after waiting: the task fails with the reason rather than vanishing.
            await self._delivery.record_error(record.task_id, exc, final=True)
        finally:
            self.release_submit(record.task_id)
        self._held_images.pop(record.task_id, None)

    async def _send(
        self, record: TaskRecord, images: dict[str, ImageSource], adapter: Provider, *, resending: bool = False
    ) -> TaskRecord:
        try:
            submitted = await self._submit(record, images, adapter)
        except ConcurrencyLimited as exc:
            if resending:
                raise  # HeldSubmits holds it again, in its place
            # The account runs as many tasks as it may: the task waits for a slot, nothing sent.
            self._held_images[record.task_id] = images
            return await self.held.hold(record, exc)
        except UnknownOutcome as exc:
            error = UnknownOutcome(self._unknown_outcome_advice(exc.message, record), task_id=record.task_id)
            await self._delivery.record_error(record.task_id, error, final=True)
            raise error from exc
        except KlingError:
            if not resending:
                await self.journal.delete(record.task_id)
            raise
        except BaseException:
            # Cancelled or crashed mid-submit: it may have been sent, and the record says so.
            advice = self._unknown_outcome_advice("The submit was interrupted before an answer came.", record)
            with anyio.CancelScope(shield=True):
                await self._delivery.record_error(record.task_id, UnknownOutcome(advice, task_id=record.task_id), final=True)
            raise
        record.provider_task_id = submitted.provider_task_id
        record.provider_urls = dict(submitted.follow_urls)
        record.provider_requests += 1
        record.notes.extend(submitted.notes)
        record.watched_since = utcnow()
        await self.journal.save(record)
        await self._watcher.watch(record.task_id)
        log.info("task %s (user %s): submitted to %s", record.task_id, record.owner, record.provider)
        return record

    async def _submit(self, record: TaskRecord, images: dict[str, ImageSource], adapter: Provider) -> Submitted:
        """The submit, with a webhook URL when webhooks are on.

        A provider may refuse our webhook URL (some document that it must be public HTTPS; whether
        they check is unknown: ``docs/providers.md``, "Webhooks"). A refusal creates nothing, so the
        request is sent once more without it, and the task is polled as usual.
        """
        webhook_url = await self._webhook_url(record)
        if webhook_url is None:
            return await adapter.submit(record.request, images)
        try:
            return await adapter.submit(record.request, images, webhook_url=webhook_url)
        except InvalidRequest:
            # Not the provider's words in the log: they may quote the URL, whose token is a credential.
            log.warning("task %s: %s refused the submit with a webhook; sending it without", record.task_id, adapter.label)
            record.webhook_token_sha256 = None
            record.notes.append(f"{adapter.label} refused the webhook URL, so this task is polled instead.")
            await self.journal.save(record)
            return await adapter.submit(record.request, images)

    async def _webhook_url(self, record: TaskRecord) -> str | None:
        """A fresh webhook URL for ``record`` when webhooks are on, its token's digest journaled first.

        The token (256 random bits) is the URL's only credential: the journal keeps its sha256,
        so the receiver can find the task, and nothing keeps or logs the token itself.
        """
        if (base := self.settings.webhook_base_url) is None:
            return None
        token = secrets.token_urlsafe(32)
        record.webhook_token_sha256 = token_digest(token)
        await self.journal.save(record)  # before the submit: the provider may call back at once
        return f"{base}/{token}"

    @staticmethod
    def _unknown_outcome_advice(what_happened: str, record: TaskRecord) -> str:
        label = provider_class(record.provider).label
        return (
            f"{what_happened} It was not re-sent, to avoid paying twice. If it went through, it costs about "
            f"${record.estimated_cost_usd or 0:.2f}. To check: look for a new task in your {label} dashboard; if "
            f"there is one, call check_task with its task id and provider='{record.provider}', mode='{record.mode}'. "
            "Repeating this request returns this record; pass force_new=true only once you know nothing was created."
        )

    # -- webhooks -----------------------------------------------------------------------

    async def webhook(self, token: str, headers: Mapping[str, str], body: bytes) -> WebhookVerdict:
        """A provider called the webhook URL carrying ``token`` (given with the task's submit):
        the task's watcher polls it now. A provider that signs its webhooks has the signature
        checked (:meth:`Provider.verify_webhook`): a forged or stale call is ``"refused"`` and
        changes nothing. Nothing else in the call is trusted; the poll asks the provider itself."""
        record = await self.journal.find_webhook(token)
        if record is None:
            return "unknown"
        provider = await self.providers.get(record.provider)
        if await provider.verify_webhook(headers, body) is False:
            log.warning("task %s: a webhook call with a bad signature was refused", record.task_id)
            return "refused"
        if not record.finished:
            await self._watcher.nudge(record.task_id)
        return "nudged"

    # -- submits without an answer ----------------------------------------------------

    async def settle_if_orphaned(self, record: TaskRecord) -> None:
        """Settle a journaled submit that never got an answer, if nobody is still sending it.

        Its outcome is unknown: the provider may have made (and billed) a task. No provider
        lists its tasks, so the record asks the user to look in the dashboard, and adopting the
        task found there (``check_task`` with its id, ``provider`` and ``mode``) links it back
        to this record (see :class:`~kling_video_mcp.tasks.adoption.Adoption`).
        """
        if record.status != "queued" or record.task_id in self._submitting or is_held(record):
            return  # settled already, or a request parked for a person's confirmation (nothing sent)
        if self.journal.shared:
            # Another worker, perhaps on another machine, may be sending it: its lock file is not
            # here to see. A live submit is answered well within ORPHAN_AFTER.
            if record.created_at > utcnow() - ORPHAN_AFTER:
                return
        else:
            lock_path = self._submit_lock_path(record.task_id)
            try:
                with FileLock(lock_path, timeout=0):
                    pass
            except FileLockTimeout:
                return  # another server process on this journal is sending it right now
            lock_path.unlink(missing_ok=True)
        advice = self._unknown_outcome_advice("The server stopped while this submit was in flight.", record)
        await self._delivery.record_error(record.task_id, UnknownOutcome(advice, task_id=record.task_id), final=True)
