"""The one "Celery or local" decision, without a broker (the ping result is handed in)."""

from __future__ import annotations

import pytest

from squad.core.errors import BrokerUnavailable, SquadError
from squad.core.settings import load_settings
from squad.orchestration.dispatch import ExecutionMode, execution_mode


def test_local_is_chosen_when_asked_for_or_when_celery_is_off_without_asking_the_broker() -> None:
    assert execution_mode(load_settings(use_celery=True), "local", broker_ok=True) == ExecutionMode("local")
    assert execution_mode(load_settings(use_celery=False), broker_ok=True) == ExecutionMode("local")


def test_auto_falls_back_to_local_with_a_reason_when_no_broker_answers() -> None:
    mode = execution_mode(load_settings(use_celery=True, redis_url="redis://u:secret@127.0.0.1:1"), broker_ok=False)
    assert mode.name == "local" and mode.reason is not None
    assert "secret" not in mode.reason and "no Redis broker answers" in mode.reason


def test_celery_asked_for_without_a_broker_is_an_error_and_a_live_broker_means_celery() -> None:
    settings = load_settings(use_celery=True)
    with pytest.raises(BrokerUnavailable):
        execution_mode(settings, "celery", broker_ok=False)
    assert execution_mode(settings, broker_ok=True) == ExecutionMode("celery")
    with pytest.raises(SquadError, match="unknown mode"):
        execution_mode(settings, "threads")
