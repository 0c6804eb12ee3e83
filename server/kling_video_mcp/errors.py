"""The errors a user of the server can meet, as one small class hierarchy.

Every error has a stable ``code`` (part of the public result shape), a ``retryable``
flag, and a message a person can act on. The MCP surface turns them into
``isError`` results; nothing here ever carries an API key.
"""

from __future__ import annotations


class KlingError(Exception):
    """Base class. ``task_id`` is set when the error concerns a task that exists."""

    code = "provider_error"
    retryable = False

    def __init__(self, message: str, *, task_id: str | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.task_id = task_id
        if retryable is not None:
            self.retryable = retryable


class InvalidRequest(KlingError):
    """The request breaks a rule of the tool or of the chosen provider; nothing was sent."""

    code = "validation_error"


class AuthError(KlingError):
    """The provider rejected the API key (missing, unknown, or not allowed)."""

    code = "auth_error"


class InsufficientBalance(KlingError):
    """The provider account cannot pay for the render."""

    code = "insufficient_balance"


class RateLimited(KlingError):
    """The provider answered 429 and kept doing so within our retry budget."""

    code = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, task_id: str | None = None) -> None:
        super().__init__(message, task_id=task_id)
        self.retry_after = retry_after
        """Seconds the provider asked us to wait (its ``Retry-After``), if it said."""


class ConcurrencyLimited(KlingError):
    """The provider account already runs as many tasks at once as it may; nothing was created.

    A rate limit of its own kind: a slot frees when one of the account's running tasks ends,
    not after a backoff, so it is not retried on the spot. The task domain holds the submit
    (journaled, ``queued`` with this message) and sends it again when a task ends
    (:mod:`kling_video_mcp.tasks.slots`).
    """

    code = "rate_limited"
    retryable = True


class ContentPolicy(KlingError):
    """The provider refused the prompt or image on content grounds."""

    code = "content_policy"


class ProviderError(KlingError):
    """The provider failed the request or the task for a reason of its own."""

    code = "provider_error"


class ProviderUnreachable(KlingError):
    """No HTTP answer came back: connection refused, DNS failure, or a timeout."""

    code = "provider_unreachable"
    retryable = True


class DownloadFailed(KlingError):
    """The render finished but its clip could not be brought home: the link gave no video, a
    refused address, a clip over the size ceiling, or transfers that kept failing."""

    code = "download_failed"


class StorageError(KlingError):
    """This machine could not store a clip: the disk is full, or the output folder is read-only
    or gone. Checking the task again once that is fixed resumes the download."""

    code = "storage_error"


class UnknownOutcome(KlingError):
    """A submit may have reached the provider, but no answer says whether a task was made."""

    code = "unknown_outcome"


class TimedOut(KlingError):
    """A task ran past its ceiling without finishing."""

    code = "timed_out"


class AssemblyFailed(KlingError):
    """Joining clips into a film failed on this machine (a clip unreadable, the film short of its sources)."""

    code = "assembly_failed"


class NotFound(KlingError):
    """No task with that id is known to the journal or to the provider."""

    code = "not_found"


class BudgetExceeded(KlingError):
    """The request's estimate is above the per-request cap or what is left of the budget."""

    code = "budget_exceeded"


class Declined(KlingError):
    """A person did not say yes to spending on a request above ``KLING_MCP_CONFIRM_ABOVE_USD``
    (declined, dismissed, no answer in time, or no way to ask them); nothing was sent."""

    code = "declined"
