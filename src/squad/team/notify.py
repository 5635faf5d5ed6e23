"""`[[notify]]`: webhooks when a card needs someone (docs/team.md "Notifications").

Never in a card's path: an attempt only writes its status event, as always. A periodic pass on a
worker (beat sends it every few seconds) reads the `task_updates` stream through a consumer
group (each event reaches one pass, whichever beat sent it), puts the matching notifications in
the store's outbox (one per target and event), and delivers what is due, several at once, each
bounded by a short timeout. A failed delivery is tried again with growing delays for a day, then
dropped and counted (`squad status`, `/metrics`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
import structlog

from squad.core.safetext import excerpt
from squad.core.settings import NotifyConfig, Settings
from squad.live.events import EventBus
from squad.store.card_store import CardStore, now_s
from squad.store.team_store import Outgoing, TeamStore
from squad.team.audit import iso

log = structlog.get_logger(__name__)
NOTIFY_GROUP = "squad-notify"
SEND_TIMEOUT_S = 5.0  # one delivery's connect + answer; a hanging receiver costs at most this
KEEP_TRYING_S = 86400.0  # then the notification is dropped (and counted)
FIRST_RETRY_S = 15.0
MAX_RETRY_S = 3600.0
SEND_BATCH = 16
SEND_THREADS = 8
READ_BATCH = 500
DEFAULT_DASHBOARD = "http://127.0.0.1:3000"  # `squad serve`'s default address
SIGNATURE_HEADER = "X-Squad-Signature"


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of the body>` (GitHub's shape: receivers verify it the same way)."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def card_link(settings: Settings, card_id: str) -> str:
    """The card in the dashboard (`public_url`, else the local default)."""
    return f"{(settings.public_url or DEFAULT_DASHBOARD).rstrip('/')}/#/cards/{card_id}"


def _slack_text(text: str) -> str:
    """Card text inside Slack mrkdwn: data, never markup or a mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(target: NotifyConfig, settings: Settings, *, event: str, card_id: str, title: str,
            squad: str | None, status: str, at: str, detail: str | None = None) -> str:
    """The body sent for one event, in the target's format."""
    link = card_link(settings, card_id)
    if target.format == "slack":
        what = "asks a question" if event == "question" else f"is *{status}*"
        line = f"<{link}|{_slack_text(card_id)}> {_slack_text(excerpt(title, 200))} {what}"
        blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": line}}]
        if detail:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _slack_text(excerpt(detail, 500))}})
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": _slack_text(f"squad {squad or '-'} · {status} · {at}")}]})
        return json.dumps({"text": f"{card_id} {status}", "blocks": blocks})
    data = {"event": event, "card_id": card_id, "title": title, "status": status, "squad": squad, "url": link,
            "at": at}
    if detail:
        data["detail"] = detail
    return json.dumps(data)


def _wanted(target: NotifyConfig, event: str, squad: str | None) -> bool:
    return event in target.events and (target.squads is None or (squad or "") in target.squads)


def ensure_group(events: EventBus) -> None:
    """The consumer group `squad-notify` on the status stream, reading from now on (kept if it exists).

    A worker creates it when it starts (squad.team.tasks), before it runs any card: the first team
    pass comes up to beat's interval later, and a group made only then would skip the events of every
    card that settled meanwhile."""
    try:
        events.redis.xgroup_create(events.keys.task_updates, NOTIFY_GROUP, id="$", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def collect(settings: Settings, store: CardStore, events: EventBus, consumer: str) -> int:
    """Read new events (consumer group `squad-notify`) and put what a `[[notify]]` wants in the
    outbox; returns how many notifications were queued."""
    client = events.redis
    stream = events.keys.task_updates
    ensure_group(events)
    read = client.xreadgroup(NOTIFY_GROUP, consumer, {stream: ">"}, count=READ_BATCH)
    entries: list[tuple[str, dict[str, str]]] = [(eid, fields) for _name, items in read or [] for eid, fields in items]
    if not entries:
        return 0
    found: list[tuple[str, str, dict[str, str]]] = []  # (entry id, event name, fields)
    for eid, fields in entries:
        kind = fields.get("type")
        if kind == "status" and fields.get("status"):
            found.append((eid, fields["status"], fields))
        elif kind == "question":
            found.append((eid, "question", fields))
    queued = 0
    if found:
        cards = store.get_cards(sorted({f.get("card_id", "") for _e, _n, f in found}))
        team = TeamStore(store)
        for eid, name, fields in found:
            card = cards.get(fields.get("card_id", ""))
            if card is None:
                continue
            for target in settings.notify:
                if not _wanted(target, name, card.squad):
                    continue
                body = payload(target, settings, event=name, card_id=card.card_id, title=card.title,
                               squad=card.squad, status=fields.get("status") or card.status.value,
                               at=fields.get("timestamp") or iso(now_s()), detail=fields.get("question"))
                if team.enqueue_notification(target=target.name or "", event_key=f"{events.keys.task_updates}:{eid}",
                                             event=name, card_id=card.card_id, body=body):
                    queued += 1
    client.xack(stream, NOTIFY_GROUP, *[eid for eid, _f in entries])
    return queued


@dataclass(frozen=True)
class Sent:
    """One delivery's outcome."""

    ok: bool
    error: str | None = None


def send(target: NotifyConfig, body: str) -> Sent:
    """POST one body (signed when the target has a secret); 2xx is success."""
    data = body.encode("utf-8")
    headers = {"Content-Type": "application/json", "User-Agent": "squad-orchestrator"}
    if target.secret:
        headers[SIGNATURE_HEADER] = signature(target.secret, data)
    request = urllib.request.Request(target.url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_S) as answer:
            answer.read(65536)
            return Sent(ok=200 <= answer.status < 300, error=None if answer.status < 300 else f"HTTP {answer.status}")
    except urllib.error.HTTPError as exc:
        return Sent(ok=False, error=f"HTTP {exc.code}")
    except (TimeoutError, urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Sent(ok=False, error=excerpt(f"{type(reason).__name__}: {reason}", 200))


def retry_delay(attempts: int) -> float:
    """Seconds until the next try after `attempts` failures: doubling from 15 s to an hour, jittered."""
    base = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** max(0, attempts - 1))
    return base * random.uniform(0.8, 1.2)


def deliver_due(settings: Settings, store: CardStore, now: float | None = None) -> dict[str, int]:
    """Send what is due (several at once, each bounded by `SEND_TIMEOUT_S`); count the outcomes."""
    team = TeamStore(store)
    when = now or now_s()
    targets = {t.name: t for t in settings.notify}
    due = team.claim_due(when, limit=SEND_BATCH, hold_s=SEND_TIMEOUT_S * 4)
    counts = {"sent": 0, "failed": 0, "dropped": 0}
    if not due:
        return counts

    def one(item: Outgoing) -> tuple[Outgoing, Sent]:
        target = targets.get(item.target)
        if target is None:
            return item, Sent(ok=False, error="no such [[notify]] entry any more")
        return item, send(target, item.body)

    with ThreadPoolExecutor(max_workers=min(SEND_THREADS, len(due))) as pool:
        results: Iterable[tuple[Outgoing, Sent]] = list(pool.map(one, due))
    for item, sent in results:
        if sent.ok:
            team.settle_notification(item.id, state="sent")
            counts["sent"] += 1
        elif item.target not in targets or now_s() - item.created_at >= KEEP_TRYING_S:
            team.settle_notification(item.id, state="dropped", error=sent.error)
            counts["dropped"] += 1
            log.warning("notification dropped", target=item.target, card_id=item.card_id, error=sent.error)
        else:
            team.settle_notification(item.id, state="pending", next_at=now_s() + retry_delay(item.attempts + 1),
                                     error=sent.error)
            counts["failed"] += 1
            log.info("notification failed, will retry", target=item.target, card_id=item.card_id, error=sent.error)
    return counts


def send_test(settings: Settings, name: str | None = None) -> list[tuple[str, Sent]]:
    """`squad notify test [NAME]`: one test notification to each entry (or the named one), now."""
    targets = [t for t in settings.notify if name is None or t.name == name]
    if name is not None and not targets:
        from squad.core.errors import NotFoundError

        raise NotFoundError(f"no [[notify]] entry named {name!r}")
    out: list[tuple[str, Sent]] = []
    for target in targets:
        body = payload(target, settings, event="test", card_id="TEST", title="squad notify test", squad=None,
                       status="TEST", at=iso(now_s()))
        out.append((target.name or "", send(target, body)))
    return out
