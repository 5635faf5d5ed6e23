"""Team use: the audit log (`GET /api/audit`, admin) and GitHub intake (docs/team.md)."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse

from squad.api.deps import StateDep
from squad.api.schemas import AuditOut, IntakeOut, error_responses
from squad.core.cards import CARD_ID_RE
from squad.core.errors import SquadError
from squad.store.team_store import AUDIT_MAX_PAGE, TeamStore
from squad.team.audit import iso, parse_since
from squad.team.intake import handle_github, signature_valid

router = APIRouter(tags=["team"])


@router.get("/api/audit", response_model=list[AuditOut], responses=error_responses(401, 403, 422))
async def audit_log(state: StateDep, response: Response,
                    card_id: Annotated[str | None, Query(pattern=CARD_ID_RE.pattern,
                                                         description="Only this card")] = None,
                    since: Annotated[str | None, Query(max_length=40, description="ISO time or age (30m, 2h, 7d)")]
                    = None,
                    limit: Annotated[int, Query(ge=1, le=AUDIT_MAX_PAGE, description="Page size")] = 100,
                    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="Rows to skip")] = 0,
                    ) -> list[AuditOut]:
    """The audit log, newest first (admin); the matching total is in `X-Total-Count`."""
    try:
        after = parse_since(since) if since else None
    except SquadError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    rows, total = await to_thread.run_sync(lambda: TeamStore(state.store).audit_rows(
        card_id=card_id, since=after, limit=limit, offset=offset))
    response.headers["X-Total-Count"] = str(total)
    return [AuditOut.model_validate({**row, "at": iso(row["at"])}) for row in rows]


@router.post("/api/intake/github", status_code=202, response_model=IntakeOut,
             responses={**error_responses(401, 422),
                        200: {"model": IntakeOut, "description": "A card was changed (edited, cancelled, retried)"},
                        201: {"model": IntakeOut, "description": "A card was added"}})
async def github_intake(request: Request, state: StateDep,
                        x_github_event: Annotated[str, Header(max_length=100)] = "",
                        x_github_delivery: Annotated[str | None, Header(max_length=100)] = None,
                        x_hub_signature_256: Annotated[str | None, Header(max_length=200)] = None) -> JSONResponse:
    """GitHub's webhook deliveries (`issues`, `issue_comment`; docs/team.md): the signature
    `X-Hub-Signature-256` under `[intake.github] secret` is the credential (401 when wrong or
    missing); a replayed `X-GitHub-Delivery` and other events answer 202 and change nothing."""
    body = await request.body()
    if not signature_valid(state.settings.intake.github.secret, body, x_hub_signature_256):
        request.scope.setdefault("state", {}).update(audit_who="github", audit_action="refused")
        raise HTTPException(status_code=401, detail="missing or wrong X-Hub-Signature-256")
    result = await to_thread.run_sync(lambda: handle_github(
        state.settings, state.store, None, state.producers.get, event=x_github_event, delivery=x_github_delivery,
        body=body))
    out = IntakeOut(action=result.action, card_id=result.card_id, message=result.message)
    request.scope.setdefault("state", {}).update(audit_who="github", audit_action=result.action,
                                                 audit_card=result.card_id)
    return JSONResponse(out.model_dump(), status_code=result.status_code)
