"""`squad answer`, `squad questions` and `squad mcp`: the agents' channel back (docs/agents.md)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from squad.cli.common import audited, card_json, cli_context, cli_settings, cli_store, out, print_json
from squad.cli.options import JsonOpt
from squad.core.safetext import table


@audited("answer")
def answer(card_id: Annotated[str, typer.Argument(help="Card id.")],
           text: Annotated[str, typer.Argument(help="The answer its agent gets.")]) -> None:
    """Answer the question a NEEDS_INPUT card's agent asks (`ask_human`): the card is IN_PROGRESS again."""
    from squad.actions.answer import answer_card
    from squad.team.audit import cli_actor

    with cli_context() as ctx:
        card = answer_card(ctx.store, ctx.events, card_id, text, by=cli_actor())
    out.print(f"card {card.card_id} answered: {card.status.value}")


def questions(as_json: JsonOpt = False) -> None:
    """Cards whose agent waits for a person's answer, with their questions."""
    from squad.actions.answer import questions as waiting

    cards = waiting(cli_store(cli_settings()))
    if as_json:
        print_json([card_json(card) for card in cards])
        return
    out.print(table(("card", "question", "choices", "title"),
                    [(card.card_id, card.question or "", " | ".join(card.choices or []), card.title[:60])
                     for card in cards]))


def mcp() -> None:
    """The MCP server (stdio) an agent starts to talk back to squad: progress, notes, sub-cards,
    questions to a person. It works only inside a squad attempt (docs/agents.md)."""
    from squad.channel.mcp_server import serve

    serve(os.environ)
