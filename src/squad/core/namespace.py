"""The Redis names of one store: every key and stream carries `squad:<instance id>:` (docs/api.md "WebSocket").

Live logs and events used to be keyed by card id only, so two stores on one Redis (a PostgreSQL
store and a SQLite one, or `squad up --demo` next to the default store) showed each other's logs
and mixed their events. Each store has an instance id kept in its database (table `instance`);
everything a store's processes write to or read from the events Redis goes through these names.
"""

from __future__ import annotations

from dataclasses import dataclass

from squad.core.constants import (
    ORCHESTRATOR_PREFIX,
    ORCHESTRATORS_KEY,
    SETTLED_STREAM,
    TASK_LOGS_PREFIX,
    TASK_UPDATES_STREAM,
)


@dataclass(frozen=True)
class RedisKeys:
    """Key and stream names under one namespace (`squad:<instance id>`)."""

    namespace: str

    @classmethod
    def for_instance(cls, instance_id: str) -> RedisKeys:
        """The names of the store with this instance id."""
        return cls(f"squad:{instance_id}")

    @property
    def task_updates(self) -> str:
        """The event stream (`task_updates`)."""
        return f"{self.namespace}:{TASK_UPDATES_STREAM}"

    @property
    def settled(self) -> str:
        """The orchestrator's wake-up stream (`settled`): the status events a pass may act on."""
        return f"{self.namespace}:{SETTLED_STREAM}"

    def task_logs(self, card_id: str) -> str:
        """The live log stream of one card (`task:logs:<card_id>`)."""
        return f"{self.namespace}:{TASK_LOGS_PREFIX}{card_id}"

    @property
    def orchestrators(self) -> str:
        """The set of running orchestrators' ids (`orchestrators`)."""
        return f"{self.namespace}:{ORCHESTRATORS_KEY}"

    def orchestrator(self, orchestrator_id: str) -> str:
        """One running orchestrator's heartbeat (`orchestrator:<id>`, expires unless renewed)."""
        return f"{self.namespace}:{ORCHESTRATOR_PREFIX}{orchestrator_id}"
