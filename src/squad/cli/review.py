"""`squad review …` and `squad workspace …`: what cards changed in their worktrees, and the worktrees."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from squad.cli.common import audited, card_json, cli_context, cli_settings, cli_store, out, print_json
from squad.cli.options import JsonOpt
from squad.core.safetext import escape_controls, table

review_app = typer.Typer(help="Review what cards changed: diff, approve, reject.", no_args_is_help=True)
workspace_app = typer.Typer(help="Cards' git worktrees: list and garbage-collect.", no_args_is_help=True)


@review_app.command("list")
def review_list(as_json: JsonOpt = False) -> None:
    """Cards waiting for review, with the size of their change."""
    from squad.actions.review import review_cards

    rows = [{**card_json(card), **stat} for card, stat in review_cards(cli_store(cli_settings()))]
    if as_json:
        print_json(rows)
        return
    out.print(table(("card", "branch", "files", "+", "-", "title"),
                    [(row["card_id"], row["branch"] or "", row["files_changed"] or 0, row["insertions"] or 0,
                      row["deletions"] or 0, str(row["title"])[:60]) for row in rows]))


@review_app.command("show")
def review_show(card_id: Annotated[str, typer.Argument(help="Card id.")],
                stat: Annotated[bool, typer.Option("--stat", help="Only the diff stat.")] = False) -> None:
    """Diff stat and diff of the card's branch since its base (`base…branch`), and the evidence: attempts,
    cost, time spent, verify exit and output tail, what a landing did."""
    from squad.actions.review import card_diff, card_evidence

    settings = cli_settings()
    store = cli_store(settings)
    diff = card_diff(settings, store, card_id, with_patch=not stat)
    lines = [f"branch {diff.branch}  base {diff.base_commit[:12]}  head {diff.head_commit[:12]}"]
    lines += [f" {f.path} | +{f.insertions} -{f.deletions}" for f in diff.files]
    lines.append(f" {len(diff.files)} file(s) changed, {sum(f.insertions for f in diff.files)} insertion(s), "
                 f"{sum(f.deletions for f in diff.files)} deletion(s)")
    lines += _evidence_lines(card_evidence(store, card_id))
    sys.stdout.write(_safe_text("\n".join(lines)) + "\n")
    if not stat and diff.patch:
        sys.stdout.write("\n" + _safe_text(diff.patch))


VERIFY_TAIL_LINES = 20  # of the verify output kept on the run, the lines `review show` prints


def _evidence_lines(ev: Any) -> list[str]:
    cost = "-" if ev.cost_usd is None else f"${ev.cost_usd:.4f}"
    duration = "-" if ev.duration_s is None else f"{ev.duration_s:.1f}s"
    lines = [f"status {ev.status}  attempts {ev.attempts}  cost {cost}  duration {duration}"]
    if ev.verify_exit is None and ev.verify_output is None:
        lines.append("verify: not run")
    else:
        verdict = "passed" if ev.verify_exit == 0 else "failed"
        lines.append(f"verify: {verdict} (exit {ev.verify_exit})")
        tail = (ev.verify_output or "").splitlines()[-VERIFY_TAIL_LINES:]
        lines += [f"  | {line}" for line in tail]
    if ev.landed_commit:
        lines.append(f"landed as {ev.landed_commit}")
    if ev.conflicts:
        lines.append(f"conflicts: {', '.join(ev.conflicts)}")
    if ev.last_error:
        lines.append(f"last error: {ev.last_error}")
    return lines


@audited("land")
def land(card_id: Annotated[str, typer.Argument(help="Card id.")]) -> None:
    """Land a DONE or REVIEW card by hand: its repository's merge train applies its branch on base,
    runs verify on the result and moves base (docs/workspaces.md "Landing the work")."""
    from squad.actions.review import land_now
    from squad.core.statuses import Status

    with cli_context() as ctx:
        card = land_now(ctx.producer, card_id)
    line = f"card {card.card_id} {card.status.value}"
    if card.status != Status.DONE and card.last_error:
        line += f": {card.last_error}"
    out.print(line)
    if card.status not in (Status.DONE, Status.LANDING):
        raise typer.Exit(1)


def _safe_text(text: str) -> str:
    """Agent-written text without terminal control sequences (newlines kept, see `escape_controls`)."""
    return "\n".join(escape_controls(line) for line in text.split("\n"))


@review_app.command("approve")
@audited("approve")
def review_approve(card_id: Annotated[str, typer.Argument(help="Card id.")]) -> None:
    """REVIEW → DONE (runs `[workspace] after_approve` first; its failure keeps the card in REVIEW)."""
    from squad.actions.review import approve_card

    with cli_context() as ctx:
        card = approve_card(ctx.producer, card_id)
    out.print(f"card {card.card_id} {card.status.value}")


@review_app.command("reject")
@audited("reject")
def review_reject(card_id: Annotated[str, typer.Argument(help="Card id.")],
                  feedback: Annotated[str, typer.Option("--feedback", help="What to change (shown to the agent).")]
                  ) -> None:
    """REVIEW → QUEUED: a new attempt in the same worktree, with your feedback in its prompt."""
    from squad.actions.review import reject_card

    with cli_context() as ctx:
        task_id = reject_card(ctx.producer, card_id, feedback)
    out.print(f"card {card_id} rejected: queued again as task {task_id}")


@workspace_app.command("list")
def workspace_list(as_json: JsonOpt = False) -> None:
    """Card worktrees under SQUAD_WORKDIR: card, branch, path, size on disk, age, dirty."""
    from squad.attempt.workspaces import list_workspaces

    settings = cli_settings()
    store = cli_store(settings)
    infos = list_workspaces(settings)
    cards = store.get_cards([i.card_id for i in infos])
    rows = [{**i.as_dict(), "status": cards[i.card_id].status.value if i.card_id in cards else None}
            for i in infos]
    if as_json:
        print_json(rows)
        return
    out.print(table(("card", "status", "branch", "path", "size", "age", "dirty"),
                    [(row["card_id"], row["status"] or "", row["branch"] or "", row["path"],
                      _human_bytes(row["size_bytes"]), _human_age(row["age_s"]), "yes" if row["dirty"] else "no")
                     for row in rows]))


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _human_age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86_400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86_400:.1f}d"


@workspace_app.command("gc")
def workspace_gc(older_than: Annotated[float | None, typer.Option(
        "--older-than", min=0, help="Remove worktrees idle this many days (default [workspace] ttl_days).")] = None
                 ) -> None:
    """Remove the worktrees the policy allows (never a running card's); uncommitted work is saved as a patch."""
    from squad.attempt.workspaces import gc, list_workspaces

    settings = cli_settings()
    store = cli_store(settings)
    ids = [i.card_id for i in list_workspaces(settings, with_size=False)]
    cards = store.get_cards(ids)

    def status_now(card_id: str) -> str | None:
        found = store.get_cards([card_id]).get(card_id)
        return found.status.value if found else None

    removed = gc(settings, cards, store.save_patch, older_than_days=older_than, status_now=status_now)
    out.print(f"removed {len(removed)} worktree(s)" + (f": {', '.join(removed)}" if removed else ""))
