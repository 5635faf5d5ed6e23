"""GitHub issues in (docs/team.md "GitHub intake"): `POST /api/intake/github` takes GitHub's
webhook deliveries as GitHub sends them.

The signature (`X-Hub-Signature-256`, HMAC-SHA256 of the body with `[intake.github] secret`,
compared in constant time) is the credential: no API token on this route. A delivery id seen
before is ignored. An `issues` delivery whose issue has the configured label becomes card
`GH-<number>`; `edited` rewrites it while TODO, `closed` cancels it; an `issue_comment` starting
`/squad retry` from an OWNER, MEMBER or COLLABORATOR retries it. Everything else: 202, ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from squad.actions.backlog import add_cards
from squad.actions.lifecycle import cancel_card, retry_card
from squad.core.cards import DESCRIPTION_MAX_CHARS, LABELS_MAX_ITEMS, NAME_MAX_CHARS, TITLE_MAX_CHARS
from squad.core.errors import NotFoundError, SquadError
from squad.core.settings import Settings
from squad.core.statuses import Status, allowed_sources
from squad.live.events import EventBus
from squad.orchestration.dispatch import Producer
from squad.store.card_store import CardStore
from squad.store.team_store import TeamStore

log = structlog.get_logger(__name__)
TRUSTED_ASSOCIATIONS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})
RETRY_COMMAND = "/squad retry"


def signature_valid(secret: str | None, body: bytes, header: str | None) -> bool:
    """True when `X-Hub-Signature-256` is `sha256=<hex HMAC-SHA256 of the body>` under `secret`."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("ascii", "replace"))


@dataclass(frozen=True)
class IntakeResult:
    """What a delivery did: the HTTP status to answer, the card it touched, a message."""

    status_code: int
    action: str
    card_id: str | None
    message: str


def _ignored(why: str, card_id: str | None = None) -> IntakeResult:
    return IntakeResult(202, "ignored", card_id, why)


def _card_of(settings: Settings, issue: dict[str, Any], full_name: str) -> dict[str, Any]:
    cfg = settings.intake.github
    labels = [str(label.get("name", ""))[:NAME_MAX_CHARS] for label in issue.get("labels") or []
              if isinstance(label, dict)][:LABELS_MAX_ITEMS]
    card: dict[str, Any] = {
        "card_id": f"GH-{int(issue['number'])}",
        "title": (str(issue.get("title") or "").strip() or f"GitHub issue {issue['number']}")[:TITLE_MAX_CHARS],
        "description": str(issue.get("body") or "")[:DESCRIPTION_MAX_CHARS],
        "labels": labels,
    }
    repo = cfg.repos.get(full_name)
    if repo is not None:
        card["repo"] = str(repo)
    if cfg.squad:
        card["squad"] = cfg.squad
    if cfg.agent:
        card["agent"] = cfg.agent
    return card


def _has_label(issue: dict[str, Any], label: str) -> bool:
    return any(isinstance(item, dict) and item.get("name") == label for item in issue.get("labels") or [])


def handle_github(settings: Settings, store: CardStore, events: EventBus | None, producer: Callable[[], Producer],
                  *, event: str, delivery: str | None, body: bytes) -> IntakeResult:
    """Act on one verified delivery (the caller has checked its signature)."""
    if event not in ("issues", "issue_comment"):
        return _ignored(f"{event or 'unnamed'} event ignored")
    if delivery and not TeamStore(store).first_delivery(delivery, event):
        return _ignored(f"delivery {delivery} seen before: ignored")
    try:
        data = json.loads(body)
        issue = data["issue"]
        number = int(issue["number"])
        action = str(data.get("action") or "")
        full_name = str((data.get("repository") or {}).get("full_name") or "")
    except (ValueError, KeyError, TypeError):
        return IntakeResult(422, "invalid", None, "not an issues or issue_comment payload")
    card_id = f"GH-{number}"
    if event == "issue_comment":
        return _comment(producer, data, card_id, action)
    label = settings.intake.github.label
    if action in ("opened", "labeled", "reopened"):
        if not _has_label(issue, label):
            return _ignored(f"issue {number} has no label {label!r}", card_id)
        if store.get_cards([card_id]):
            return _ignored(f"card {card_id} exists", card_id)
        add_cards(store, [_card_of(settings, issue, full_name)], settings=settings, events=events)
        return IntakeResult(201, "add", card_id, f"card {card_id} added")
    known = store.get_cards([card_id]).get(card_id)
    if known is None:
        return _ignored(f"no card {card_id}", card_id)
    if action == "edited":
        if known.status != Status.TODO:
            return _ignored(f"card {card_id} is {known.status.value}: only a TODO card is rewritten", card_id)
        add_cards(store, [_card_of(settings, issue, full_name)], settings=settings, events=events, update=True)
        return IntakeResult(200, "edit", card_id, f"card {card_id} updated")
    if action == "closed":
        if known.status not in allowed_sources(Status.CANCELLED):
            return _ignored(f"card {card_id} is {known.status.value}", card_id)
        cancel_card(producer(), card_id, wait=False)
        return IntakeResult(200, "cancel", card_id, f"card {card_id} cancelled")
    return _ignored(f"issues {action or 'unnamed'} ignored", card_id)


def _comment(producer: Callable[[], Producer], data: dict[str, Any], card_id: str, action: str) -> IntakeResult:
    comment = data.get("comment") or {}
    text = str(comment.get("body") or "").strip()
    if action != "created" or not text.startswith(RETRY_COMMAND):
        return _ignored("comment is no /squad command", card_id)
    association = str(comment.get("author_association") or "")
    if association not in TRUSTED_ASSOCIATIONS:
        return _ignored(f"/squad retry from a commenter who is {association or 'unknown'}: ignored", card_id)
    try:
        res = retry_card(producer(), card_id)
    except NotFoundError as exc:
        return _ignored(str(exc), card_id)
    except SquadError as exc:
        return IntakeResult(200, "ignored", card_id, str(exc))
    return IntakeResult(200, "retry", card_id, res.message)
