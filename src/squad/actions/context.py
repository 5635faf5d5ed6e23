"""The wiring every action needs, built in one place: settings → store → event bus → producer.

The CLI's write commands and `squad.submit` open one `Context` and hand its parts to the action
(`add_cards`, `retry_card`, `approve_card`, …) instead of each building the store, the event bus
and the producer by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType

from squad.core.settings import Settings
from squad.live.events import EventBus, try_event_bus
from squad.orchestration.dispatch import Producer, make_producer
from squad.store.card_store import CardStore, open_store


@dataclass
class Context:
    """Settings, their store and its event bus (None when Redis does not answer), and a producer
    built on first use."""

    settings: Settings
    store: CardStore
    events: EventBus | None
    _producer: Producer | None = field(default=None, init=False, repr=False)

    @property
    def producer(self) -> Producer:
        """A producer for one-off operations (retry, cancel, review, a submit's release): it queues
        through the broker, or for the local orchestrator, and never runs cards itself."""
        if self._producer is None:
            self._producer = make_producer(self.settings, self.store, self.events)
        return self._producer

    def close(self) -> None:
        """Release the producer, the event bus and the store's connections."""
        if self._producer is not None:
            self._producer.close()  # closes the event bus too
        elif self.events is not None:
            self.events.close()
        self.store.dispose()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_context(settings: Settings, store: CardStore | None = None) -> Context:
    """A context on these settings: their store (opened and migrated, unless given) and event bus."""
    store = store or open_store(settings.database_url)
    return Context(settings, store, try_event_bus(settings.events, settings.log_ttl, store.redis_keys))
