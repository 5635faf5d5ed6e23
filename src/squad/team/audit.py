"""The audit log (docs/team.md "Audit log"): who did what to which card, when, from where, and
how it ended. One helper, `record`, writes every row; the API's `AuditTrail` middleware and the
CLI's `audited` decorator call it, so a new write route or command is covered by a table entry.
"""

from __future__ import annotations

import getpass
import re
import socket
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy.exc import SQLAlchemyError

from squad.core.errors import SquadError
from squad.store.card_store import now_s
from squad.store.team_store import TeamStore

log = structlog.get_logger(__name__)
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def cli_actor() -> str:
    """`cli:<os user>`: who a CLI write acts as."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"cli:{user}"


def this_machine() -> str:
    """Where a CLI or beat write comes from: this machine's name."""
    return socket.gethostname()


def record(team: TeamStore, *, who: str, action: str, card_id: str | None, client: str | None, result: str,
           detail: str | None = None) -> None:
    """Append one audit row. A store that cannot take it is logged, never raised: the write it
    describes has already happened."""
    try:
        team.append_audit(who=who, action=action, card_id=card_id, client=client, result=result, detail=detail)
    except SQLAlchemyError as exc:
        log.error("audit row not written", who=who, action=action, card_id=card_id, error=str(exc).splitlines()[0])


def parse_since(text: str) -> float:
    """`--since`: an ISO date or time (UTC unless it says otherwise), or an age such as `30m`, `2h`, `7d`."""
    text = text.strip()
    ago = _AGO.fullmatch(text)
    if ago:
        return now_s() - float(ago.group(1)) * _UNIT_S[ago.group(2)]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise SquadError(f"invalid since {text!r}: an ISO time (2026-12-07T10:00) or an age (30m, 2h, 7d)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC."""
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=ts)).isoformat()


def card_actions(team: TeamStore, card_id: str, limit: int = 50) -> list[dict[str, object]]:
    """A card's successful writes, oldest first, as `{action, who, at}` ("approved by NAME")."""
    rows, _total = team.audit_rows(card_id=card_id, limit=limit)
    done = [r for r in rows if r["result"] in ("ok", "200", "201", "202")]
    return [{"action": r["action"], "who": r["who"], "at": iso(r["at"])} for r in reversed(done)]
