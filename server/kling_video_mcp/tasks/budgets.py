"""Budgets: what a request is estimated to cost, and whether it fits what is left to spend.

A request is refused, before anything is sent, when its estimate is above the per-request cap
(``max_cost_usd``, else ``KLING_MCP_MAX_COST_USD``), above what is left of its owner's
``KLING_MCP_BUDGET_USD`` this period, or above what is left of the server's
``KLING_MCP_TOTAL_BUDGET_USD``. Periods are calendar days, ISO weeks or months, in UTC.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from kling_video_mcp.config import Settings
from kling_video_mcp.errors import BudgetExceeded, UnknownOutcome
from kling_video_mcp.journal import Journal
from kling_video_mcp.providers import provider_class
from kling_video_mcp.models import LOCAL_OWNER, GenerationRequest, TaskRecord, utcnow
from kling_video_mcp.tasks.owners import owner_name

PERIOD_ADJECTIVES = {"day": "daily", "week": "weekly", "month": "monthly"}


def _cost_nothing(record: TaskRecord) -> bool:
    """A failed task no provider bills: refused by it as content or a provider error, or never
    sent to it (no provider task id, and not an unknown outcome, which may have reached it)."""
    if record.status != "failed":
        return False
    never_sent = record.provider_task_id is None and record.error_code != UnknownOutcome.code
    return never_sent or record.error_code in ("content_policy", "provider_error")


class Budgets:
    """Prices requests and checks them against the caps and budgets, from the journal's tasks."""

    def __init__(self, settings: Settings, journal: Journal) -> None:
        self.settings = settings
        self.journal = journal

    def estimate(self, request: GenerationRequest) -> float:
        """Estimated cost in USD (each provider's own prices: ``Provider.estimate_usd``)."""
        return provider_class(request.provider).estimate_usd(request.mode, request.sound, request.duration)

    def period_start(self, now: datetime | None = None) -> datetime:
        """Start of the current budget period (calendar day, ISO week or month, in UTC)."""
        now = now or utcnow()
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.settings.budget_period == "week":
            return day - timedelta(days=day.weekday())
        if self.settings.budget_period == "month":
            return day.replace(day=1)
        return day

    async def spent(self, owner: str | None) -> float:
        """Estimated USD committed in the current budget period by ``owner`` (``None``: everyone).

        Every task counts except failed ones that cost nothing: those the provider itself failed
        (failed renders are not billed, or are refunded) and those it never got (a person
        declined, or a confirmed request failed its checks before sending). Unknown outcomes
        count, since they may have been billed, and so do requests awaiting confirmation (the
        budget is held for them until they are confirmed or declined).
        """
        records = await self.journal.created_since(self.period_start(), owner)
        return round(sum(record.estimated_cost_usd or 0.0 for record in records if not _cost_nothing(record)), 2)

    async def check_cost(self, request: GenerationRequest, max_cost_usd: float | None, *, owner: str) -> float:
        """The request's estimate, if it fits the per-request cap and the budgets.

        Raises:
            BudgetExceeded: the estimate is above ``max_cost_usd`` (else ``KLING_MCP_MAX_COST_USD``),
                above what is left of ``owner``'s ``KLING_MCP_BUDGET_USD`` this period, or above
                what is left of the server's ``KLING_MCP_TOTAL_BUDGET_USD``.
        """
        estimate = self.estimate(request)
        cap = max_cost_usd if max_cost_usd is not None else self.settings.max_cost_usd
        if cap is not None and estimate > cap:
            raise BudgetExceeded(
                f"This request is estimated at ${estimate:.2f}, above the limit of ${cap:.2f}; nothing was sent. "
                "Shorten the clip, pick a cheaper mode (std < pro < 4k), or raise max_cost_usd."
            )
        whose = "the" if owner == LOCAL_OWNER else f"{owner_name(owner)}'s"
        budgets = [
            (self.settings.budget_usd, owner, f"{whose} {{}} budget (KLING_MCP_BUDGET_USD)"),
            (self.settings.total_budget_usd, None, "the server's {} budget for all users (KLING_MCP_TOTAL_BUDGET_USD)"),
        ]
        for budget, spender, name in budgets:
            if budget is None:
                continue
            left = round(budget - await self.spent(spender), 2)
            if estimate > left:
                period = f"${budget:.2f} {PERIOD_ADJECTIVES[self.settings.budget_period]}"
                raise BudgetExceeded(
                    f"This request is estimated at ${estimate:.2f} but only ${max(left, 0):.2f} of "
                    f"{name.format(period)} is left; nothing was sent."
                )
        return estimate
