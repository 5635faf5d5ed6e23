"""`squad token …`, `squad audit`, `squad notify …`, `squad schedule …`: team use (docs/team.md)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from squad.cli.common import audited, cli_settings, cli_store, out, print_json
from squad.cli.options import JsonOpt
from squad.core.safetext import escape_controls

token_app = typer.Typer(help="API tokens with roles: create, list, revoke.", no_args_is_help=True)


@token_app.command("create")
@audited("token create", None)
def token_create(name: Annotated[str, typer.Argument(help="The token's name (shown in the audit log).")],
                 role: Annotated[str, typer.Option("--role", help="viewer, operator or admin.")] = "viewer") -> None:
    """Create a token and print it, once (only its salted digest is stored)."""
    from squad.store.team_store import TeamStore
    from squad.team.tokens import Role, create_token

    parsed = Role.parse(role)
    token = create_token(TeamStore(cli_store(cli_settings())), name, parsed)
    sys.stderr.write(f"token {name} ({parsed.label}) created; it is shown once:\n")
    sys.stdout.write(token + "\n")


@token_app.command("list")
def token_list(as_json: JsonOpt = False) -> None:
    """Tokens: name, role, created, last used, revoked (never the token)."""
    from squad.store.team_store import TeamStore
    from squad.team.audit import iso

    rows = [{"name": t.name, "role": t.role, "created_at": iso(t.created_at),
             "last_used_at": iso(t.last_used_at) if t.last_used_at else None,
             "revoked_at": iso(t.revoked_at) if t.revoked_at else None}
            for t in TeamStore(cli_store(cli_settings())).tokens()]
    if as_json:
        print_json(rows)
        return
    from squad.cli.cards import _plain_table

    sys.stdout.write(_plain_table(("name", "role", "created", "last used", "revoked"), [
        (str(r["name"]), str(r["role"]), str(r["created_at"])[:19], str(r["last_used_at"] or "never")[:19],
         str(r["revoked_at"] or "")[:19]) for r in rows]))


@token_app.command("revoke")
@audited("token revoke", None)
def token_revoke(name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke a token: the API refuses it from now on (401)."""
    from squad.store.team_store import TeamStore
    from squad.team.tokens import revoke_token

    revoke_token(TeamStore(cli_store(cli_settings())), name)
    out.print(f"token {escape_controls(name)} revoked")


def audit(card_id: Annotated[str | None, typer.Option("--card", help="Only this card.")] = None,
          since: Annotated[str | None, typer.Option("--since", help="ISO time or age (30m, 2h, 7d).")] = None,
          limit: Annotated[int, typer.Option(min=1, max=1000, help="Rows (newest first).")] = 100,
          as_json: JsonOpt = False) -> None:
    """The audit log: who did what to which card, when, from where, and the result."""
    from squad.store.team_store import TeamStore
    from squad.team.audit import iso, parse_since

    after = parse_since(since) if since else None
    rows, _total = TeamStore(cli_store(cli_settings())).audit_rows(card_id=card_id, since=after, limit=limit)
    data = [{**row, "at": iso(row["at"])} for row in rows]
    if as_json:
        print_json(data)
        return
    from squad.cli.cards import _plain_table

    sys.stdout.write(_plain_table(("when", "who", "action", "card", "from", "result"), [
        (r["at"][:19], r["who"], r["action"], r["card_id"] or "", r["client"] or "", r["result"]) for r in data]))


notify_app = typer.Typer(help="Notifications ([[notify]] in squad.toml).", no_args_is_help=True)
schedule_app = typer.Typer(help="Schedules ([[schedule]] in squad.toml).", no_args_is_help=True)


@notify_app.command("test")
def notify_test(name: Annotated[str | None, typer.Argument(help="The [[notify]] entry (default: every one).")]
                = None) -> None:
    """Send one test notification to each entry now; exit 1 when one fails."""
    from squad.core.errors import ConfigError
    from squad.team.notify import send_test

    settings = cli_settings()
    if not settings.notify:
        raise ConfigError("no [[notify]] entry in squad.toml (docs/team.md)")
    failed = 0
    for target, sent in send_test(settings, name):
        if sent.ok:
            out.print(f"{escape_controls(target)}: delivered")
        else:
            failed += 1
            out.print(f"{escape_controls(target)}: failed ({escape_controls(sent.error or '')})")
    if failed:
        raise typer.Exit(1)


@schedule_app.command("list")
def schedule_list(as_json: JsonOpt = False) -> None:
    """Each schedule: its cron line (UTC), next run, last tick and card id template."""
    from squad.team.schedules import schedule_rows

    settings = cli_settings()
    rows = schedule_rows(settings, cli_store(settings))
    if as_json:
        print_json(rows)
        return
    from squad.cli.cards import _plain_table

    sys.stdout.write(_plain_table(("schedule", "cron (UTC)", "next run", "last tick", "card"), [
        (str(r["name"]), str(r["cron"]), str(r["next_run"])[:16], str(r["last_tick"] or "-"), str(r["card_id"]))
        for r in rows]))
