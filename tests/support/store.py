"""Short ways into a test's card store: a card's status now, the store's Redis key names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from squad.core.cards import Status
    from squad.store.card_store import CardStore


def status_of(store: CardStore, card_id: str) -> Status:
    """A card's status in the store now."""
    return store.get_card(card_id).status


def redis_keys(database_url: str) -> Any:
    """The Redis names of the store at this URL (`squad:<instance id>:...`)."""
    from squad.store.card_store import CardStore

    store = CardStore(database_url)
    try:
        return store.redis_keys
    finally:
        store.dispose()
