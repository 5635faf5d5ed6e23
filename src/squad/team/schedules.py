"""`[[schedule]]`: cards added on a cron line (docs/team.md "Schedules").

Each pass (beat runs one every few seconds, on a worker) looks at each schedule's latest tick at
or before now. The store's `schedule_ticks` row for (schedule, tick) is taken by exactly one
process — so two beats add one card per tick — and only then is the card added. A schedule seen
for the first time records its current tick without a card (a nightly schedule added at noon does
not fire for last night); after beat was down, only the latest missed tick is added, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from croniter import croniter

from squad.actions.backlog import add_cards
from squad.core.errors import ConfigError, SquadError
from squad.core.settings import ScheduleConfig, Settings
from squad.live.events import EventBus
from squad.store.card_store import CardStore
from squad.store.team_store import TeamStore
from squad.team.audit import record, this_machine

log = structlog.get_logger(__name__)
TICK_FORMAT = "%Y-%m-%dT%H:%M"


def _cron(entry: ScheduleConfig, start: datetime) -> croniter:
    if not croniter.is_valid(entry.cron):
        raise ConfigError(f"[[schedule]] {entry.name}: invalid cron line {entry.cron!r}")
    return croniter(entry.cron, start)


def latest_tick(entry: ScheduleConfig, now: datetime) -> datetime:
    """The schedule's newest tick at or before `now` (UTC, to the minute)."""
    minute = now.astimezone(UTC).replace(second=0, microsecond=0)
    tick: datetime = _cron(entry, minute + timedelta(seconds=1)).get_prev(datetime)
    return tick.astimezone(UTC)


def next_run(entry: ScheduleConfig, now: datetime) -> datetime:
    """The schedule's first tick after `now` (UTC)."""
    tick: datetime = _cron(entry, now.astimezone(UTC)).get_next(datetime)
    return tick.astimezone(UTC)


def _fill(value: Any, date: str, time: str) -> Any:
    if isinstance(value, str):
        return value.replace("{date}", date).replace("{time}", time)
    if isinstance(value, list):
        return [_fill(item, date, time) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, date, time) for key, item in value.items()}
    return value


def render_card(entry: ScheduleConfig, tick: datetime) -> dict[str, Any]:
    """The card of one tick: `{date}` (YYYY-MM-DD) and `{time}` (HHMM, UTC) filled in every text."""
    filled: dict[str, Any] = _fill(entry.card, tick.strftime("%Y-%m-%d"), tick.strftime("%H%M"))
    return filled


@dataclass(frozen=True)
class TickResult:
    """What one pass did for one schedule."""

    schedule: str
    tick: str
    card_id: str | None  # the card added by this process, None when another took the tick or none was due


def run_schedules(settings: Settings, store: CardStore, events: EventBus | None,
                  now: datetime | None = None) -> list[TickResult]:
    """One pass over every `[[schedule]]` (safe to run in many processes at once)."""
    team = TeamStore(store)
    when = now or datetime.now(tz=UTC)
    done: list[TickResult] = []
    for entry in settings.schedule:
        name = entry.name or "schedule"
        try:
            tick = latest_tick(entry, when)
        except ConfigError as exc:
            log.error("schedule skipped", schedule=name, error=str(exc))
            continue
        key = tick.strftime(TICK_FORMAT)
        last = team.last_tick(name)
        if last is None:
            team.claim_tick(name, key, None)  # first sight: from now on
            continue
        if key <= last:
            continue
        card = render_card(entry, tick)
        if not team.claim_tick(name, key, str(card["card_id"])):
            continue
        who, card_id = f"schedule:{name}", str(card["card_id"])
        try:
            add_cards(store, [card], settings=settings, events=events)
        except SquadError as exc:
            log.error("scheduled card not added", schedule=name, tick=key, error=str(exc))
            record(team, who=who, action="add", card_id=card_id, client=this_machine(), result=f"error: {exc}",
                   detail=f"tick {key}")
            continue
        record(team, who=who, action="add", card_id=card_id, client=this_machine(), result="ok", detail=f"tick {key}")
        log.info("scheduled card added", schedule=name, tick=key, card_id=card["card_id"])
        done.append(TickResult(schedule=name, tick=key, card_id=str(card["card_id"])))
    return done


def schedule_rows(settings: Settings, store: CardStore, now: datetime | None = None) -> list[dict[str, Any]]:
    """`squad schedule list`: each schedule with its cron line, next run and last tick."""
    team = TeamStore(store)
    when = now or datetime.now(tz=UTC)
    rows = []
    for entry in settings.schedule:
        rows.append({"name": entry.name, "cron": entry.cron, "next_run": next_run(entry, when).isoformat(),
                     "last_tick": team.last_tick(entry.name or ""), "card_id": entry.card.get("card_id")})
    return rows
