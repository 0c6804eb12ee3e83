"""The ``sandbox`` provider: the bundled emulator, embedded, spoken to over real HTTP.

It speaks the WaveSpeed protocol, so sandbox tasks run through the same adapter code as
real ones, and it finishes within seconds with a placeholder clip that shows the prompt.
Its state lives under ``KLING_MCP_STATE_DIR/sandbox``, so a restarted server still
finishes sandbox tasks it started before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx2

from kling_video_mcp.config import Settings
from kling_video_mcp.models import GenerationRequest
from kling_video_mcp.providers.wavespeed import WaveSpeedAdapter

if TYPE_CHECKING:
    from kling_video_mcp.emulator import EmulatorServer

SANDBOX_KEY = "sandbox"
QUEUE_SECONDS = 0.5
RENDER_SECONDS = 2.5
VIDEO_LONG_SIDE = 640
"""Pixels: a 16:9 clip is 640x360, so its last frame meets Kling's 300 px minimum and can
start the next shot (``image='task:<id>'``)."""

PLACEHOLDER_NOTE = (
    "This is a sandbox placeholder clip from the bundled emulator, not a Kling render, and it cost nothing. "
    "To render for real, set NOVITA_API_KEY, HIGHWAY_API_KEY or WAVESPEED_API_KEY in the server's environment "
    "(and optionally KLING_MCP_PROVIDER), or pass provider='novita'|'highway'|'wavespeed'."
)


def sandbox_emulator(settings: Settings) -> EmulatorServer:
    """An emulator server (not yet started) configured for the sandbox."""
    # Imported here: the emulator brings Starlette, uvicorn and PyAV, which a server
    # that never uses the sandbox should not pay for at start-up.
    from kling_video_mcp.emulator import EmulatorConfig, EmulatorServer

    config = EmulatorConfig(
        time_scale=settings.sandbox_time_scale,
        queue_seconds=QUEUE_SECONDS,
        run_seconds=RENDER_SECONDS,
        state_dir=settings.sandbox_dir,
        valid_keys=frozenset({SANDBOX_KEY}),
        video_long_side=VIDEO_LONG_SIDE,
    )
    return EmulatorServer(config)


class SandboxAdapter(WaveSpeedAdapter):
    """WaveSpeed adapter pointed at the embedded emulator."""

    min_poll_interval = 0.2

    def __init__(self, client: httpx2.AsyncClient, settings: Settings, emulator: EmulatorServer) -> None:
        super().__init__(client, settings, name="sandbox", base_url=emulator.url("wavespeed"), api_key=SANDBOX_KEY)
        self._time_scale = emulator.config.time_scale

    def expected_render_seconds(self, request: GenerationRequest) -> float:
        return (QUEUE_SECONDS + RENDER_SECONDS) * self._time_scale
