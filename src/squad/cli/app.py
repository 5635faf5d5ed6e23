"""The `squad` command. Thin: parse, call one domain function, print."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from squad.core.constants import VERSION_LINES
from squad.core.errors import SquadError
from squad.core.safetext import escape_controls

if TYPE_CHECKING:
    from rich.text import Text

    from squad.core.settings import Settings

# Imports are lazy on purpose: `squad --help` must not pay for Rich, pydantic or structlog, and a
# read-only command only for what it uses (docs/benchmarks.md, "CLI").

app = typer.Typer(help="Squad Orchestrator: run a backlog of cards through AI coding agents.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)
backlog_app = typer.Typer(help="Import, export and validate backlog files.", no_args_is_help=True)
card_app = typer.Typer(help="Add, list and show cards.", no_args_is_help=True)
agents_app = typer.Typer(help="Configured agents.", no_args_is_help=True)
app.add_typer(backlog_app, name="backlog")
app.add_typer(card_app, name="card")
app.add_typer(agents_app, name="agents")
review_app = typer.Typer(help="Review what cards changed: diff, approve, reject.", no_args_is_help=True)
workspace_app = typer.Typer(help="Cards' git worktrees: list and garbage-collect.", no_args_is_help=True)
app.add_typer(review_app, name="review")
app.add_typer(workspace_app, name="workspace")


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

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
CARD_PAGE = 100  # `card list` shows one page by default


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(VERSION_LINES["--version"])
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Squad Orchestrator: run a backlog of cards through AI coding agents."""


def _settings(**overrides: Any) -> Settings:
    from squad.ops.up_state import apply_state

    apply_state()  # a `squad up` running in this folder: use what it started
    from squad.core.settings import load_settings

    return load_settings(**overrides)


def mask_url(url: str) -> str:
    """squad.core.masking.mask_url, imported when a URL is printed."""
    from squad.core.masking import mask_url as mask

    return mask(url)


def _store(settings: Settings) -> Any:
    from squad.store.card_store import open_store

    return open_store(settings.database_url)


def _events(settings: Settings, store: Any) -> Any:
    from squad.live.events import try_event_bus

    return try_event_bus(settings.events, settings.log_ttl, store.redis_keys)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _cell(value: object) -> Text:
    """Card or agent text for a table: never Rich markup, never a raw control character."""
    from rich.text import Text

    return Text(escape_controls(str(value)))


def _field(key: str, value: object) -> Text:
    """`key: value` with a bold key; the value is shown as plain text (see `_cell`)."""
    from rich.text import Text

    return Text.assemble((key, "bold"), ": ", escape_controls(str(value)))


# ---- services -------------------------------------------------------------------------------
@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, help="Parallel cards on this worker.")] = 2,
    queues: Annotated[str, typer.Option(help="Queues to consume.")] = "cards,maintenance",
    hostname: Annotated[str | None, typer.Option(help="Worker name (default squad@<host>).")] = None,
    autoscale: Annotated[str | None, typer.Option(help="MAX,MIN processes.")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    stop_timeout: Annotated[float | None, typer.Option(
        min=1, help="Seconds a stopping worker lets running cards finish (default: hard limit + 30).")] = None,
    drain: Annotated[bool, typer.Option(
        "--drain", help="Instead of starting one: make the running worker --hostname (default: every worker "
        "of this host) take no new cards, finish its running ones and exit.")] = False,
) -> None:
    """Run a Celery worker under supervision (restarted with backoff if it dies)."""
    _service_logging()
    from squad.ops.deploy import WORKER_STOP_MARGIN_S
    from squad.ops.supervisor import Child, Supervisor

    settings = _settings()
    if drain:
        from squad.worker.drain import drain_workers

        drain_workers(settings, hostname, timeout_s=stop_timeout or settings.time_limit + WORKER_STOP_MARGIN_S,
                      say=lambda text: out.print(text, markup=False))
        return
    if autoscale is not None:
        parts = autoscale.split(",")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise SquadError(f"--autoscale must be MAX,MIN (two integers), got {autoscale!r}")
    argv = [sys.executable, "-m", "celery", "-A", "squad.celery_app", "worker", "-Q", queues,
            "--loglevel", loglevel, "-n", hostname or f"squad-{os.getpid()}@%h"]
    argv += ["--autoscale", autoscale] if autoscale else ["--concurrency", str(concurrency)]
    err.print(f"squad worker: broker {mask_url(settings.broker)}, queues {queues}", style="dim")
    # Exit code 0 is a drained or remotely shut down worker: stop, and let the service manager decide.
    sup = Supervisor([Child("celery-worker", argv, final_on_success=True)],
                     stop_timeout_s=stop_timeout or settings.time_limit + WORKER_STOP_MARGIN_S,
                     adopt_orphans=True)
    sup.install_signal_handlers()
    raise typer.Exit(sup.run())


@app.command()
def beat(loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO") -> None:
    """Run Celery beat (reconciler every few seconds, result cleanup hourly), supervised."""
    _service_logging()
    from squad.ops.supervisor import Child, Supervisor

    _settings()
    Path(".squad").mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "celery", "-A", "squad.celery_app", "beat", "--loglevel", loglevel,
            "--schedule", str(Path(".squad") / "celerybeat-schedule")]
    sup = Supervisor([Child("celery-beat", argv)])
    sup.install_signal_handlers()
    raise typer.Exit(sup.run())


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 3000,
    insecure: Annotated[bool, typer.Option(help="Allow a non-loopback host without SQUAD_API_TOKEN.")] = False,
) -> None:
    """Serve the monitoring API, WebSocket feed and dashboard."""
    _service_logging()
    from squad.api import serve as serve_api

    serve_api(_settings(), host=host, port=port, insecure=insecure)


@app.command()
def orchestrate(
    session: Annotated[str, typer.Option(help="Name of this orchestration session.")] = "default",
    once: Annotated[bool, typer.Option(help="Enqueue what is ready now, then stop.")] = False,
    wait: Annotated[bool, typer.Option(help="Keep releasing dependants until no card is active.")] = False,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between passes.")] = 1.0,
    max_in_flight: Annotated[int | None, typer.Option(min=1, help="Cards QUEUED+IN_PROGRESS at most.")] = None,
    mode: Annotated[str, typer.Option(help="auto | celery | local.")] = "auto",
    timeout: Annotated[float | None, typer.Option(min=0.1, help="With --wait: give up after S seconds (exit 124)."
                                                  )] = None,
) -> None:
    """Release ready cards (priority 9 first), retry failed ones when due, until stopped."""
    _service_logging()
    from squad.cli.wait_report import WaitReporter
    from squad.orchestration.orchestrator import EXIT_TIMEOUT, make_orchestrator

    if mode not in ("auto", "celery", "local"):
        raise SquadError(f"--mode must be auto, celery or local, got {mode!r}")
    if timeout is not None and not wait:
        raise SquadError("--timeout bounds --wait: use both")
    settings = _settings()
    store = _store(settings)
    orch = make_orchestrator(settings, store, mode=mode, session=session, max_in_flight=max_in_flight)
    if once and store.active_count() == 0:
        counts = {k: v for k, v in store.count_by_status().items() if v}
        what = ", ".join(f"{n} {s}" for s, n in counts.items()) if counts else "the store has no cards"
        err.print(f"orchestrator: nothing to do: no card is TODO, QUEUED, IN_PROGRESS or RETRYING ({what})")
        orch.dispatcher.close()
        raise typer.Exit(1 if counts.get("FAILED") and wait else 0)
    if orch.fallback_reason:
        err.print(f"warning: {orch.fallback_reason}; running cards in local mode", style="yellow")
    # In celery mode the first report comes at once: it says whether any worker consumes `cards`.
    reporter = WaitReporter(settings, orch.dispatcher.mode, store.count_by_status,
                            lambda line: err.print(f"orchestrator: {line}", style="dim"),
                            report_first_pass=orch.dispatcher.mode == "celery")

    if orch.dispatcher.runs_agents:
        from squad.agents.orphans import own_all_orphans

        own_all_orphans()  # this process runs agents: what they leave behind is ended with them

    def stop(signum: int, _frame: object) -> None:
        orch.stop()
        orch.dispatcher.interrupt()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    err.print(f"orchestrator: mode {orch.dispatcher.mode}, session {session}", style="dim")
    try:
        code = orch.run(once=once, wait=wait, interval=interval, timeout=timeout, on_wait=reporter.maybe_report)
        if code == EXIT_TIMEOUT:
            err.print(f"squad: error: --timeout {timeout:g} s reached, {reporter.describe()}")
    finally:
        orch.dispatcher.close(abort=orch.stopping.is_set())
    raise typer.Exit(code)


@app.command()
def up(
    demo: Annotated[bool, typer.Option(help="Load and run the demo backlog.")] = False,
    port: Annotated[int, typer.Option(min=1, max=65535, help="API and dashboard port.")] = 3000,
    concurrency: Annotated[int, typer.Option(min=1, help="Worker concurrency.")] = 2,
) -> None:
    """Run everything on this machine: Redis (embedded if none answers), worker, beat, orchestrator, API."""
    from squad.ops.up import run_up

    raise typer.Exit(run_up(demo=demo, port=port, concurrency=concurrency))


# ---- backlog --------------------------------------------------------------------------------
@backlog_app.command("import")
def backlog_import(
    file: Annotated[Path, typer.Argument(help="JSON or YAML backlog file.")],
    update: Annotated[bool, typer.Option("--update", help="Rewrite cards that are still TODO.")] = False,
) -> None:
    """Import cards: all or nothing."""
    from squad.actions.backlog import import_file

    settings = _settings()
    store = _store(settings)
    added, updated = import_file(store, file, update=update, settings=settings, events=_events(settings, store))
    out.print(f"imported {added} card(s), updated {updated}")


@backlog_app.command("export")
def backlog_export(file: Annotated[Path | None, typer.Argument(help="Output file (stdout if omitted).")] = None
                   ) -> None:
    """Export every card's fields (import takes them back)."""
    from squad.actions.backlog import dump, export_backlog

    text = dump(export_backlog(_store(_settings())), file)
    if file is None:
        sys.stdout.write(text)
    else:
        file.write_text(text, encoding="utf-8")
        out.print(f"exported to {file}")


@backlog_app.command("validate")
def backlog_validate(file: Annotated[Path, typer.Argument(help="JSON or YAML backlog file.")]) -> None:
    """Check a file without importing it."""
    from squad.actions.backlog import validate_file

    specs = validate_file(file, _settings())
    out.print(f"{file}: {len(specs)} card(s), valid")


# ---- cards ----------------------------------------------------------------------------------
@card_app.command("add")
def card_add(
    card_id: Annotated[str, typer.Option("--id", help="Card id.")],
    title: Annotated[str, typer.Option("--title", help="Title.")],
    agent: Annotated[str | None, typer.Option(help="Agent name.")] = None,
    squad: Annotated[str | None, typer.Option(help="Squad name.")] = None,
    priority: Annotated[int, typer.Option(help="0-9, 9 = most urgent.")] = 5,
    depends_on: Annotated[list[str] | None, typer.Option("--depends-on", help="Dependency (repeatable).")] = None,
    description: Annotated[str, typer.Option(help="What to do.")] = "",
    workdir: Annotated[str | None, typer.Option(help="Working directory (inside SQUAD_WORKDIR or an allowed root).")
                       ] = None,
) -> None:
    """Add one card."""
    from squad.actions.backlog import add_cards

    settings = _settings()
    store = _store(settings)
    card = {"card_id": card_id, "title": title, "agent": agent, "squad": squad, "priority": priority,
            "depends_on": depends_on or [], "description": description, "workdir": workdir}
    add_cards(store, [card], settings=settings, events=_events(settings, store))
    out.print(f"added card {card_id}")


def _card_json(card: Any) -> dict[str, Any]:
    return dict(card.model_dump(mode="json"))


@card_app.command("list")
def card_list(
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    squad: Annotated[str | None, typer.Option(help="Only this squad.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Cards per page (the most urgent first).")] = CARD_PAGE,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many cards.")] = 0,
    show_all: Annotated[bool, typer.Option("--all", help="Every card, no page.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List cards, most urgent first (one page of --limit cards unless --all)."""
    from squad.core.cards import Status

    if status is not None and status.upper() not in Status.__members__:
        raise SquadError(f"unknown status {status!r} (one of {', '.join(Status.__members__)})")
    store = _store(_settings())
    wanted = status.upper() if status else None
    cards = store.list_cards(status=wanted, squad=squad, limit=None if show_all else limit, offset=offset)
    if as_json:
        _print_json([_card_json(c) for c in cards])
        return
    rows = [(c.card_id, c.status.value, str(c.priority), c.squad or "", c.agent or "", f"{c.progress}%",
             (c.current_step or "")[:40], c.title[:60]) for c in cards]
    sys.stdout.write(_plain_table(("card", "status", "p", "squad", "agent", "progress", "step", "title"), rows))
    if not show_all and len(cards) == limit:
        total = store.count_cards(status=wanted, squad=squad)
        if total > offset + limit:
            sys.stderr.write(f"showing {offset + 1}-{offset + limit} of {total} cards "
                             f"(--offset {offset + limit} for the next page, --all for every card)\n")


def _plain_table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    """Aligned columns as plain text: a few microseconds a row (a Rich table costs ~1 ms a row).

    Control characters in card text are shown escaped, never sent to the terminal.
    """
    cells = [headers, *[tuple(escape_controls(cell) for cell in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"


@card_app.command("show")
def card_show(card_id: Annotated[str, typer.Argument(help="Card id.")], as_json: JsonOpt = False) -> None:
    """One card with its runs."""
    store = _store(_settings())
    card = store.get_card(card_id)
    runs = store.list_runs(card_id)
    data = _card_json(card)
    data["runs"] = [r.model_dump(mode="json") for r in runs]
    if as_json:
        _print_json(data)
        return
    for key, value in data.items():
        if key != "runs":
            out.print(_field(key, value))
    from rich.table import Table

    table = Table("attempt", "status", "worker", "started", "ended", "exit", "cost", "error")
    for r in runs:
        table.add_row(*map(_cell, (str(r.attempt), r.status, r.worker or "", str(r.started_at or ""),
                                   str(r.ended_at or ""), "" if r.exit_code is None else str(r.exit_code),
                                   "" if r.cost_usd is None else f"{r.cost_usd:.4f}", (r.error or "")[:60])))
    out.print(table)


# ---- logs, retry, cancel --------------------------------------------------------------------
@app.command()
def logs(
    card_id: Annotated[str, typer.Argument(help="Card id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines live.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Lines to show.")] = 100,
    run: Annotated[int | None, typer.Option(min=1, help="Archived log of attempt N.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Bytes as the agent wrote them (control characters"
                                      " included); otherwise they are shown escaped.")] = False,
) -> None:
    """Show a card's log: live from Redis, or archived in the store."""
    from squad.cli.logs import follow_logs, show_logs

    settings = _settings()
    store = _store(settings)
    store.get_card(card_id)
    if follow:
        follow_logs(settings, store, card_id, limit=limit, raw=raw)
    else:
        show_logs(settings, store, card_id, limit=limit, attempt=run, raw=raw)


@app.command()
def retry(card_id: Annotated[str, typer.Argument(help="Card id.")],
          force: Annotated[bool, typer.Option(help="Also restart a running or DONE card.")] = False) -> None:
    """Queue a new attempt of a FAILED or CANCELLED card (a running one is ended first with --force)."""
    from squad.actions.lifecycle import retry_card
    from squad.orchestration.dispatch import make_producer

    settings = _settings()
    store = _store(settings)
    result = retry_card(make_producer(settings, store, _events(settings, store)), card_id, force=force)
    out.print(result.message)


@app.command()
def cancel(card_id: Annotated[str, typer.Argument(help="Card id.")]) -> None:
    """Cancel a card: its agent's process group is ended, no retry."""
    from squad.actions.lifecycle import cancel_card
    from squad.orchestration.dispatch import make_producer

    settings = _settings()
    store = _store(settings)
    card = cancel_card(make_producer(settings, store, _events(settings, store)), card_id)
    out.print(f"card {card.card_id} {card.status.value}")


# ---- status and watch -----------------------------------------------------------------------
@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Health: database, Redis, Celery workers, mode, queue depth, cards by status."""
    from squad.ops.status import collect_status

    report = collect_status(_settings())
    if as_json:
        _print_json(report)
        return
    for key, value in report.items():
        if isinstance(value, dict):
            value = "  ".join(f"{k} {v}" for k, v in value.items() if v) or "none"
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "none"
        out.print(_field(key, value))


@app.command()
def watch(interval: Annotated[float, typer.Option(min=0.1, help="Redraw period.")] = 0.5) -> None:
    """Live progress bars of running cards, updated from the event stream."""
    from squad.cli.watch import run_watch

    settings = _settings()
    run_watch(settings, _store(settings), interval=interval)


# ---- setup ----------------------------------------------------------------------------------
@app.command()
def deploy(
    target: Annotated[str | None, typer.Argument(help="supervisord | systemd (none: list the targets)")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="supervisord: FILE; systemd: DIR.")] = None,
    run_dir: Annotated[Path, typer.Option(help="supervisord: socket and pid file.")] = Path(".squad/run"),
    log_dir: Annotated[Path | None, typer.Option(help="supervisord: logs (default RUN_DIR).")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Worker concurrency.")] = 2,
    api_port: Annotated[int, typer.Option(min=1, max=65535, help="API port.")] = 3000,
    programs: Annotated[str, typer.Option(help="Which of worker,beat,orchestrator,api to run here.")]
    = "worker,beat,orchestrator,api",
    user: Annotated[str | None, typer.Option(help="systemd: the services' user (default: you).")] = None,
) -> None:
    """Write configs that keep worker, beat, orchestrator and API running, with the current settings."""
    from squad.ops import deploy as dep

    only = [p.strip() for p in programs.split(",") if p.strip()]
    cwd = Path.cwd()
    if target is None:
        out.print("targets:\n  supervisord  a complete supervisord config (squad deploy supervisord -o FILE)\n"
                  "  systemd      one unit per program + an EnvironmentFile (squad deploy systemd -o DIR)")
        return
    settings = _settings()
    if target == "supervisord":
        text = dep.supervisord(settings, cwd, run_dir=run_dir, log_dir=log_dir or run_dir,
                               concurrency=concurrency, api_port=api_port, only=only)
        if output is None:
            sys.stdout.write(text)
            return
        dep.write_private(output, text)
        for folder in {run_dir, log_dir or run_dir}:
            folder.mkdir(parents=True, exist_ok=True)
        out.print(f"wrote {output} (mode 0600: it holds the settings' passwords); "
                  f"start it with: supervisord -c {output}")
    elif target == "systemd":
        folder = (output or Path("/etc/squad")).absolute()
        files = dep.systemd(settings, cwd, env_file=folder / dep.ENV_FILE, concurrency=concurrency,
                            api_port=api_port, user=user, only=only)
        if output is None:
            for name, text in files.items():
                sys.stdout.write(f"# ---- {folder / name if name == dep.ENV_FILE else name}\n{text}\n")
            return
        for name, text in files.items():
            if name == dep.ENV_FILE:
                dep.write_private(folder / name, text)
            else:
                (folder / name).write_text(text, encoding="utf-8")
        out.print(f"wrote {len(files) - 1} unit(s) and {folder / dep.ENV_FILE} (mode 0600: it holds the settings' "
                  f"passwords) to {folder}; install with: systemctl link {folder}/squad-*.service")
    else:
        raise SquadError(f"unknown deploy target {target!r} (supervisord or systemd)")


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Check this machine's setup (database, Redis persistence and memory policy, limits, agents, clock)."""
    from squad.ops.doctor import report, run_checks

    checks = run_checks(_settings())
    if as_json:
        _print_json(report(checks))
    else:
        for check in checks:
            out.print(f"{'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.detail}", markup=False)
            if not check.ok:
                out.print(f"      fix: {check.fix}", markup=False)
    bad = sum(not c.ok for c in checks)
    if not as_json:
        out.print("everything looks right" if not bad else f"{bad} problem(s) to fix", markup=False)
    raise typer.Exit(1 if bad else 0)


@app.command()
def init(force: Annotated[bool, typer.Option(help="Overwrite an existing squad.toml.")] = False) -> None:
    """Write a commented squad.toml with agent presets."""
    from squad.ops.deploy import SQUAD_TOML

    path = Path("squad.toml")
    if path.exists() and not force:
        raise SquadError("squad.toml already exists (use --force to overwrite)")
    path.write_text(SQUAD_TOML, encoding="utf-8")
    out.print(f"wrote {path}")


@agents_app.command("check")
def agents_check(as_json: JsonOpt = False) -> None:
    """Which configured agents are installed and runnable."""
    from squad.agents.presets import all_agents

    settings = _settings()
    rows: list[dict[str, Any]] = []
    for name, agent in sorted(all_agents(settings).items()):
        exe = shutil.which(agent.command[0])
        runnable = False
        detail: str = "not found on PATH"
        if exe:
            try:
                proc = subprocess.run([exe, "--version"], capture_output=True, timeout=15, check=False,
                                      stdin=subprocess.DEVNULL)
                runnable = proc.returncode == 0
                first = (proc.stdout or proc.stderr).decode(errors="replace").strip().splitlines()[:1]
                detail = first[0] if first else f"exit {proc.returncode}"
            except (OSError, subprocess.TimeoutExpired) as exc:
                detail = str(exc)
        rows.append({"agent": name, "command": agent.command, "installed": bool(exe), "runnable": runnable,
                     "detail": detail, "default": name == settings.default_agent})
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    table = Table("agent", "installed", "runnable", "command", "detail")
    for row in rows:
        table.add_row(row["agent"] + (" (default)" if row["default"] else ""), "yes" if row["installed"] else "no",
                      "yes" if row["runnable"] else "no", " ".join(row["command"]), str(row["detail"])[:60])
    out.print(table)


# ---- review and workspaces ------------------------------------------------------------------
@review_app.command("list")
def review_list(as_json: JsonOpt = False) -> None:
    """Cards waiting for review, with the size of their change."""
    from squad.actions.review import review_cards

    rows = [{**_card_json(card), **stat} for card, stat in review_cards(_store(_settings()))]
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    table = Table("card", "branch", "files", "+", "-", "title")
    for row in rows:
        table.add_row(row["card_id"], str(row["branch"] or ""), str(row["files_changed"] or 0),
                      str(row["insertions"] or 0), str(row["deletions"] or 0), str(row["title"])[:60])
    out.print(table)


@review_app.command("show")
def review_show(card_id: Annotated[str, typer.Argument(help="Card id.")],
                stat: Annotated[bool, typer.Option("--stat", help="Only the diff stat.")] = False) -> None:
    """Diff stat and diff of the card's branch since its base (`base…branch`)."""
    from squad.actions.review import card_diff

    settings = _settings()
    diff = card_diff(settings, _store(settings), card_id, with_patch=not stat)
    lines = [f"branch {diff.branch}  base {diff.base_commit[:12]}  head {diff.head_commit[:12]}"]
    lines += [f" {f.path} | +{f.insertions} -{f.deletions}" for f in diff.files]
    lines.append(f" {len(diff.files)} file(s) changed, {sum(f.insertions for f in diff.files)} insertion(s), "
                 f"{sum(f.deletions for f in diff.files)} deletion(s)")
    sys.stdout.write(_safe_text("\n".join(lines)) + "\n")
    if not stat and diff.patch:
        sys.stdout.write("\n" + _safe_text(diff.patch))


def _safe_text(text: str) -> str:
    """Agent-written text without terminal control sequences (tabs and newlines kept)."""
    return "".join(ch if ch in "\t\n" or (ch.isprintable() and ch != "\x1b") else f"\\x{ord(ch):02x}"
                   for ch in text)


@review_app.command("approve")
def review_approve(card_id: Annotated[str, typer.Argument(help="Card id.")]) -> None:
    """REVIEW → DONE (runs `[workspace] after_approve` first; its failure keeps the card in REVIEW)."""
    from squad.actions.review import approve_card
    from squad.orchestration.dispatch import make_producer

    settings = _settings()
    store = _store(settings)
    card = approve_card(make_producer(settings, store, _events(settings, store)), card_id)
    out.print(f"card {card.card_id} {card.status.value}")


@review_app.command("reject")
def review_reject(card_id: Annotated[str, typer.Argument(help="Card id.")],
                  feedback: Annotated[str, typer.Option("--feedback", help="What to change (shown to the agent).")]
                  ) -> None:
    """REVIEW → QUEUED: a new attempt in the same worktree, with your feedback in its prompt."""
    from squad.actions.review import reject_card
    from squad.orchestration.dispatch import make_producer

    settings = _settings()
    store = _store(settings)
    task_id = reject_card(make_producer(settings, store, _events(settings, store)), card_id, feedback)
    out.print(f"card {card_id} rejected: queued again as task {task_id}")


@workspace_app.command("list")
def workspace_list(as_json: JsonOpt = False) -> None:
    """Card worktrees under SQUAD_WORKDIR: card, branch, path, size on disk, age, dirty."""
    from squad.attempt.workspaces import list_workspaces

    settings = _settings()
    store = _store(settings)
    infos = list_workspaces(settings)
    cards = store.get_cards([i.card_id for i in infos])
    rows = [{**i.as_dict(), "status": cards[i.card_id].status.value if i.card_id in cards else None}
            for i in infos]
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    table = Table("card", "status", "branch", "path", "size", "age", "dirty")
    for row in rows:
        table.add_row(row["card_id"], row["status"] or "", row["branch"] or "", row["path"],
                      _human_bytes(row["size_bytes"]), _human_age(row["age_s"]), "yes" if row["dirty"] else "no")
    out.print(table)


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

    settings = _settings()
    store = _store(settings)
    ids = [i.card_id for i in list_workspaces(settings, with_size=False)]
    cards = store.get_cards(ids)

    def status_now(card_id: str) -> str | None:
        found = store.get_cards([card_id]).get(card_id)
        return found.status.value if found else None

    removed = gc(settings, cards, store.save_patch, older_than_days=older_than, status_now=status_now)
    out.print(f"removed {len(removed)} worktree(s)" + (f": {', '.join(removed)}" if removed else ""))


@app.command()
def version() -> None:
    """Print the version."""
    sys.stdout.write(VERSION_LINES["version"])  # `squad version` alone is answered by squad.entry


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so each command's cleanup runs.

    A shell without job control starts background jobs with SIGINT ignored: a command that stopped
    only on Ctrl-C could then never be stopped cleanly. Commands that install their own handlers
    (supervised services, the orchestrator, uvicorn) replace this one.
    """


EXIT_TERMINATED = 128 + signal.SIGTERM
_terminated: list[bool] = []
_HELP_ONLY = {"--help", "-h", "--version"}


def _raise_terminated(_signum: int, _frame: object) -> None:
    _terminated.append(True)
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Entry point: every error is one line on stderr (exit 2 for usage and input errors);
    SIGTERM stops a command like Ctrl-C does, with exit code 143."""
    args = sys.argv[1:] if argv is None else argv
    if args and not _HELP_ONLY & set(args):  # help and version log nothing: spare them structlog's import
        _configure_logging()
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        _main(argv)
    except SystemExit:
        if _terminated:  # Typer turns the interrupt into exit 130, a command may return normally
            sys.exit(EXIT_TERMINATED)
        raise


def _errors(click_name: str, *ours: type[BaseException]) -> tuple[Any, ...]:
    """`ours`, and click's exception class `click_name` once click is loaded: a Typer older than 0.26
    parses with click itself; later ones vendor it, and importing click only for its exception
    classes cost every command."""
    exceptions = sys.modules.get("click.exceptions")
    return (*ours, getattr(exceptions, click_name)) if exceptions else ours


def _app_for(args: Sequence[str]) -> typer.Typer:
    """The app holding only the command `args` name: Typer builds every command it holds (inspecting
    each function and evaluating its annotations) before it parses. The whole app otherwise: the root
    help, `--version`, an unknown command (its error and suggestions)."""
    name = args[0] if args else ""
    commands = [c for c in app.registered_commands
                if (c.name or (c.callback.__name__.lower().replace("_", "-") if c.callback else "")) == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if not commands and not groups:
        return app
    one = copy.copy(app)
    one.registered_commands, one.registered_groups = commands, groups
    return one


def _main(argv: list[str] | None) -> None:
    try:
        # standalone_mode=False: click returns (does not raise) the code of a `typer.Exit(code)`
        code = _app_for(sys.argv[1:] if argv is None else argv)(args=argv, standalone_mode=False, prog_name="squad")
    except _errors("Exit") as exc:
        sys.exit(exc.exit_code)
    except _errors("Abort", typer.Abort):
        sys.stderr.write("squad: aborted\n")
        sys.exit(130)
    except _errors("ClickException", typer.TyperException) as exc:
        # Typer >= 0.26 parses with its own vendored click: its usage errors are TyperExceptions.
        if type(exc).__name__ == "NoArgsIsHelpError":  # `squad card` alone: the help, as click prints it
            sys.stderr.write(exc.format_message().rstrip() + "\n")
        else:
            sys.stderr.write(f"squad: error: {' '.join(exc.format_message().split())}\n")
        sys.exit(2)
    except SquadError as exc:
        # Problems quote user input (ids, paths): shown escaped, never as terminal control sequences.
        msg = "; ".join(exc.problems) if hasattr(exc, "problems") else str(exc)
        if hasattr(exc, "problems") and len(exc.problems) > 1:
            for problem in exc.problems:
                sys.stderr.write(f"squad: error: {escape_controls(problem)}\n")
        else:
            sys.stderr.write(f"squad: error: {escape_controls(msg)}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # last resort: one line, never a traceback
        sys.stderr.write(f"squad: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                         " (set SQUAD_DEBUG=1 for details)\n")
        if os.environ.get("SQUAD_DEBUG"):
            raise
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _configure_logging() -> None:
    import logging

    from squad.core.logconfig import configure_logging

    configure_logging(logging.DEBUG if os.environ.get("SQUAD_DEBUG") else logging.WARNING, lazy=True)


def _service_logging(level: str = "INFO") -> None:
    """Long-running services log what they do (JSON lines when not on a terminal)."""
    from squad.core.logconfig import configure_logging

    configure_logging("DEBUG" if os.environ.get("SQUAD_DEBUG") else level)
