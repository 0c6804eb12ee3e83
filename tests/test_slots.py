"""Held submits (``tasks/slots.py``) on a real journal: parked while the account is full, sent
oldest first as its tasks end, each exactly once, never more at once than the account allows."""

from __future__ import annotations

import uuid

import anyio
import pytest

from kling_video_mcp.config import Settings
from kling_video_mcp.errors import ConcurrencyLimited
from kling_video_mcp.journal import open_journal
from kling_video_mcp.models import GenerationRequest, TaskRecord
from kling_video_mcp.tasks.slots import HeldSubmits, is_held

pytestmark = pytest.mark.anyio

FULL = ConcurrencyLimited("Kling refused the request: the account runs as many tasks at once as its resource pack allows.")


class Account:
    """A provider account that runs at most ``slots`` tasks at once, and remembers what it was sent."""

    def __init__(self, journal, slots: int) -> None:
        self.journal = journal
        self.slots = slots
        self.running: set[str] = set()
        self.sent: list[str] = []
        self.most_at_once = 0

    async def resend(self, record: TaskRecord) -> None:
        if len(self.running) >= self.slots:
            raise FULL
        self.sent.append(record.task_id)
        self.running.add(record.task_id)
        self.most_at_once = max(self.most_at_once, len(self.running))
        record.provider_task_id = f"k-{record.task_id}"
        record.status = "running"
        await self.journal.save(record)

    async def finish_one(self) -> None:
        task_id = sorted(self.running)[0]
        self.running.discard(task_id)
        record = await self.journal.get(task_id)
        record.status = "succeeded"
        await self.journal.save(record)  # the journal's "changed" event is what wakes the held submits


def reserved(index: int) -> TaskRecord:
    request = GenerationRequest(provider="kling", mode="pro", kind="t2v", prompt=f"shot {index}")
    return TaskRecord(
        task_id=f"{index:02d}-{uuid.uuid4().hex[:6]}", provider="kling", mode="pro", kind="t2v",
        endpoint="/v1/videos/text2video", request=request, fingerprint=request.fingerprint(),
    )  # fmt: skip


async def submit_all(journal, held: HeldSubmits, account: Account, count: int) -> list[str]:
    """What the service's send does: journal, submit, and on ConcurrencyLimited hold instead of failing."""
    ids = []
    for index in range(count):
        record = await journal.save(reserved(index))
        ids.append(record.task_id)
        try:
            await account.resend(record)
        except ConcurrencyLimited as exc:
            await held.hold(record, exc)
    return ids


async def test_five_submits_on_two_slots_all_go_oldest_first_never_more_than_two(tmp_path):
    async with open_journal(Settings(state_dir=tmp_path)) as journal:
        account = Account(journal, slots=2)
        held = HeldSubmits(journal, account.resend, retry_seconds=3600)  # only task endings wake it here
        ids = await submit_all(journal, held, account, 5)
        waiting = await held.held("kling")
        assert [record.task_id for record in waiting] == ids[2:]
        assert all(record.status == "queued" and record.warnings[0].startswith("Waiting for a free slot") for record in waiting)
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(held.run)
            with anyio.fail_after(10):
                while len(account.sent) < 5 or account.running:
                    if account.running:
                        await account.finish_one()
                    await anyio.sleep(0.01)
            task_group.cancel_scope.cancel()
        assert account.sent == ids  # each once, in the order asked
        assert account.most_at_once == 2
        for task_id in ids:
            record = await journal.get(task_id)
            assert record.status == "succeeded" and not is_held(record) and record.waiting_for_slot is None
            assert not [warning for warning in record.warnings if warning.startswith("Waiting for a free slot")]


async def test_a_slot_freed_elsewhere_is_found_by_the_periodic_retry(tmp_path):
    async with open_journal(Settings(state_dir=tmp_path)) as journal:
        account = Account(journal, slots=1)
        held = HeldSubmits(journal, account.resend, retry_seconds=0.05)
        ids = await submit_all(journal, held, account, 2)
        account.running.clear()  # the first task ended without this server seeing it (another client's task, say)
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(held.run)
            with anyio.fail_after(5):
                while len(account.sent) < 2:
                    await anyio.sleep(0.01)
            task_group.cancel_scope.cancel()
        assert account.sent == ids


async def test_a_held_submit_is_claimed_once(tmp_path):
    """Two releases racing (two workers, or an ending and the retry) send a held submit once."""
    async with open_journal(Settings(state_dir=tmp_path)) as journal:
        account = Account(journal, slots=0)
        held = HeldSubmits(journal, account.resend)
        await submit_all(journal, held, account, 1)
        account.slots = 5
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(held.release, "kling")
            task_group.start_soon(HeldSubmits(journal, account.resend).release, "kling")
        assert len(account.sent) == 1
