"""The one retry policy, on plain numbers."""

from __future__ import annotations

from squad.core.retries import Decision, RetryPolicy, retries_used
from squad.core.statuses import Status


def test_retries_are_counted_from_the_user_s_last_retry() -> None:
    assert [retries_used(a, 0) for a in (0, 1, 2, 3)] == [0, 0, 1, 2]
    assert retries_used(5, 4) == 0 and retries_used(6, 4) == 1


def test_a_failure_is_retried_while_the_budget_allows_with_a_growing_jittered_delay() -> None:
    policy = RetryPolicy(max_retries=2, backoff_s=10, backoff_max_s=1000, jitter=lambda: 0.25)
    assert policy.decide(attempts=1, retry_base=0, cost_usd=0, error="e") == Decision(Status.RETRYING, 12.5, "e")
    assert policy.decide(attempts=2, retry_base=0, cost_usd=0, error="e") == Decision(Status.RETRYING, 25.0, "e")
    assert policy.decide(attempts=3, retry_base=0, cost_usd=0, error="e") == Decision(Status.FAILED, None, "e")
    # a user's retry (retry_base = attempts so far) restarts the budget
    assert policy.decide(attempts=4, retry_base=3, cost_usd=0, error="e").status == Status.RETRYING


def test_an_unretryable_failure_or_a_spent_cost_budget_fails_at_once_with_a_note() -> None:
    policy = RetryPolicy.fixed(3, delay_s=5, budget_usd=1.0)
    assert policy.decide(attempts=1, retry_base=0, cost_usd=0.5, error="e", retryable=False) == \
        Decision(Status.FAILED, None, "e")
    assert policy.decide(attempts=1, retry_base=0, cost_usd=1.0, error="e") == \
        Decision(Status.FAILED, None, "e (budget 1.0 USD spent)")
    assert policy.decide(attempts=1, retry_base=0, cost_usd=0.5, error="e") == Decision(Status.RETRYING, 5.0, "e")
