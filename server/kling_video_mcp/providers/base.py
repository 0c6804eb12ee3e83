"""The one interface every provider adapter implements, and the rules data it exposes.

An adapter turns the internal :class:`~kling_video_mcp.models.GenerationRequest` into its
provider's wire format and the provider's task result back into a
:class:`~kling_video_mcp.models.ProviderUpdate`. It knows nothing of MCP, the journal
or the file system.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import partial

import httpx2

from kling_video_mcp.config import Mode, ProviderName, Settings
from kling_video_mcp.errors import InvalidRequest, KlingError
from kling_video_mcp.models import GenerationRequest, ImageSource, Kind, ProviderUpdate, ShotType
from kling_video_mcp.providers.http import Gate, ProviderHTTP


class PromptRule(Enum):
    """How an endpoint takes ``prompt`` beside ``multi_prompt``."""

    REQUIRED = "prompt is required, and multi_prompt (where taken) may come with it"
    EITHER = "prompt is required unless multi_prompt is given; both together are allowed"
    ONE_OF = "exactly one of prompt and multi_prompt"


@dataclass(frozen=True)
class ShotLength:
    """Shortest and longest shot of a multi-shot video, in seconds, and where that is written."""

    shortest: int
    longest: int
    source: str


KLING_SHOT_SECONDS = ShotLength(1, 15, "Kling's own multi-shot rule, providers.md §4")
SHORTEST_SHOT_3 = ShotLength(3, 15, "the provider's model schema or API page, providers.md §10.4")


@dataclass(frozen=True)
class EndpointRules:
    """What one provider endpoint takes beyond the fields every endpoint shares, and where that is written.

    Every endpoint takes ``prompt``, ``negative_prompt``, ``duration``, ``cfg_scale`` and
    ``sound``; text-to-video takes ``aspect_ratio``; image-to-video takes ``image`` and
    ``end_image`` (never together with ``multi_prompt``, a rule of every provider).
    """

    source: str
    """Where these rules come from (providers.md sections and API pages)."""
    prompt: PromptRule = PromptRule.REQUIRED
    multi_prompt: bool = False
    """Whether the endpoint takes ``multi_prompt``; always as ``[{prompt, duration}]`` (providers.md §10.1)."""
    shot_seconds: ShotLength = KLING_SHOT_SECONDS
    """How long each shot may be, where ``multi_prompt`` is taken."""
    inline_images: bool | None = None
    """Image-to-video only: whether ``image``/``end_image`` may be inline data (base64) rather than a
    URL. ``True`` taken, ``False`` refused (the adapter uploads, or refuses before sending),
    ``None`` unknown: sent, and a refusal is turned into a clear error (providers.md §10.6)."""
    shot_type_default: ShotType | None = None
    """Where ``shot_type`` is taken, what the provider does when it is not sent."""
    element_list: bool = False

    @property
    def shot_type(self) -> bool:
        """Whether the endpoint takes ``shot_type``."""
        return self.shot_type_default is not None


RulesTable = Mapping[tuple[Kind, Mode], EndpointRules]
"""Rules of each (kind, mode) endpoint of one provider."""

LABELS: dict[ProviderName, str] = {
    "novita": "Novita AI",
    "highway": "HighwayAPI",
    "wavespeed": "WaveSpeedAI",
    "sandbox": "Sandbox",
    "kling": "Kling",
    "fal": "fal.ai",
    "replicate": "Replicate",
}
"""Each provider's name as people write it."""

KEY_ENV: dict[ProviderName, str] = {
    "novita": "NOVITA_API_KEY",
    "highway": "HIGHWAY_API_KEY",
    "wavespeed": "WAVESPEED_API_KEY",
    "sandbox": "KLING_MCP_PROVIDER",  # needs no key; the variable that picks another provider
    "kling": "KLING_ACCESS_KEY and KLING_SECRET_KEY",
    "fal": "FAL_KEY",
    "replicate": "REPLICATE_API_TOKEN",
}
"""The environment variable that holds each provider's key."""


@dataclass(frozen=True)
class KeyCheck:
    """A key the provider accepted, and what it said about the account."""

    detail: str = ""
    """e.g. ``balance $12.34``; empty when the provider says nothing more."""


@dataclass(frozen=True)
class Submitted:
    """A task the provider accepted."""

    provider_task_id: str
    notes: tuple[str, ...] = ()
    handle: Mapping[str, str] = field(default_factory=dict)
    """What the provider said to follow this task by, beside its id (fal's ``status_url``,
    ``response_url``, ``cancel_url``): journaled with the task and given back to ``fetch``."""


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

    @staticmethod
    @abstractmethod
    def _body_error(response: httpx2.Response, *, provider: str, key_env: str) -> KlingError | None:
        """The error a successful (2xx) answer carries instead of a result, if it does (providers.md §10.5)."""

    def _connect(
        self, client: httpx2.AsyncClient, settings: Settings, *, base_url: str | None = None, api_key: str | None = None,
        auth: httpx2.Auth | None = None,
    ) -> ProviderHTTP:
        """HTTP to this provider: its configured base URL and key, unless others are given."""
        if api_key is None and (key := settings.api_key(self.name)) is not None:
            api_key = key.get_secret_value()
        who = {"provider": self.label, "key_env": KEY_ENV[self.name]}
        return ProviderHTTP(
            client,
            base_url or settings.base_url(self.name),
            api_key,
            partial(self._classify, **who),
            settings,
            body_error=partial(self._body_error, **who),
            auth=auth,
        )

    def share_rate_gate(self, gate: Gate) -> None:
        """Pace this adapter's requests with ``gate``: the provider limits the key, not the worker."""
        self._http.gate = gate

    def rules(self, kind: Kind, mode: Mode) -> EndpointRules:
        """What the endpoint for ``kind`` and ``mode`` accepts (from the provider's API pages)."""
        return self.rules_table[(kind, mode)]

    def inline_image_refused(self, request: GenerationRequest, field: str, said: str | None = None) -> InvalidRequest:
        """The error for an inline ``field`` image this endpoint does not take (providers.md §10.6).

        ``said`` is the provider's refusal, when it sent one; without it we refused before sending.
        """
        where = f"{self.label} {request.model_label.removeprefix('Kling v3.0 ')}"
        what = f"refused the local or inline {field} ({said})" if said else f"takes {field} only as a public URL"
        return InvalidRequest(
            f"{field}: {where} {what}; nothing was charged. Pass a public https:// URL as {field}, "
            "or use provider='wavespeed', which uploads local files first."
        )

    @abstractmethod
    async def check_key(self) -> KeyCheck:
        """Whether the provider accepts the configured key, found without spending anything.

        Raises:
            AuthError: the key was refused. Other :class:`KlingError`: the check could not be made.
        """

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

    async def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool | None:
        """Whether a call to this provider's webhook URL is signed by the provider.

        ``headers`` and ``body`` are the request's own, the body exactly as received. ``True``:
        signed and fresh; ``False``: forged or stale, refuse it and change nothing; ``None``: the
        provider signs nothing (or its keys cannot be had now), so the call is only a nudge to poll.
        """
        return None

    @abstractmethod
    async def fetch(self, provider_task_id: str, endpoint: str) -> ProviderUpdate:
        """Read the task's current state (one logical request, retried on transient errors)."""
