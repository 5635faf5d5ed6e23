"""Squad Orchestrator: run a backlog of cards through AI coding agents on Celery workers over Redis.

The public names below are imported on first use: `squad --help` must not pay for pydantic.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from squad.core.constants import VERSION
from squad.core.errors import BacklogError, ConfigError, NotFoundError, SquadError, TransitionError

if TYPE_CHECKING:
    from squad.core.cards import Card, CardSpec, Run
    from squad.core.settings import Settings, load_settings
    from squad.core.statuses import Status

_LAZY = {"Card": "squad.core.cards", "CardSpec": "squad.core.cards", "Run": "squad.core.cards",
         "Status": "squad.core.statuses", "Settings": "squad.core.settings", "load_settings": "squad.core.settings"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'squad' has no attribute {name!r}")


__version__ = VERSION
__all__ = [
    "BacklogError",
    "Card",
    "CardSpec",
    "ConfigError",
    "NotFoundError",
    "Run",
    "Settings",
    "SquadError",
    "Status",
    "TransitionError",
    "__version__",
    "load_settings",
]
