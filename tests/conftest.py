"""Shared fixtures: one provider emulator on loopback, settings that point at it, MCP clients.

Every test drives the real provider code over HTTP against the emulator, and the real MCP
server through ``mcp.Client``, in both protocol eras (``auto`` = 2026-07-28, ``legacy`` =
the 2025-11-25 initialize handshake that Claude Desktop speaks).

The suite runs on pytest-xdist workers (``-n logical --dist loadgroup`` in ``pyproject.toml``;
``-n 0`` runs it in one process). Each worker has its own emulator and PostgreSQL server (free
ports, temporary folders), and every test its own ``tmp_path``, so workers share nothing. The
tests of a module with a module-scoped fixture (a server started once for the module, a built
wheel) run on one worker, so that fixture is made once (:func:`pytest_collection_modifyitems`).
"""

from __future__ import annotations

import io
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mcp import Client

from kling_video_mcp.config import Settings
from kling_video_mcp.emulator import EmulatorConfig, EmulatorServer
from kling_video_mcp.providers import PROVIDERS
from kling_video_mcp.providers.sandbox import TIME_SCALE_VARIABLE
from kling_video_mcp.surface.server import build_server
from pg_server import PostgresUnavailable, fresh_database, postgres_server

EMULATOR_TIME_SCALE = 0.05
"""Emulator clock: a default render (1 s queue + 3 s run) takes 0.2 s."""
POLL_TIME_SCALE = 0.02
"""Server polling pace, scaled to match the fast clock."""
KEY = "test-key"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep the tests of a module that has a module-scoped fixture on one xdist worker: the
    fixture (a server, a wheel) is made once instead of once per worker (``--dist loadgroup``)."""
    for item in items:
        definitions = getattr(item, "_fixtureinfo", None)
        scopes = {defs[-1].scope for defs in definitions.name2fixturedefs.values()} if definitions else set()
        if "module" in scopes:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(time_scale=EMULATOR_TIME_SCALE, valid_keys=frozenset({KEY}))
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> EmulatorServer:
    """The shared emulator, emptied of tasks, requests and faults."""
    emulator_server.reset()
    return emulator_server


def make_settings(tmp_path: Path, emulator: EmulatorServer, **overrides: object) -> Settings:
    """Settings against ``emulator``: every keyed provider's key is ``KEY`` and its base URL the
    emulator's flavour of the same name. A provider variable may be overridden by keyword in
    lower case (``novita_api_key=None`` unsets it, ``wavespeed_base_url=...``,
    ``sandbox_time_scale=...`` for ``KLING_MCP_SANDBOX_TIME_SCALE``); other keywords are settings."""
    keys: dict[str, object] = {}
    others: dict[str, object] = {}
    for provider in PROVIDERS:
        keys |= dict.fromkeys(provider.key_variables, KEY)
        if provider.key_variables and provider.base_url_variable:
            others[provider.base_url_variable] = emulator.url(provider.name)
    others[TIME_SCALE_VARIABLE] = str(EMULATOR_TIME_SCALE)
    values: dict[str, object] = dict(
        provider="novita",
        mode="4k",
        output_dir=tmp_path / "clips",
        state_dir=tmp_path / "state",
        poll_time_scale=POLL_TIME_SCALE,
        submit_retry_seconds=5.0,
        poll_retry_seconds=2.0,
    )
    for name, value in overrides.items():
        variable = next((v for v in (name.upper(), f"KLING_MCP_{name.upper()}") if v in keys or v in others), None)
        if variable in keys:
            keys[variable] = value
        elif variable is not None:
            others[variable] = None if value is None else str(value)
        else:
            values[name] = value
    return Settings(provider_keys=keys, provider_settings=others, **values)


@pytest.fixture
def settings(tmp_path: Path, emulator: EmulatorServer) -> Settings:
    return make_settings(tmp_path, emulator)


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of the suite's own, started on first use and stopped at the end.

    Tests that need it fail (never skip) with the reason when it cannot start.
    """
    try:
        server = postgres_server()
        url = server.__enter__()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


_databases = itertools.count()


@pytest.fixture
def database_url(postgres: str) -> str:
    """``KLING_MCP_DATABASE_URL`` of a new, empty database on the suite's server."""
    return fresh_database(postgres, f"test_{next(_databases)}")


@pytest.fixture(params=["auto", "legacy"])
def era(request: pytest.FixtureRequest) -> str:
    """The MCP protocol era: ``auto`` negotiates 2026-07-28, ``legacy`` speaks 2025-11-25."""
    return request.param


@pytest.fixture
async def client(settings: Settings, era: str) -> AsyncIterator[Client]:
    async with Client(build_server(settings), mode=era) as connected:
        yield connected


def png_bytes(width: int = 640, height: int = 360, color: str = "teal", fmt: str = "PNG") -> bytes:
    """A real image made with Pillow."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def png_file(tmp_path: Path) -> Path:
    path = tmp_path / "first-frame.png"
    path.write_bytes(png_bytes())
    return path
