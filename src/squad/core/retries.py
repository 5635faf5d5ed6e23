"""The one retry policy: after a failed or lost attempt, retry or fail, when, and with what note.

`CardStore.finish` (an attempt ended), `CardStore.lose_claim` (the stale-lease sweeper found a
dead worker) and the API's task view (`retries` / `max_retries`) all ask this module, so the budget
they apply cannot drift apart. Retries are not Celery countdowns: the store records
`next_attempt_at` and the reconciler re-sends the card when due (see docs/architecture.md,
"Visibility timeout").
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from squad.core.statuses import Status

if TYPE_CHECKING:
    from squad.core.cards import CardSpec
    from squad.core.settings import Settings

#: Up to this fraction of the delay is added at random, so cards that failed together spread out.
JITTER_MAX = 0.25


def retries_used(attempts: int, retry_base: int) -> int:
    """Automatic retries already spent: attempts since the user's last retry, minus the first."""
    return max(attempts - retry_base - 1, 0)


@dataclass(frozen=True)
class Decision:
    """What happens to a card after a failed attempt."""

    status: Status  # RETRYING or FAILED
    delay_s: float | None  # until the next attempt (RETRYING only)
    error: str | None  # the card's `last_error` (with a note when the budget stopped retries)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped, within a retry budget and a cost budget."""

    max_retries: int
    backoff_s: float
    backoff_max_s: float
    budget_usd: float | None = None
    jitter: Callable[[], float] = field(default=lambda: random.uniform(0.0, JITTER_MAX), compare=False)

    @classmethod
    def for_card(cls, settings: Settings, card: CardSpec) -> RetryPolicy:
        """The policy of one card: its own `max_retries`, else the settings'."""
        return cls(max_retries=settings.limits_for(card).max_retries, backoff_s=settings.retry_backoff,
                   backoff_max_s=settings.retry_backoff_max, budget_usd=settings.budget_usd)

    @classmethod
    def fixed(cls, max_retries: int, delay_s: float = 0.0, budget_usd: float | None = None) -> RetryPolicy:
        """A policy with a constant delay and no jitter (tools and tests that set up a state)."""
        return cls(max_retries=max_retries, backoff_s=delay_s, backoff_max_s=delay_s, budget_usd=budget_usd,
                   jitter=lambda: 0.0)

    def delay_s(self, retry_index: int, jitter: float = 0.0) -> float:
        """Delay before retry n (0-based): backoff * 2**n, plus jitter, capped."""
        return float(min(self.backoff_max_s, self.backoff_s * (2**retry_index) * (1.0 + jitter)))

    def decide(self, *, attempts: int, retry_base: int, cost_usd: float, error: str | None,
               retryable: bool = True) -> Decision:
        """Retry while the budget allows (attempts since the user's last retry <= max_retries + 1,
        cost below `budget_usd`) and the failure is worth retrying; otherwise fail."""
        retries_left = attempts - retry_base <= self.max_retries and retryable
        over_budget = self.budget_usd is not None and cost_usd >= self.budget_usd
        if retries_left and not over_budget:
            return Decision(Status.RETRYING, self.delay_s(retries_used(attempts, retry_base), self.jitter()),
                            error)
        if over_budget and retries_left:
            return Decision(Status.FAILED, None, f"{error} (budget {self.budget_usd} USD spent)")
        return Decision(Status.FAILED, None, error)
