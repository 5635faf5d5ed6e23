"""Squad Orchestrator: run a backlog of cards through AI coding agents on Celery workers over Redis."""

from squad.cards import Card, CardSpec, Run, Status
from squad.config import Settings, load_settings
from squad.constants import VERSION
from squad.errors import BacklogError, ConfigError, NotFoundError, SquadError, TransitionError

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
