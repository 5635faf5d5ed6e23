"""Error types, mapped once to CLI exit codes and once to HTTP status codes."""

from __future__ import annotations


class SquadError(Exception):
    """Base of every error this product raises on purpose."""

    exit_code = 2
    http_status = 400


class ConfigError(SquadError):
    """A setting, `squad.toml` or agent definition is invalid."""


class BacklogError(SquadError):
    """A backlog file or card definition is invalid; `problems` lists every problem."""

    http_status = 422

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class NotFoundError(SquadError):
    """An unknown card, run or agent."""

    http_status = 404


class TransitionError(SquadError):
    """A status change that the card's current status does not allow."""

    http_status = 400


class ConflictError(SquadError):
    """An operation that conflicts with the current state (e.g. a duplicate id)."""

    http_status = 409


class DuplicateCardError(ConflictError):
    """Cards added again without `update`: `card_ids` names those the store already holds."""

    def __init__(self, card_ids: list[str]) -> None:
        self.card_ids = card_ids
        super().__init__("; ".join(self.problem(card_id) for card_id in card_ids))

    @staticmethod
    def problem(card_id: str) -> str:
        """The one line that names a card already in the store."""
        return f"card {card_id}: already exists (use --update to rewrite it)"


class BrokerUnavailable(SquadError):
    """No Redis broker answers."""

    exit_code = 2
    http_status = 503
