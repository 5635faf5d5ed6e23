"""One way to queue: the orchestrator's bulk release and a single `Producer.send` send the same message
for a card, with its limits as `Settings.limits_for` resolves them (read back from a real broker)."""

from __future__ import annotations

import json
from typing import Any

from squad.core.cards import CardSpec
from squad.core.settings import load_settings
from squad.core.statuses import Status
from squad.live.broker import queue_keys
from squad.live.connections import redis_client
from squad.orchestration.dispatch import CELERY_HARD_MARGIN_S, CELERY_SOFT_MARGIN_S, CeleryDispatcher
from squad.orchestration.orchestrator import Orchestrator
from squad.store.card_store import CardStore


def broker_messages(broker_url: str) -> dict[str, dict[str, Any]]:
    """card_id -> headers of every message waiting in the `cards` queue."""
    client = redis_client(broker_url)
    found: dict[str, dict[str, Any]] = {}
    try:
        for key in queue_keys():
            for payload in client.lrange(key, 0, -1):
                headers = json.loads(payload)["headers"]
                found[json.loads(headers["argsrepr"].replace("'", '"'))[0]] = headers
    finally:
        client.close()
    return found


def test_bulk_release_and_send_clamp_a_card_s_limits_to_the_installation_s(redis_url: str, sqlite_url: str) -> None:
    # Given an installation whose hard limit is now 100 s, and cards stored when it allowed more
    settings = load_settings(redis_url=redis_url, database_url=sqlite_url, time_limit=100, soft_time_limit=50)
    store = CardStore(sqlite_url)
    store.add_cards([CardSpec(card_id="LONG", title="t", time_limit=500, soft_time_limit=400),
                     CardSpec(card_id="SHORT", title="t", time_limit=30, soft_time_limit=20),
                     CardSpec(card_id="PLAIN", title="t"),
                     CardSpec(card_id="AGAIN", title="t", time_limit=900)])
    store.cancel("AGAIN")
    dispatcher = CeleryDispatcher(settings)
    orch = Orchestrator(settings, store, dispatcher)
    try:
        # When the orchestrator releases the TODO cards in bulk, and a user's retry sends one alone
        assert sorted(orch.tick().released) == ["LONG", "PLAIN", "SHORT"]
        assert orch.producer.send("AGAIN", expected=[Status.CANCELLED]) is not None
        messages = broker_messages(settings.broker)
    finally:
        dispatcher.close()
        store.dispose()
    # Expect every message to carry the hard limit Settings.limits_for gives (never above the
    # installation's), Celery's own limits a margin above it (the attempt ends its agent first) plus
    # the answer budget (`ask_timeout`: Celery's limits cannot pause while an agent waits for a person)
    waits = settings.ask_timeout
    assert set(messages) == {"LONG", "SHORT", "PLAIN", "AGAIN"}
    for card_id, headers in messages.items():
        own = settings.limits_for(CardStore(sqlite_url).get_card(card_id))
        assert headers["timelimit"] == [own.time_limit_s + waits + CELERY_HARD_MARGIN_S,
                                        own.time_limit_s + waits + CELERY_SOFT_MARGIN_S], card_id
    assert messages["LONG"]["timelimit"] == messages["AGAIN"]["timelimit"] == [160 + waits, 130 + waits]
    assert messages["SHORT"]["timelimit"] == [90 + waits, 60 + waits]
