"""The journal's one interface on both backends: the embedded SQLite file and a real PostgreSQL.

Every behaviour test runs on both (the ``journal`` fixture). What only a shared database can
promise (leases that exclude, events and rate gates across workers) is tested on PostgreSQL
with two journals open at once, as two workers would have them; the embedded journal's own
promise there (one machine: leases always grant) is tested too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta

import anyio
import pytest
from mcp import Client

from conftest import make_settings
from helpers import eventually
from kling_video_mcp.config import Settings
from kling_video_mcp.journal import Journal, open_journal, token_digest
from kling_video_mcp.models import GenerationRequest, TaskRecord, utcnow
from kling_video_mcp.providers import provider_class
from kling_video_mcp.surface.server import build_server
from workers import query

pytestmark = pytest.mark.anyio


def record(task_id: str, *, prompt: str = "a lighthouse", provider_task_id: str | None = "p-1", **fields) -> TaskRecord:
    request = GenerationRequest(provider="novita", mode="std", kind="t2v", prompt=prompt)
    return TaskRecord(
        task_id=task_id, provider="novita", mode="std", kind="t2v", endpoint="kling-v3.0-std-t2v", request=request,
        fingerprint=request.fingerprint(), provider_task_id=provider_task_id, estimated_cost_usd=0.42, **fields,
    )  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
def journal_settings(request: pytest.FixtureRequest, tmp_path, emulator) -> Settings:
    url = request.getfixturevalue("database_url") if request.param == "postgres" else None
    return make_settings(tmp_path, emulator, database_url=url)


@pytest.fixture
async def journal(journal_settings: Settings) -> AsyncIterator[Journal]:
    async with open_journal(journal_settings) as opened:
        yield opened


@pytest.fixture
async def two_workers(database_url: str, tmp_path, emulator) -> AsyncIterator[tuple[Journal, Journal]]:
    """Two PostgreSQL journals on one database: what two workers see."""
    settings = make_settings(tmp_path, emulator, database_url=database_url)
    async with open_journal(settings) as first, open_journal(settings) as second:
        yield first, second


async def test_a_saved_task_reads_back_by_either_id(journal):
    saved = await journal.save(record("a" * 32, provider_task_id="prov-7"))
    assert (await journal.get("a" * 32)) == saved
    assert (await journal.get("prov-7")).task_id == "a" * 32
    assert (await journal.find_provider_task("novita", "prov-7")).task_id == "a" * 32
    assert await journal.find_provider_task("wavespeed", "prov-7") is None
    await journal.delete("a" * 32)
    assert await journal.get("a" * 32) is None


async def test_queries_select_what_they_promise(journal):
    old = utcnow() - timedelta(hours=2)
    await journal.save(record("old", prompt="old", created_at=old, provider_task_id=None))
    await journal.save(record("done", prompt="done", status="succeeded", file_path="/clips/x.mp4"))
    await journal.save(record("failed", prompt="failed", status="failed"))
    await journal.save(record("running", prompt="running", status="running"))
    assert [r.task_id for r in await journal.unfinished()] == ["running"]
    assert [r.task_id for r in await journal.orphaned_submits(utcnow() - timedelta(hours=1))] == ["old"]
    fingerprint = record("x", prompt="done").fingerprint
    assert (await journal.same_request_since(fingerprint, old)).task_id == "done"
    assert await journal.same_request_since(fingerprint, utcnow() + timedelta(seconds=1)) is None
    assert {r.task_id for r in await journal.created_since(utcnow() - timedelta(hours=1))} == {"done", "failed", "running"}
    assert [r.task_id for r in await journal.recent("failed")] == ["failed"]
    assert [r.task_id for r in await journal.recent(limit=2)] == ["running", "failed"]


async def test_a_webhook_token_finds_its_task_by_digest_only(journal):
    await journal.save(record("hooked", webhook_token_sha256=token_digest("secret-token")))
    assert (await journal.find_webhook("secret-token")).task_id == "hooked"
    assert await journal.find_webhook("another-token") is None
    assert await journal.find_webhook(token_digest("secret-token")) is None  # the digest is no credential


async def test_reopening_applies_no_migration_twice(journal_settings):
    async with open_journal(journal_settings) as first:
        await first.save(record("kept"))
    async with open_journal(journal_settings) as again:
        assert (await again.get("kept")).task_id == "kept"


async def test_a_journal_from_before_schema_versions_is_upgraded_in_place(tmp_path, emulator):
    import sqlite3

    from kling_video_mcp.journal.sqlite import MIGRATIONS

    settings = make_settings(tmp_path, emulator)
    settings.journal_path.parent.mkdir(parents=True)
    old = record("from-last-year")
    with sqlite3.connect(settings.journal_path) as db:  # the schema as released before versions were kept
        db.executescript(MIGRATIONS[0])
        db.execute(
            "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?)",
            (old.task_id, old.provider, old.provider_task_id, old.status, old.fingerprint,
             old.created_at.isoformat(), old.model_dump_json()),
        )  # fmt: skip
    async with open_journal(settings) as journal:
        assert (await journal.get("from-last-year")) == old
        await journal.save(record("hooked", webhook_token_sha256=token_digest("t")))
        assert (await journal.find_webhook("t")).task_id == "hooked"
    with sqlite3.connect(settings.journal_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_workers_starting_together_migrate_once(database_url, tmp_path, emulator):
    import psycopg

    from kling_video_mcp.journal.postgres import MIGRATIONS, migrate

    results = []

    async def start() -> None:
        results.append(await migrate(database_url))

    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(start)
    assert results == [len(MIGRATIONS)] * 4
    with psycopg.connect(database_url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))


async def test_the_exclusive_section_admits_one_holder_at_a_time(journal_settings):
    async with open_journal(journal_settings) as first, open_journal(journal_settings) as second:
        inside: list[str] = []
        overlaps: list[bool] = []

        async def hold(journal: Journal, name: str) -> None:
            for _ in range(3):
                async with journal.exclusive("submit"):
                    inside.append(name)
                    overlaps.append(len(inside) > 1)
                    await anyio.sleep(0.02)
                    inside.remove(name)

        async with anyio.create_task_group() as group:
            group.start_soon(hold, first, "first")
            group.start_soon(hold, second, "second")
    assert overlaps == [False] * 6


async def test_the_embedded_journal_serves_one_machine(tmp_path, emulator):
    async with open_journal(make_settings(tmp_path, emulator)) as journal:
        assert not journal.shared
        await journal.save(record("t"))
        assert await journal.take_lease("t", "a", 10) and await journal.take_lease("t", "b", 10)
        assert await journal.claim("a", 10, 10) == []  # every process watches what it knows
        assert journal.rate_gate("novita", 5.0) is None  # each process paces its own requests


def lease_holder(database_url: str, task_id: str) -> str | None:
    """Who holds a live lease on the task, read from the database (the journal has no reader for it)."""
    rows = query(database_url, "SELECT lease_owner FROM tasks WHERE task_id = %s AND lease_expires >= now()", task_id)
    return rows[0][0] if rows else None


async def test_a_lease_excludes_other_workers_until_it_lapses(two_workers, database_url):
    first, second = two_workers
    await first.save(record("t"))
    assert await first.take_lease("t", "worker-1", 0.5)
    assert not await second.take_lease("t", "worker-2", 0.5)
    assert lease_holder(database_url, "t") == "worker-1"
    assert await first.renew_leases("worker-1", ["t"], 0.5) == {"t"}
    assert await second.renew_leases("worker-2", ["t"], 0.5) == set()
    await anyio.sleep(0.6)
    assert await second.take_lease("t", "worker-2", 5)
    assert await first.renew_leases("worker-1", ["t"], 5) == set()  # lost: worker-1 must stop watching
    await second.release_lease("t", "worker-2")
    assert lease_holder(database_url, "t") is None


async def test_claims_split_the_open_tasks_and_skip_finished_ones(two_workers):
    first, second = two_workers
    for number in range(20):
        await first.save(record(f"open-{number:02}", provider_task_id=f"p{number}"))
    await first.save(record("delivered", status="succeeded", file_path="/clips/d.mp4"))
    await first.save(record("unsent", provider_task_id=None))
    claims: dict[str, list[str]] = {}

    async def claim(journal: Journal, owner: str) -> None:
        claims[owner] = await journal.claim(owner, 10, 50)

    async with anyio.create_task_group() as group:
        group.start_soon(claim, first, "w1")
        group.start_soon(claim, second, "w2")
    assert not set(claims["w1"]) & set(claims["w2"])
    assert sorted(claims["w1"] + claims["w2"]) == [f"open-{number:02}" for number in range(20)]
    assert await first.claim("w3", 10, 50) == []


async def test_events_reach_every_worker(two_workers):
    first, second = two_workers
    seen: list[tuple[str, str]] = []
    got = anyio.Event()

    def listen(kind: str, task_id: str) -> None:
        seen.append((kind, task_id))
        got.set()

    second.subscribe(listen)
    started = time.perf_counter()
    await first.save(record("t"))
    with anyio.fail_after(5):
        await got.wait()
    assert seen == [("changed", "t")] and time.perf_counter() - started < 1.0
    await first.publish("nudge", "t")
    await eventually(lambda: ("nudge", "t") in seen, timeout=5, interval=0.01, what="the nudge reached the other worker")


async def test_the_rate_gate_holds_for_all_workers_together(two_workers):
    first, second = two_workers
    gates = [first.rate_gate("novita", 10.0), second.rate_gate("novita", 10.0)]
    sent: list[float] = []

    async def send(gate) -> None:
        for _ in range(5):
            await gate.wait()
            sent.append(time.perf_counter())

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for gate in gates:
            group.start_soon(send, gate)
    # Ten requests at 10 per second between the two: the k-th goes no sooner than k × 0.1 s after
    # the start (each gate alone would let two go at once). A loaded machine only wakes them later.
    offsets = [round(moment - started, 3) for moment in sorted(sent)]
    assert all(offset >= 0.1 * k - 0.005 for k, offset in enumerate(offsets)), offsets


async def test_two_workers_pay_once_for_one_request_sent_to_both(database_url, tmp_path, emulator):
    price = provider_class("novita").estimate_usd("std", False, 5)
    settings = make_settings(tmp_path, emulator, database_url=database_url, budget_usd=round(2.5 * price, 2))
    arguments = {"prompt": "one lighthouse, once", "duration": 5, "mode": "std", "provider": "novita"}

    async def on_both(one: Client, two: Client, first: dict, second: dict) -> list:
        results = []

        async def submit(client: Client, call: dict) -> None:
            results.append(await client.call_tool("generate_video", call))

        async with anyio.create_task_group() as group:
            group.start_soon(submit, one, first)
            group.start_soon(submit, two, second)
        return results

    async with Client(build_server(settings)) as one, Client(build_server(settings)) as two:
        same = await on_both(one, two, arguments, arguments)
        assert len({result.structured_content["task_id"] for result in same}) == 1, same
        # 1.5 clips' worth of budget is left, counted over both workers' tasks: of two new
        # requests at the same instant, one on each worker, exactly one fits.
        other = {**arguments, "prompt": "a second lighthouse"}
        different = await on_both(one, two, other, {**other, "prompt": "a third lighthouse"})
    assert sorted(result.is_error for result in different) == [False, True]
    refused = next(result for result in different if result.is_error)
    assert refused.structured_content["error"]["code"] == "budget_exceeded"
    submits = [r for r in emulator.requests("novita") if r["method"] == "POST" and "/v3/async/" in r["path"]]
    assert len(submits) == 2
