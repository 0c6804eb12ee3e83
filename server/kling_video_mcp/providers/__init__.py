"""Provider adapters behind one interface, and the registry that builds them.

``RULES`` answers "what does this endpoint take?" for every provider without building an
adapter, so requests are checked before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import httpx2

from kling_video_mcp.config import REAL_PROVIDERS, ProviderName, Settings
from kling_video_mcp.errors import AuthError
from kling_video_mcp.providers.base import KEY_ENV, LABELS, EndpointRules, ProviderAdapter, RulesTable, Submitted
from kling_video_mcp.providers.http import Gate
from kling_video_mcp.providers.novita_family import HIGHWAY_RULES, NOVITA_RULES, NovitaFamilyAdapter
from kling_video_mcp.providers.sandbox import SandboxAdapter, sandbox_emulator
from kling_video_mcp.providers.wavespeed import WAVESPEED_RULES, WaveSpeedAdapter

if TYPE_CHECKING:
    from kling_video_mcp.emulator import EmulatorServer

__all__ = ["RULES", "LABELS", "EndpointRules", "ProviderAdapter", "Providers", "Submitted"]

RULES: dict[ProviderName, RulesTable] = {
    "novita": NOVITA_RULES,
    "highway": HIGHWAY_RULES,
    "wavespeed": WAVESPEED_RULES,
    "sandbox": WAVESPEED_RULES,
}

class Providers:
    """Builds each adapter on first use and keeps it; starts the sandbox emulator lazily.

    ``shared_gate(provider, rate)`` gives the gate that paces a provider's requests for every
    worker together, or ``None`` (the default) for the adapter's own.
    """

    def __init__(
        self,
        settings: Settings,
        client: httpx2.AsyncClient,
        shared_gate: Callable[[str, float], Gate | None] | None = None,
    ) -> None:
        self._settings = settings
        self._client = client
        self._shared_gate = shared_gate
        self._adapters: dict[ProviderName, ProviderAdapter] = {}
        self._emulator: EmulatorServer | None = None
        self._lock = anyio.Lock()

    def require_key(self, name: ProviderName) -> None:
        """Raise :class:`AuthError` if ``name`` is a real provider with no key configured."""
        if name in REAL_PROVIDERS and self._settings.api_key(name) is None:
            raise AuthError(
                f"No API key is set for {LABELS[name]}: set {KEY_ENV[name]} in the MCP server's environment "
                "(the env block of your client's config), or use provider='sandbox' to try things for free."
            )

    async def get(self, name: ProviderName) -> ProviderAdapter:
        """The adapter for ``name``. Raises :class:`AuthError` when its key is missing."""
        self.require_key(name)
        async with self._lock:
            if name not in self._adapters:
                adapter = await self._build(name)
                if self._shared_gate and (gate := self._shared_gate(name, self._settings.provider_rate_limit)):
                    adapter.share_rate_gate(gate)
                self._adapters[name] = adapter
        return self._adapters[name]

    async def _build(self, name: ProviderName) -> ProviderAdapter:
        if name == "sandbox":
            self._emulator = sandbox_emulator(self._settings)
            await anyio.to_thread.run_sync(self._emulator.start)
            return SandboxAdapter(self._client, self._settings, self._emulator)
        if name == "wavespeed":
            return WaveSpeedAdapter(self._client, self._settings)
        return NovitaFamilyAdapter(name, self._client, self._settings)

    async def aclose(self) -> None:
        """Stop the sandbox emulator if it was started."""
        if self._emulator is not None:
            await anyio.to_thread.run_sync(self._emulator.stop)
            self._emulator = None
