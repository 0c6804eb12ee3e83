"""What a provider is: one class that describes itself and speaks its provider's HTTP API.

A provider of Kling v3.0 is one subclass of :class:`Provider`. Its class attributes describe it
(name, label, the environment variables of its keys and base URL, its rules per route with their
sources, its prices with their basis, how it takes a webhook, its polling pace), so the rest of
the server reads them from the registry (:data:`kling_video_mcp.providers.PROVIDERS`) without
building anything or sending a request. An instance speaks the API: it turns the internal
:class:`~kling_video_mcp.models.GenerationRequest` into the provider's wire format and the
provider's task back into a :class:`~kling_video_mcp.models.ProviderUpdate`. It knows nothing of
MCP, the journal or the file system.

Adding a provider
=================

A new provider touches these files and nothing else:

1. ``server/kling_video_mcp/providers/<name>.py``: one subclass of :class:`Provider`. Set every
   class attribute listed under "Description" below (``name``, ``label``, ``key_variables``,
   ``base_url_variable``, ``default_base_url``, ``rules_table``, ``prices``, ``webhook``, and
   ``min_poll_interval`` if 2 s is wrong), and implement :meth:`Provider.endpoint`,
   :meth:`Provider.submit`, :meth:`Provider.poll`, :meth:`Provider.check_key` and
   :meth:`Provider.classify_error` (its error envelope). Override :meth:`Provider.body_error`
   when a 2xx answer can carry an error, :meth:`Provider.authorization` when it is not ``Authorization: Bearer <first key>`` (e.g. a
   JWT signed from two keys, as an :class:`httpx2.Auth` that signs each request),
   :meth:`Provider.upload` (and ``uploads_images = True``) when local images go up first, and
   :meth:`Provider.cancel` when the provider documents a way to cancel. Cite every rule's public
   source (the provider's API page or SDK) in its ``source`` and in ``docs/providers.md``.
2. ``server/kling_video_mcp/providers/__init__.py``: one line, the class added to the
   ``PROVIDERS`` tuple. Its place sets where it falls in ``KLING_MCP_PROVIDER``'s fallback order
   (the first provider with its keys set is the default). Everything else (config and its
   environment variables, secrets redaction, prices, the tools' ``provider`` enum, ``doctor``,
   the CLI's choices, the server's instructions, ``server.json``) reads the registry.
3. The emulator (every test talks to it; no test reaches a real provider): its flavour of the
   provider's HTTP API, ``server/kling_video_mcp/emulator/<name>.py`` (a
   :class:`~kling_video_mcp.emulator.flavor.Flavor` subclass whose ``name`` is the provider's),
   its route rules in ``emulator/rules.py``, and its name in ``emulator/config.py``'s ``FLAVORS``
   and ``emulator/app.py``'s ``FLAVOR_CLASSES`` (mounted under ``/<name>``). A provider that speaks
   an existing flavour's protocol by subclassing that provider's class (as the sandbox does
   WaveSpeed's) needs none of this.
4. Tests: its adapter in ``tests/test_adapters.py`` (submit, poll, check_key and error
   classification against ``httpx2.MockTransport``), and its end-to-end path through
   ``mcp.Client`` against its emulator flavour (``tests/conftest.py``'s ``make_settings`` points
   every keyed provider at the flavour of its name). Checked with no edit: its rules against the
   emulator's (``tests/test_rules_agree.py``), its description (``tests/test_adapters.py``), that
   nothing outside ``providers/`` and ``emulator/`` names it (``tests/test_provider_names.py``),
   and ``server.json`` (``tests/test_server_json.py``; regenerate the file with
   ``python -m kling_video_mcp.providers.manifest server.json``).
5. ``docs/providers.md``: its contract as the code implements it, each rule with its public source.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import httpx2

from kling_video_mcp.errors import InvalidRequest, KlingError
from kling_video_mcp.providers.http import Gate, ProviderHTTP, classify_body_error

if TYPE_CHECKING:
    from pydantic import SecretStr

    from kling_video_mcp.config import Settings
    from kling_video_mcp.models import GenerationRequest, ImageSource, Kind, Mode, ProviderUpdate, ShotType


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


KLING_SHOT_SECONDS = ShotLength(1, 15, "Kling's own multi-shot rule, docs/providers.md#shot-lengths")
SHORTEST_SHOT_3 = ShotLength(3, 15, "the provider's model schema or API page, docs/providers.md#shot-lengths")


@dataclass(frozen=True)
class EndpointRules:
    """What one provider endpoint takes beyond the fields every endpoint shares, and where that is written.

    Every endpoint takes ``prompt``, ``negative_prompt``, ``duration``, ``cfg_scale`` and
    ``sound``; text-to-video takes ``aspect_ratio``; image-to-video takes ``image`` and
    ``end_image`` (never together with ``multi_prompt``, a rule of every provider).
    """

    source: str
    """Where these rules come from (docs/providers.md anchors and API pages)."""
    prompt: PromptRule = PromptRule.REQUIRED
    multi_prompt: bool = False
    """Whether the endpoint takes ``multi_prompt``; always as ``[{prompt, duration}]`` (docs/providers.md#multi-shot-prompts)."""
    shot_seconds: ShotLength = KLING_SHOT_SECONDS
    """How long each shot may be, where ``multi_prompt`` is taken."""
    inline_images: bool | None = None
    """Image-to-video only: whether ``image``/``end_image`` may be inline data (base64) rather than a
    URL. ``True`` taken, ``False`` refused (the adapter uploads, or refuses before sending),
    ``None`` unknown: sent, and a refusal is turned into a clear error (docs/providers.md#novita-inline-images)."""
    shot_type_default: ShotType | None = None
    """Where ``shot_type`` is taken, what the provider does when it is not sent."""
    element_list: bool = False

    @property
    def shot_type(self) -> bool:
        """Whether the endpoint takes ``shot_type``."""
        return self.shot_type_default is not None


RulesTable = Mapping[tuple["Kind", "Mode"], EndpointRules]
"""Rules of each (kind, mode) endpoint of one provider."""


@dataclass(frozen=True)
class Price:
    """A per-second price used for estimates, and its basis."""

    usd_per_second: float
    confirmed: bool
    """``True``: the provider publishes this number; ``False``: an estimate."""
    source: str

    @property
    def basis(self) -> str:
        """Where the number comes from, and whether it is confirmed, for results."""
        return f"{self.source} ({'confirmed' if self.confirmed else 'estimate'})"


PriceTable = Mapping[tuple["Mode", bool], Price]
"""A provider's price per second of video for each (mode, sound)."""

MARKET_USD_PER_SECOND: Mapping[tuple[Mode, bool], float] = {
    ("std", False): 0.084,
    ("std", True): 0.126,
    ("pro", False): 0.112,
    ("pro", True): 0.168,
    ("4k", False): 0.42,
    ("4k", True): 0.42,
}
"""Kling v3.0's market rate per second, by (mode, sound) (docs/providers.md#prices, read 2026-11-21):
4K $0.42/s with or without sound; Std $0.084/s silent ($0.42 per 5 s run, WaveSpeed's Std page);
Pro $0.112/s; with sound x1.5, the tier Novita's Chinese twin PPIO charges."""

MARKET_SOURCE = "market rate for Kling v3.0 (the provider publishes no USD price)"


def market_prices(confirmed: Mapping[tuple[Mode, bool], str] | None = None) -> PriceTable:
    """Every (mode, sound) at the market rate: confirmed where ``confirmed`` names the provider's
    page that publishes that rate, an estimate elsewhere."""
    confirmed = confirmed or {}
    return {
        key: Price(rate, True, confirmed[key]) if key in confirmed else Price(rate, False, MARKET_SOURCE)
        for key, rate in MARKET_USD_PER_SECOND.items()
    }


@dataclass(frozen=True)
class Webhook:
    """How a provider takes the URL it calls when a task ends, and where that is written."""

    where: Literal["query", "body"]
    """``query``: a query parameter of the submit; ``body``: a field of its JSON body."""
    path: tuple[str, ...]
    """The query parameter's name (one item), or the keys down to the body field,
    e.g. ``("extra", "webhook", "url")`` for ``{"extra": {"webhook": {"url": ...}}}``."""
    source: str

    def apply(self, url: str, body: dict[str, Any], params: dict[str, Any]) -> None:
        """Put ``url`` where the provider reads it: into ``params`` or ``body``, both changed in place."""
        if self.where == "query":
            params[self.path[0]] = url
            return
        node = body
        for key in self.path[:-1]:
            node = node.setdefault(key, {})
        node[self.path[-1]] = url


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
    follow_urls: Mapping[str, str] = field(default_factory=dict)
    """Where to follow the task: the status, result and cancel URLs a provider's answer named, or
    the route it was made on where the provider polls it there (relative to the base URL).
    Journaled with the task and handed back through :meth:`Provider.follow` before every later
    poll or cancel, on any worker, after any restart."""


class BearerToken(httpx2.Auth):
    """``Authorization: Bearer <token>`` on every request."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


def either(items: list[str], conjunction: str = "or") -> str:
    """``a``, ``a or b``, ``a, b or c`` (or with ``and``): items in a sentence."""
    return f" {conjunction} ".join(filter(None, [", ".join(items[:-1]), *items[-1:]]))


def uploading_hint() -> str:
    """``, or use provider='x', which uploads local files first`` naming the registered providers
    that upload local images (:attr:`Provider.uploads_images`), or ``""`` when none does."""
    uploading = [f"provider='{cls.name}'" for cls in Provider.registry if cls.uploads_images and not cls.makes_placeholders]
    verb = "uploads" if len(uploading) == 1 else "upload"
    return f", or use {either(uploading)}, which {verb} local files first" if uploading else ""


class Provider(ABC):
    """A hosted provider of Kling v3.0: its description (class attributes, read without an
    instance) and its HTTP API (an instance, built by :class:`~kling_video_mcp.providers.Providers`
    on first use through :meth:`open`).

    Description
    -----------
    ``name``                 the provider's id in tools, results and ``KLING_MCP_PROVIDER``.
    ``label``                its name as people write it, e.g. ``Novita AI``.
    ``key_variables``        the environment variables that hold its key(s), in the order
                             :meth:`authorization` receives their values; ``()`` needs no key.
    ``base_url_variable``    the environment variable that overrides its base URL (``None``: none).
    ``default_base_url``     the base URL used when that variable is unset.
    ``rules_table``          per (kind, mode) route, what it takes, each rule with its source.
    ``prices``               per (mode, sound), USD per second of video with its basis.
    ``webhook``              how the submit passes a webhook URL (``None``: it takes none).
    ``min_poll_interval``    seconds: one task is never polled more often than this.
    ``uploads_images``       whether local images go up through :meth:`upload` before the submit.
    ``makes_placeholders``   whether its clips are free placeholders (the bundled emulator).
    ``downloads_from_loopback`` whether its clips are served from this machine, so downloads must
                             reach loopback (the embedded emulator).
    ``extra_variables``      other environment variables it reads through :meth:`variable`.

    Raising: every method that talks to the provider raises a :class:`KlingError` subclass saying
    what went wrong (see :mod:`kling_video_mcp.errors`), never a raw ``httpx2`` error.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    key_variables: ClassVar[tuple[str, ...]]
    base_url_variable: ClassVar[str | None] = None
    default_base_url: ClassVar[str]
    rules_table: ClassVar[RulesTable]
    prices: ClassVar[PriceTable]
    webhook: ClassVar[Webhook | None] = None
    min_poll_interval: ClassVar[float] = 2.0
    uploads_images: ClassVar[bool] = False
    makes_placeholders: ClassVar[bool] = False
    downloads_from_loopback: ClassVar[bool] = False
    extra_variables: ClassVar[tuple[str, ...]] = ()

    registry: ClassVar[tuple[type[Provider], ...]] = ()
    """Every registered provider, in order: set once by :mod:`kling_video_mcp.providers` (which
    imports this module), so a provider's messages can point to another without importing it."""

    # -- the description, read without an instance ------------------------------------------

    @classmethod
    def variables(cls) -> tuple[str, ...]:
        """Every environment variable this provider reads: keys, base URL, extras."""
        base = (cls.base_url_variable,) if cls.base_url_variable else ()
        return cls.key_variables + base + cls.extra_variables

    @classmethod
    def keys(cls, settings: Settings) -> tuple[SecretStr, ...] | None:
        """The values of :attr:`key_variables`, in order; ``None`` unless every one is set."""
        values = tuple(settings.provider_keys.get(variable) for variable in cls.key_variables)
        return None if None in values else values  # type: ignore[return-value]

    @classmethod
    def missing_keys(cls, settings: Settings) -> tuple[str, ...]:
        """The key variables that are not set (empty when the provider can be used)."""
        return tuple(variable for variable in cls.key_variables if variable not in settings.provider_keys)

    @classmethod
    def base_url(cls, settings: Settings) -> str:
        """The base URL requests go to: :attr:`base_url_variable`'s value, else the default."""
        return settings.provider_settings.get(cls.base_url_variable or "", cls.default_base_url)

    @classmethod
    def variable(cls, settings: Settings, name: str, default: str) -> str:
        """The value of one of :attr:`extra_variables`, or ``default`` when it is unset."""
        assert name in cls.extra_variables, f"{cls.__name__} does not declare {name}"
        return settings.provider_settings.get(name, default)

    @classmethod
    def rules(cls, kind: Kind, mode: Mode) -> EndpointRules:
        """What the endpoint for ``kind`` and ``mode`` accepts (from the provider's API pages)."""
        return cls.rules_table[(kind, mode)]

    @classmethod
    def price(cls, mode: Mode, sound: bool) -> Price:
        """The per-second price used for estimates, with its basis."""
        return cls.prices[(mode, sound)]

    @classmethod
    def estimate_usd(cls, mode: Mode, sound: bool, duration: int) -> float:
        """Estimated cost of one render of ``duration`` seconds, in USD, rounded to the cent."""
        return round(cls.price(mode, sound).usd_per_second * duration, 2)

    @classmethod
    def result_note(cls) -> str | None:
        """A note every result of this provider carries (``None``: none)."""
        return None

    @staticmethod
    @abstractmethod
    def endpoint(kind: Kind, mode: Mode) -> str:
        """The provider's route id for a model, e.g. ``kling-v3.0-4k-t2v`` (journaled with the task)."""

    # -- building and closing ------------------------------------------------------------

    def __init__(
        self,
        client: httpx2.AsyncClient,
        settings: Settings,
        *,
        base_url: str | None = None,
        keys: tuple[str, ...] | None = None,
    ) -> None:
        """Speak to ``base_url`` (default :meth:`base_url`) with ``keys`` (default: the configured
        values of :attr:`key_variables`; none set: requests go without credentials)."""
        if keys is None and (configured := self.keys(settings)):
            keys = tuple(key.get_secret_value() for key in configured)
        self._http = ProviderHTTP(
            client,
            base_url or self.base_url(settings),
            self.authorization(keys) if keys else None,
            self.classify_error,
            settings,
            body_error=self.body_error,
        )

    @classmethod
    async def open(cls, client: httpx2.AsyncClient, settings: Settings) -> Self:
        """Build the provider for use (called once, on its first use). A provider that needs a
        local service (the sandbox's emulator) starts it here, and stops it in :meth:`aclose`."""
        return cls(client, settings)

    async def aclose(self) -> None:
        """Release what :meth:`open` started (nothing by default)."""

    def authorization(self, keys: tuple[str, ...]) -> httpx2.Auth:
        """How requests carry ``keys`` (the values of :attr:`key_variables`, in order):
        ``Authorization: Bearer <first key>`` unless overridden."""
        return BearerToken(keys[0])

    def webhook_params(self, webhook_url: str | None, body: dict[str, Any]) -> dict[str, Any] | None:
        """Put ``webhook_url`` (if any) where :attr:`webhook` says: into ``body`` (changed in place)
        or the query parameters returned for the submit (``None`` when there are none)."""
        params: dict[str, Any] = {}
        if webhook_url and self.webhook:
            self.webhook.apply(webhook_url, body, params)
        return params or None

    def share_rate_gate(self, gate: Gate) -> None:
        """Pace this provider's requests with ``gate``: the provider limits the key, not the worker."""
        self._http.gate = gate

    # -- reading answers -----------------------------------------------------------------

    @property
    def key_hint(self) -> str:
        """Where the key is set, for error messages: ``NOVITA_API_KEY``, or ``A and B``."""
        return " and ".join(self.key_variables) or "the provider's key"

    @abstractmethod
    def classify_error(self, response: httpx2.Response) -> KlingError:
        """The error an unsuccessful answer means, read from this provider's error envelope
        (build it with :func:`~kling_video_mcp.providers.http.classify_error`, passing
        ``provider=self.label, key_env=self.key_hint``)."""

    def body_error(self, response: httpx2.Response) -> KlingError | None:
        """The error a successful (2xx) answer carries instead of a result, if it does
        (docs/providers.md#http-200-errors); ``None`` (no such errors) unless overridden."""
        return None

    def body_error_from(self, response: httpx2.Response, *, code: object, reason: str, message: str) -> KlingError:
        """Classify an error found in a 2xx body (for :meth:`body_error` overrides)."""
        return classify_body_error(response, code=code, reason=reason, message=message, provider=self.label, key_env=self.key_hint)

    def inline_image_refused(self, request: GenerationRequest, field: str, said: str | None = None) -> InvalidRequest:
        """The error for an inline ``field`` image this endpoint does not take (docs/providers.md#novita-inline-images).

        ``said`` is the provider's refusal, when it sent one; without it we refused before sending.
        The hint names the providers that upload local images first.
        """
        where = f"{self.label} {request.model_label.removeprefix('Kling v3.0 ')}"
        what = f"refused the local or inline {field} ({said})" if said else f"takes {field} only as a public URL"
        return InvalidRequest(f"{field}: {where} {what}; nothing was charged. Pass a public https:// URL as {field}{uploading_hint()}.")

    # -- talking to the provider ---------------------------------------------------------

    def expected_render_seconds(self, request: GenerationRequest) -> float:
        """A rough expectation of queue plus render time, for pacing polls where no ETA is given.

        Source: docs/providers.md#polling-pace (Std 45-150 s, Pro 90-200 s per 5 s clip; 4K unmeasured,
        assumed 3-10 min for 5-15 s).
        """
        per_clip = {"std": 90.0, "pro": 150.0, "4k": 300.0}[request.mode]
        return per_clip * max(1.0, request.duration / 5)

    @abstractmethod
    async def check_key(self) -> KeyCheck:
        """Whether the provider accepts the configured key, found without spending anything.

        Raises:
            AuthError: the key was refused. Other :class:`KlingError`: the check could not be made.
        """

    @abstractmethod
    async def submit(
        self, request: GenerationRequest, images: dict[str, ImageSource], *, webhook_url: str | None = None
    ) -> Submitted:
        """Create a task. ``images`` maps ``image``/``end_image`` to checked sources; with
        ``webhook_url``, the provider is asked to POST there when the task ends (see :attr:`webhook`).

        Raises:
            KlingError: a subclass saying what went wrong; :class:`UnknownOutcome` when the
                request may have created a task that we cannot name.
        """

    @abstractmethod
    async def poll(self, provider_task_id: str) -> ProviderUpdate:
        """Read the task's current state (one logical request, retried on transient errors)."""

    async def upload(self, image: ImageSource) -> str:
        """Send local image bytes to the provider; returns the URL to pass as the image.
        Only providers with :attr:`uploads_images` implement it; the others refuse, naming the field.

        Raises:
            InvalidRequest: this provider takes no uploaded images.
        """
        raise InvalidRequest(f"image: {self.label} takes no uploaded images; pass a public https:// URL instead.")

    async def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool | None:
        """Whether a call to this provider's webhook URL was signed by the provider.

        ``headers`` and ``body`` are the request's own, the body exactly as received (signatures
        cover its bytes). ``True``: signed and fresh; ``False``: forged or stale, so refuse it and
        change nothing; ``None`` (the default): the provider signs nothing, or its keys cannot be
        had now, so the call is only a nudge to poll, trusted for nothing.
        """
        return None

    def follow(self, provider_task_id: str, urls: Mapping[str, str]) -> None:
        """Take up the URLs the task's submit answer gave (:attr:`Submitted.follow_urls`, as journaled),
        so the next :meth:`poll` or :meth:`cancel` of ``provider_task_id`` goes there. The default
        ignores them: most providers are followed at routes built from the task id."""

    async def cancel(self, provider_task_id: str) -> bool:
        """Ask the provider to stop the task; ``True`` when it agreed.

        The default is ``False``, "cannot cancel": a provider overrides this only where it
        documents a cancel endpoint. The render may be charged either way.
        """
        return False
