"""What every `squad` command shares: the consoles, the settings, store and event bus of this folder,
JSON output, table cells that never carry a terminal control sequence, service logging.

Imports are lazy on purpose: `squad --help` must not pay for Rich, pydantic or structlog, and a
read-only command only for what it uses (docs/benchmarks.md, "CLI").
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from squad.core.safetext import escape_controls

if TYPE_CHECKING:
    from rich.text import Text

    from squad.actions.context import Context
    from squad.core.settings import Settings


class _LazyConsole:
    """A Rich console built on first use (importing Rich costs about as much as `--help` itself)."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


out: Any = _LazyConsole(highlight=False, soft_wrap=True, markup=False, emoji=False)  # text is data
err: Any = _LazyConsole(highlight=False, soft_wrap=True, stderr=True, markup=False, emoji=False)

_F = TypeVar("_F", bound=Callable[..., Any])


def cli_settings(**overrides: Any) -> Settings:
    """The settings of this folder (a `squad up` running here: what it started)."""
    from squad.ops.up_state import apply_state

    apply_state()  # a `squad up` running in this folder: use what it started
    from squad.core.settings import load_settings

    return load_settings(**overrides)


def mask_url(url: str) -> str:
    """squad.core.masking.mask_url, imported when a URL is printed."""
    from squad.core.masking import mask_url as mask

    return mask(url)


def warn_unconfined(settings: Settings) -> None:
    """A service that runs agents says once, at start, when they run unconfined by default (bwrap
    does not work here: docs/security.md "The sandbox per attempt")."""
    from squad.agents.sandbox import fallback_warning

    warning = fallback_warning(settings.sandbox)
    if warning is not None:
        err.print(f"warning: {warning}", style="yellow")


def cli_store(settings: Settings) -> Any:
    """The card store of these settings (opened and migrated)."""
    from squad.store.card_store import open_store

    return open_store(settings.database_url)


def cli_context() -> Context:
    """The settings of this folder with their store, event bus and (on first use) producer, for a
    command that writes (`actions.context`)."""
    from squad.actions.context import open_context

    settings = cli_settings()
    return open_context(settings, cli_store(settings))


def print_json(data: Any) -> None:
    """Data as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def card_json(card: Any) -> dict[str, Any]:
    """A card as `card list --json` prints it."""
    return dict(card.model_dump(mode="json"))


def field(key: str, value: object) -> Text:
    """`key: value` with a bold key; the value is shown as plain text (see `cell`)."""
    from rich.text import Text

    return Text.assemble((key, "bold"), ": ", escape_controls(str(value)))


def service_logging(level: str = "INFO") -> None:
    """Long-running services log what they do (JSON lines when not on a terminal)."""
    from squad.core.logconfig import configure_logging

    configure_logging("DEBUG" if os.environ.get("SQUAD_DEBUG") else level)


def audited(action: str, card_param: str | None = "card_id") -> Callable[[_F], _F]:
    """A write command, in the audit log as `cli:<os user>` (docs/team.md "Audit log"): one row
    after it ran, `ok` or the error's first line. `card_param` names the argument holding the card."""

    def wrap(command: _F) -> _F:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            card = kwargs.get(card_param) if card_param else None
            try:
                result = command(*args, **kwargs)
            except Exception as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                _audit(action, card if isinstance(card, str) else None, f"error: {first}")
                raise
            _audit(action, card if isinstance(card, str) else None, "ok")
            return result

        return run  # type: ignore[return-value]

    return wrap


def _audit(action: str, card_id: str | None, result: str) -> None:
    from squad.core.errors import SquadError

    try:
        store = cli_store(cli_settings())
    except SquadError:
        return  # no store to write to (bad settings): the command's own error says so
    from squad.store.team_store import TeamStore
    from squad.team.audit import cli_actor, record, this_machine

    record(TeamStore(store), who=cli_actor(), action=action, card_id=card_id, client=this_machine(), result=result)
