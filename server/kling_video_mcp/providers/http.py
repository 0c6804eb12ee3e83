"""HTTP plumbing shared by the adapters: one client, explicit timeouts, bounded retries.

Retry policy (docs/providers.md#retries, and the WaveSpeed SDK's rule never to re-send a submit):

- a submit answered 429 is retried, honouring ``Retry-After``: nothing was created;
- a submit that may have reached the provider (read timeout, 5xx, dropped connection) is
  never re-sent: it raises :class:`UnknownOutcome`;
- a request that is safe to repeat (a poll, an upload) is retried through 429, 5xx and
  network errors, within a time budget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import httpx2
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_delay, wait_exponential_jitter

from kling_video_mcp import __version__
from kling_video_mcp.errors import (
    AuthError,
    ContentPolicy,
    InsufficientBalance,
    InvalidRequest,
    KlingError,
    NotFound,
    ProviderError,
    ProviderUnreachable,
    RateLimited,
    UnknownOutcome,
)
from kling_video_mcp.models import utcnow
from kling_video_mcp.redact import redacted_response

if TYPE_CHECKING:
    import ssl

    from kling_video_mcp.config import Settings  # config reads the provider registry, which imports this

log = logging.getLogger(__name__)

ErrorClassifier = Callable[[httpx2.Response], KlingError]
BodyErrorReader = Callable[[httpx2.Response], KlingError | None]
"""The error a successful (2xx) answer carries in its body, if any (docs/providers.md#http-200-errors)."""


def make_client(settings: Settings, tls: ssl.SSLContext | None = None) -> httpx2.AsyncClient:
    """The process-wide HTTP client, with connect, read, write and pool timeouts set.

    ``tls``: a context from :func:`httpx2.create_ssl_context` made beforehand (the server loads
    the CA bundle on another thread while it starts); by default the client makes its own.
    """
    timeout = httpx2.Timeout(
        connect=settings.connect_timeout,
        read=settings.read_timeout,
        write=settings.read_timeout,
        pool=settings.connect_timeout,
    )
    return httpx2.AsyncClient(
        verify=tls if tls is not None else True,
        timeout=timeout,
        follow_redirects=True,
        headers={"User-Agent": f"kling-video-mcp/{__version__}"},
        limits=httpx2.Limits(max_connections=100, max_keepalive_connections=20),
    )


class Gate(Protocol):
    """Anything that spaces requests: :class:`RateGate` in one process, or a journal's gate
    shared by every worker (:meth:`kling_video_mcp.journal.Journal.rate_gate`)."""

    async def wait(self) -> None:
        """Return when the next request may go."""


class RateGate:
    """Spaces requests at least ``1 / rate`` seconds apart: a leaky bucket without bursts.

    Waiters queue on the lock and each stamps the moment it actually goes, so requests that
    fell behind (after an event-loop stall, say) still leave one interval apart instead of
    all at once. anyio offers concurrency limits but no rate limit, and the asyncio-only rate
    limiters would tie us to one event loop; this is the whole of what we need.
    """

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._last = -self._interval
        self._lock = anyio.Lock()

    async def wait(self) -> None:
        """Return when the next request may go."""
        async with self._lock:
            await anyio.sleep(max(0.0, self._last + self._interval - anyio.current_time()))
            self._last = anyio.current_time()


def retry_after_seconds(response: httpx2.Response) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds or an HTTP date), if present."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
        except (TypeError, ValueError):
            return None


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, KlingError) and exc.retryable


def _is_rate_limited(exc: BaseException) -> bool:
    return isinstance(exc, RateLimited)


def _asked_to_wait_past(budget: float) -> Callable[[RetryCallState], bool]:
    """Give up at once when ``Retry-After`` asks for more than the budget has left: waiting it
    out would hold a tool call far past the client's patience only to fail anyway."""

    def stop(state: RetryCallState) -> bool:
        asked = getattr(state.outcome.exception(), "retry_after", None) if state.outcome else None
        return asked is not None and state.seconds_since_start + asked > budget

    return stop


def _wait(retry_state: RetryCallState) -> float:
    """Wait what ``Retry-After`` asked for, else exponential backoff with jitter (0.5 s .. 8 s)."""
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    asked = getattr(exc, "retry_after", None)
    if asked is not None:
        return float(asked)
    return wait_exponential_jitter(multiplier=0.5, max=8.0)(retry_state)


class ProviderHTTP:
    """Authenticated requests to one provider's base URL.

    ``auth`` signs each request (``None``: sent without credentials); ``classify`` turns a
    non-success response into the right :class:`KlingError` and ``body_error`` finds the error
    a 2xx answer may carry: those are the provider-specific parts.
    """

    def __init__(
        self,
        client: httpx2.AsyncClient,
        base_url: str,
        auth: httpx2.Auth | None,
        classify: ErrorClassifier,
        settings: Settings,
        body_error: BodyErrorReader,
    ) -> None:
        self._client = client
        self._base_url = base_url.rstrip("/")
        self._auth = auth
        self._classify = classify
        self._body_error = body_error
        self._settings = settings
        self._secrets = settings.secrets()
        self.gate: Gate = RateGate(settings.provider_rate_limit)
        """Paces every request; replaced by a shared gate when several workers share the key."""

    async def submit(self, path: str, **kwargs: Any) -> httpx2.Response:
        """POST that creates something billable. Retried only while the answer is 429.

        Raises:
            RateLimited: still 429 after ``submit_retry_seconds``.
            ProviderUnreachable: the connection was never made (nothing was sent).
            UnknownOutcome: the request may have reached the provider but no answer says so.
            KlingError: any other error answer, classified.
        """
        return await self._retrying(self._settings.submit_retry_seconds, _is_rate_limited, self._submit_once, path, kwargs)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        """A request that is safe to repeat (a poll, an upload): retried through 429, 5xx and network errors."""
        return await self._retrying(self._settings.poll_retry_seconds, _is_retryable, self._request_once, method, path, kwargs)

    async def _retrying(
        self, budget: float, should_retry: Callable[[BaseException], bool], attempt: Callable[..., Any], *args: Any
    ) -> httpx2.Response:
        async for attempt_state in AsyncRetrying(
            retry=retry_if_exception(should_retry),
            stop=stop_after_delay(budget) | _asked_to_wait_past(budget),
            wait=_wait,
            reraise=True,
        ):
            with attempt_state:
                return await attempt(*args)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _send(self, method: str, path: str, kwargs: dict[str, Any]) -> httpx2.Response:
        await self.gate.wait()
        with anyio.fail_after(self._settings.request_deadline):
            # An absolute URL is one the provider handed out to follow (fal's status_url), its origin checked.
            url = path if path.startswith(("https://", "http://")) else self._base_url + path
            response = await self._client.request(method, url, auth=self._auth, **kwargs)
        # The edge where provider text enters: nothing downstream ever sees a configured secret,
        # raw or JSON-escaped (kling_video_mcp.redact).
        return redacted_response(response, self._secrets)

    async def _submit_once(self, path: str, kwargs: dict[str, Any]) -> httpx2.Response:
        try:
            response = await self._send("POST", path, kwargs)
        except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout) as exc:
            raise ProviderUnreachable(f"Could not connect to {self._base_url} ({type(exc).__name__}); nothing was submitted.") from exc
        except (httpx2.TransportError, TimeoutError) as exc:
            raise UnknownOutcome(
                f"The submit request to {self._base_url} got no answer ({type(exc).__name__}); "
                "the provider may or may not have created a task."
            ) from exc
        if response.is_success:
            if (carried := self._body_error(response)) is not None:
                raise carried  # an explicit refusal in a 200: nothing was created (docs/providers.md#http-200-errors)
            return response
        error = self._classify(response)
        if isinstance(error, RateLimited):
            raise error
        if response.status_code >= 500:
            raise UnknownOutcome(
                f"The provider answered HTTP {response.status_code} to the submit ({error.message}); "
                "it may still have created a task."
            )
        raise error

    async def _request_once(self, method: str, path: str, kwargs: dict[str, Any]) -> httpx2.Response:
        try:
            response = await self._send(method, path, kwargs)
        except (httpx2.TransportError, TimeoutError) as exc:
            raise ProviderUnreachable(f"No answer from {self._base_url} ({type(exc).__name__}).") from exc
        if response.is_success:
            if (carried := self._body_error(response)) is not None:
                raise carried
            return response
        raise self._classify(response)


_AUTH_REASONS = frozenset(
    {"MISSING_API_KEY", "INVALID_API_KEY", "FAILED_TO_AUTH", "API_NOT_ALLOWED", "BILLING_AUTH_FAILED", "NEED_REAL_NAME_VERIFY"}
)
_BALANCE_REASONS = frozenset({"BILLING_BALANCE_NOT_ENOUGH", "NOT_ENOUGH_BALANCE"})
_CONTENT_REASONS = frozenset({"ILLEGAL_PROMPT", "ILLEGAL_IMAGE_CONTENT"})
_NOT_FOUND_REASONS = frozenset({"TASK_NOT_FOUND", "API_NOT_FOUND"})


def classify_error(
    response: httpx2.Response, *, reason: str, message: str, provider: str, key_env: str, status: int | None = None
) -> KlingError:
    """Map an error answer to our error classes.

    ``reason`` is Novita's ``reason`` enum or WaveSpeed's ``error_code`` (``""`` if none);
    ``message`` is the provider's text; ``status`` replaces the HTTP status when the answer
    carries its real one in the body (a 200 with an error ``code``, docs/providers.md#http-200-errors).
    Rules from docs/providers.md#error-classification: balance errors are recognised by reason or by
    the words "balance"/"credit", since the status differs between providers (400, 402 or 403).
    """
    status = response.status_code if status is None else status
    text = message or reason or response.reason_phrase
    said = f"{provider} said: {text}"
    lowered = text.lower()
    if status == 429 or reason == "RATE_LIMIT_EXCEEDED":
        return RateLimited(
            f"{provider} is rate-limiting requests (HTTP 429). Wait a little and try again.",
            retry_after=retry_after_seconds(response),
        )
    if status >= 500:
        # Before the keyword guesses: "billing service unavailable" is an outage, not an empty account.
        return ProviderError(f"{provider} had an internal error (HTTP {status}; {said}).", retryable=True)
    if reason in _BALANCE_REASONS or "balance" in lowered or "credit" in lowered:
        return InsufficientBalance(f"Your {provider} account balance is too low for this render ({said}). Top up, then try again.")
    if reason in _AUTH_REASONS or status in (401, 403):
        return AuthError(f"{provider} rejected the API key (HTTP {status}; {said}). Check {key_env}.")
    if reason in _CONTENT_REASONS:
        return ContentPolicy(f"{provider} refused the content ({said}). Rephrase the prompt or use another image.")
    if status == 404 or reason in _NOT_FOUND_REASONS:
        return NotFound(f"{provider} does not know that task or route (HTTP 404; {said}).")
    if status in (400, 422):
        return InvalidRequest(f"{provider} rejected the request (HTTP {status}; {said}).")
    return ProviderError(f"{provider} answered HTTP {status} ({said}).")


def classify_body_error(
    response: httpx2.Response, *, code: object, reason: str, message: str, provider: str, key_env: str
) -> KlingError:
    """The error an HTTP 200 carries in its body (docs/providers.md#http-200-errors), classified like its ``code``.

    With an HTTP-like ``code`` (400-599) it is classified exactly as that status would be. With
    none, by ``reason`` and ``message`` alone (balance, key, content), and otherwise as a
    passing provider error: retryable, since nothing says the request itself was wrong.
    """
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return classify_error(response, reason=reason, message=message, provider=provider, key_env=key_env, status=code)
    error = classify_error(response, reason=reason, message=message, provider=provider, key_env=key_env, status=400)
    if type(error) is InvalidRequest:
        text = message or reason or "no reason given"
        return ProviderError(f"{provider} answered with an error instead of a result ({provider} said: {text}).", retryable=True)
    return error


def json_body(response: httpx2.Response) -> dict[str, Any]:
    """The response's JSON object, or ``{}`` when the body is not a JSON object."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
