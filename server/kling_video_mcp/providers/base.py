"""The one interface every provider adapter implements, and the rules data it exposes.

An adapter turns the internal :class:`~kling_video_mcp.models.GenerationRequest` into its
provider's wire format and the provider's task result back into a
:class:`~kling_video_mcp.models.ProviderUpdate`. It knows nothing of MCP, the journal
or the file system.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from functools import partial

import httpx2

from kling_video_mcp.config import Mode, ProviderName, Settings
from kling_video_mcp.errors import KlingError
from kling_video_mcp.models import GenerationRequest, ImageSource, Kind, ProviderUpdate
from kling_video_mcp.providers.http import Gate, ProviderHTTP

MultiPromptForm = Literal["shots", "prompts"]
"""``shots``: ``[{prompt, duration}]``; ``prompts``: ``[str]`` (shot durations are not sent)."""


@dataclass(frozen=True)
class EndpointRules:
    """What one provider endpoint takes beyond the fields every endpoint shares.

    Every endpoint takes ``prompt``, ``negative_prompt``, ``duration``, ``cfg_scale`` and
    ``sound``; text-to-video takes ``aspect_ratio``; image-to-video takes ``image`` and
    ``end_image`` (never together with ``multi_prompt``).
    """

    multi_prompt: MultiPromptForm | None
    """How the endpoint takes ``multi_prompt``, or ``None`` if it does not."""
    prompt_with_multi_prompt: bool
    """``False`` where the docs say ``prompt`` and ``multi_prompt`` are mutually exclusive."""
    shot_type: bool = False
    element_list: bool = False


RulesTable = Mapping[tuple[Kind, Mode], EndpointRules]
"""Rules of each (kind, mode) endpoint of one provider."""

LABELS: dict[ProviderName, str] = {
    "novita": "Novita AI",
    "highway": "HighwayAPI",
    "wavespeed": "WaveSpeedAI",
    "sandbox": "Sandbox",
}
"""Each provider's name as people write it."""

KEY_ENV: dict[ProviderName, str] = {
    "novita": "NOVITA_API_KEY",
    "highway": "HIGHWAY_API_KEY",
    "wavespeed": "WAVESPEED_API_KEY",
    "sandbox": "KLING_MCP_PROVIDER",  # needs no key; the variable that picks another provider
}
"""The environment variable that holds each provider's key."""


@dataclass(frozen=True)
class Submitted:
    """A task the provider accepted."""

    provider_task_id: str
    notes: tuple[str, ...] = ()


class ProviderAdapter(ABC):
    """A hosted provider of Kling v3.0, seen through one interface."""

    name: ProviderName
    rules_table: RulesTable
    min_poll_interval: float = 2.0
    """Seconds: the adapter is never polled more often than this for one task."""

    @staticmethod
    @abstractmethod
    def endpoint(kind: Kind, mode: Mode) -> str:
        """The provider's route id for a model, e.g. ``kling-v3.0-4k-t2v``."""

    @property
    def label(self) -> str:
        """The provider's name as people write it, e.g. ``Novita AI``."""
        return LABELS[self.name]

    @staticmethod
    @abstractmethod
    def _classify(response: httpx2.Response, *, provider: str, key_env: str) -> KlingError:
        """The error an unsuccessful answer means, from this provider's error envelope."""

    def _connect(
        self, client: httpx2.AsyncClient, settings: Settings, *, base_url: str | None = None, api_key: str | None = None
    ) -> ProviderHTTP:
        """HTTP to this provider: its configured base URL and key, unless others are given."""
        if api_key is None and (key := settings.api_key(self.name)) is not None:
            api_key = key.get_secret_value()
        classify = partial(self._classify, provider=self.label, key_env=KEY_ENV[self.name])
        return ProviderHTTP(client, base_url or settings.base_url(self.name), api_key, classify, settings)

    def share_rate_gate(self, gate: Gate) -> None:
        """Pace this adapter's requests with ``gate``: the provider limits the key, not the worker."""
        self._http.gate = gate

    def rules(self, kind: Kind, mode: Mode) -> EndpointRules:
        """What the endpoint for ``kind`` and ``mode`` accepts (from the provider's API pages)."""
        return self.rules_table[(kind, mode)]

    def expected_render_seconds(self, request: GenerationRequest) -> float:
        """A rough expectation of queue plus render time, for pacing polls where no ETA is given.

        Source: providers.md §5.2 (Std 45-150 s, Pro 90-200 s per 5 s clip; 4K unmeasured,
        assumed 3-10 min for 5-15 s).
        """
        per_clip = {"std": 90.0, "pro": 150.0, "4k": 300.0}[request.mode]
        return per_clip * max(1.0, request.duration / 5)

    @abstractmethod
    async def submit(
        self, request: GenerationRequest, images: dict[str, ImageSource], *, webhook_url: str | None = None
    ) -> Submitted:
        """Create a task. ``images`` maps ``image``/``end_image`` to checked sources; with
        ``webhook_url``, the provider is asked to POST there when the task ends.

        Raises:
            KlingError: a subclass saying what went wrong; :class:`UnknownOutcome` when the
                request may have created a task that we cannot name.
        """

    @abstractmethod
    async def fetch(self, provider_task_id: str, endpoint: str) -> ProviderUpdate:
        """Read the task's current state (one logical request, retried on transient errors)."""
