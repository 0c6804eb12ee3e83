"""The ``sandbox`` provider: the bundled emulator, embedded, spoken to over real HTTP.

It speaks the WaveSpeed protocol, so sandbox tasks run through the same adapter code as
real ones, and it finishes within seconds with a placeholder clip that shows the prompt.
The emulator starts on the sandbox's first use (:meth:`Sandbox.open`), never at server
start. Its state lives under ``KLING_MCP_STATE_DIR/sandbox``, so a restarted server still
finishes sandbox tasks it started before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

import anyio
import httpx2

from kling_video_mcp.providers.base import Price, Provider, either
from kling_video_mcp.providers.wavespeed import WaveSpeed

if TYPE_CHECKING:
    from kling_video_mcp.config import Settings
    from kling_video_mcp.emulator import EmulatorServer
    from kling_video_mcp.models import GenerationRequest

SANDBOX_KEY = "sandbox"
QUEUE_SECONDS = 0.5
RENDER_SECONDS = 2.5
VIDEO_LONG_SIDE = 640
"""Pixels: a 16:9 clip is 640x360, so its last frame meets Kling's 300 px minimum and can
start the next shot (``image='task:<id>'``)."""
TIME_SCALE_VARIABLE = "KLING_MCP_SANDBOX_TIME_SCALE"
"""Scales the sandbox's render clock (queue 0.5 s + render 2.5 s at 1.0): for tests and benchmarks."""

FREE = Price(0.0, True, "sandbox: the bundled emulator, free")


class Sandbox(WaveSpeed):
    """WaveSpeed protocol against the embedded emulator: free placeholder clips, no key."""

    name = "sandbox"
    label = "Sandbox"
    key_variables = ()
    base_url_variable = None
    default_base_url = "http://127.0.0.1"
    """The embedded emulator's host; its port is chosen when it starts."""
    prices = {(mode, sound): FREE for mode in ("std", "pro", "4k") for sound in (False, True)}
    min_poll_interval = 0.2
    makes_placeholders = True
    downloads_from_loopback = True
    extra_variables = (TIME_SCALE_VARIABLE,)

    def __init__(self, client: httpx2.AsyncClient, settings: Settings, emulator: EmulatorServer) -> None:
        super().__init__(client, settings, base_url=emulator.url("wavespeed"), keys=(SANDBOX_KEY,))
        self._emulator = emulator

    @classmethod
    def time_scale(cls, settings: Settings) -> float:
        """``KLING_MCP_SANDBOX_TIME_SCALE`` (default 1).

        Raises:
            ValueError: it is not a positive number.
        """
        text = cls.variable(settings, TIME_SCALE_VARIABLE, "1")
        try:
            scale = float(text)
        except ValueError:
            scale = 0.0
        if not scale > 0:
            raise ValueError(f"{TIME_SCALE_VARIABLE} must be a positive number, not {text!r}")
        return scale

    @classmethod
    async def open(cls, client: httpx2.AsyncClient, settings: Settings) -> Self:
        """Start the embedded emulator (in a thread: it binds a port) and speak to it."""
        # Imported here: the emulator brings Starlette, uvicorn and PyAV, which a server
        # that never uses the sandbox should not pay for at start-up.
        from kling_video_mcp.emulator import EmulatorConfig, EmulatorServer

        config = EmulatorConfig(
            time_scale=cls.time_scale(settings),
            queue_seconds=QUEUE_SECONDS,
            run_seconds=RENDER_SECONDS,
            state_dir=settings.state_dir / "sandbox",
            valid_keys=frozenset({SANDBOX_KEY}),
            video_long_side=VIDEO_LONG_SIDE,
        )
        emulator = EmulatorServer(config)
        await anyio.to_thread.run_sync(emulator.start)
        return cls(client, settings, emulator)

    async def aclose(self) -> None:
        """Stop the embedded emulator."""
        await anyio.to_thread.run_sync(self._emulator.stop)

    @classmethod
    def result_note(cls) -> str:
        """Said on every sandbox result: what the clip is, and how to render for real."""
        real = [provider for provider in Provider.registry if provider.key_variables]
        keys = either([" and ".join(provider.key_variables) for provider in real])
        names = "|".join(f"'{provider.name}'" for provider in real)
        return (
            "This is a sandbox placeholder clip from the bundled emulator, not a Kling render, and it cost nothing. "
            f"To render for real, set {keys} in the server's environment "
            f"(and optionally KLING_MCP_PROVIDER), or pass provider={names}."
        )

    def expected_render_seconds(self, request: GenerationRequest) -> float:
        return (QUEUE_SECONDS + RENDER_SECONDS) * self._emulator.config.time_scale
