"""The provider registry: every provider of Kling v3.0 this server speaks to, in one tuple.

Each entry is a :class:`~kling_video_mcp.providers.base.Provider` subclass that describes
itself (see that module for how a new provider plugs in). Everything outside this package
that needs to know about providers (config, prices, tool parameters, ``doctor``, the CLI,
the server's instructions, ``server.json``) reads :data:`PROVIDERS` through the names below
instead of naming one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import anyio
import httpx2

from kling_video_mcp.errors import AuthError
from kling_video_mcp.providers.base import (
    EndpointRules, KeyCheck, Price, PromptRule, Provider, Submitted, either, uploading_hint,
)  # fmt: skip
from kling_video_mcp.providers.fal import Fal
from kling_video_mcp.providers.highway import Highway
from kling_video_mcp.providers.http import Gate
from kling_video_mcp.providers.kling import Kling
from kling_video_mcp.providers.novita import Novita
from kling_video_mcp.providers.replicate import Replicate
from kling_video_mcp.providers.sandbox import Sandbox
from kling_video_mcp.providers.wavespeed import WaveSpeed

if TYPE_CHECKING:
    from kling_video_mcp.config import Settings
    from kling_video_mcp.models import TaskRecord

__all__ = [
    "PROVIDERS", "PROVIDER_NAMES", "REAL_PROVIDERS", "ProviderName", "EndpointRules", "KeyCheck", "Price",
    "PromptRule", "Provider", "Providers", "Submitted", "either", "provider_class", "uploading_hint",
]  # fmt: skip

PROVIDERS: tuple[type[Provider], ...] = (Novita, Highway, WaveSpeed, Kling, Fal, Replicate, Sandbox)
"""Every provider, in ``KLING_MCP_PROVIDER``'s fallback order: with it unset, the first whose
keys are all set is the default, else the first that needs no key (the free sandbox)."""

Provider.registry = PROVIDERS

PROVIDER_NAMES: tuple[str, ...] = tuple(provider.name for provider in PROVIDERS)
ProviderName = Literal[PROVIDER_NAMES]  # type: ignore[valid-type]
"""A registered provider's name, checked at run time (pydantic) against :data:`PROVIDERS`."""

REAL_PROVIDERS: tuple[str, ...] = tuple(provider.name for provider in PROVIDERS if provider.key_variables)
"""The providers that need a key (and render for real), in fallback order."""

_BY_NAME: dict[str, type[Provider]] = {provider.name: provider for provider in PROVIDERS}


def provider_class(name: str) -> type[Provider]:
    """The registered provider called ``name``.

    Raises:
        KeyError: no provider has that name (names are checked where they enter: tool
            parameters and ``KLING_MCP_PROVIDER``).
    """
    return _BY_NAME[name]


def default_provider(settings: Settings) -> str:
    """``KLING_MCP_PROVIDER``, else the first provider (in :data:`PROVIDERS` order) with all
    its keys set, else the first that needs none."""
    if settings.provider is not None:
        return settings.provider
    return next(provider.name for provider in PROVIDERS if provider.keys(settings) is not None)


class Providers:
    """Builds each provider on first use (:meth:`Provider.open`) and keeps it; closes them all.

    Nothing is built at server start: the sandbox's emulator starts on the first sandbox
    request. ``shared_gate(provider, rate)`` gives the gate that paces a provider's requests
    for every worker together, or ``None`` (the default) for the provider's own.
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
        self._built: dict[str, Provider] = {}
        self._lock = anyio.Lock()

    def require_key(self, name: str) -> None:
        """Raise :class:`AuthError` if provider ``name`` has a key variable that is not set."""
        provider = provider_class(name)
        if missing := provider.missing_keys(self._settings):
            free = [f"provider='{free.name}'" for free in PROVIDERS if not free.key_variables]
            instead = f", or use {either(free)} to try things for free" if free else ""
            raise AuthError(
                f"No API key is set for {provider.label}: set {' and '.join(missing)} in the MCP server's environment "
                f"(the env block of your client's config){instead}."
            )

    async def get(self, name: str) -> Provider:
        """The provider ``name``, built on first use. Raises :class:`AuthError` when its key is missing."""
        self.require_key(name)
        async with self._lock:
            if name not in self._built:
                provider = await provider_class(name).open(self._client, self._settings)
                if self._shared_gate and (gate := self._shared_gate(name, self._settings.provider_rate_limit)):
                    provider.share_rate_gate(gate)
                self._built[name] = provider
        return self._built[name]

    async def for_task(self, record: TaskRecord) -> Provider:
        """The task's provider, ready to poll or cancel it: given the URLs its submit's answer named
        (:attr:`Submitted.follow_urls`, journaled with the task), so this worker follows them too.
        Raises :class:`AuthError` when the provider's key is missing."""
        assert record.provider is not None
        provider = await self.get(record.provider)
        if record.provider_task_id is not None and record.provider_urls:
            provider.follow(record.provider_task_id, record.provider_urls)
        return provider

    async def aclose(self) -> None:
        """Close every provider that was built (the sandbox stops its emulator)."""
        built, self._built = list(self._built.values()), {}
        for provider in built:
            await provider.aclose()
