"""`squad worker`, `beat`, `serve`, `orchestrate`, `up`: the long-running services."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from squad.cli.common import cli_settings, cli_store, err, mask_url, out, service_logging, warn_unconfined
from squad.core.errors import SquadError


def worker(
    concurrency: Annotated[int, typer.Option(min=1, help="Parallel cards on this worker.")] = 2,
    queues: Annotated[str | None, typer.Option(
        help="Queues to consume (default: cards,maintenance, or SQUAD_CARDS_QUEUE,SQUAD_MAINTENANCE_QUEUE).")] = None,
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
    service_logging()
    from squad.ops.deploy import WORKER_STOP_MARGIN_S
    from squad.ops.supervisor import Child, Supervisor

    settings = cli_settings()
    queues = queues or f"{settings.cards_queue},{settings.maintenance_queue}"
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
    warn_unconfined(settings)
    # Exit code 0 is a drained or remotely shut down worker: stop, and let the service manager decide.
    sup = Supervisor([Child("celery-worker", argv, final_on_success=True)],
                     stop_timeout_s=stop_timeout or settings.time_limit + WORKER_STOP_MARGIN_S,
                     adopt_orphans=True)
    sup.install_signal_handlers()
    raise typer.Exit(sup.run())


def beat(loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO") -> None:
    """Run Celery beat (reconciler every few seconds, result cleanup hourly), supervised."""
    service_logging()
    from squad.ops.supervisor import Child, Supervisor

    cli_settings()
    Path(".squad").mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "celery", "-A", "squad.celery_app", "beat", "--loglevel", loglevel,
            "--schedule", str(Path(".squad") / "celerybeat-schedule")]
    sup = Supervisor([Child("celery-beat", argv)])
    sup.install_signal_handlers()
    raise typer.Exit(sup.run())


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 3000,
    insecure: Annotated[bool, typer.Option(help="Allow a non-loopback host without SQUAD_API_TOKEN.")] = False,
) -> None:
    """Serve the monitoring API, WebSocket feed and dashboard."""
    service_logging()
    from squad.api.server import serve as serve_api

    serve_api(cli_settings(), host=host, port=port, insecure=insecure)


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
    # A one-shot run speaks in its own `orchestrator:` lines; a long-running one is a service and logs.
    service_logging("WARNING" if once or wait else "INFO")
    from squad.cli.wait_report import ConsumerWatch, WaitReporter, failed_cards
    from squad.orchestration.orchestrator import EXIT_TIMEOUT, make_orchestrator

    if mode not in ("auto", "celery", "local"):
        raise SquadError(f"--mode must be auto, celery or local, got {mode!r}")
    if timeout is not None and not wait:
        raise SquadError("--timeout bounds --wait: use both")
    settings = cli_settings()
    store = cli_store(settings)
    orch = make_orchestrator(settings, store, mode=mode, session=session, max_in_flight=max_in_flight, once=once)

    def say_failed() -> None:  # --wait exits 1 when a card FAILED: say which and why
        total = store.count_by_status()["FAILED"]
        for line in failed_cards(lambda n: store.list_cards(status="FAILED", limit=n), total):
            err.print(f"orchestrator: {line}", markup=False, highlight=False)

    if once and store.active_count() == 0:
        counts = {k: v for k, v in store.count_by_status().items() if v}
        what = ", ".join(f"{n} {s}" for s, n in counts.items()) if counts else "the store has no cards"
        err.print(f"orchestrator: nothing to do: no card is TODO, QUEUED, IN_PROGRESS or RETRYING ({what})")
        orch.dispatcher.close()
        if counts.get("FAILED") and wait:
            say_failed()
            raise typer.Exit(1)
        raise typer.Exit(0)
    if orch.fallback_reason:
        err.print(f"warning: {orch.fallback_reason}; running cards in local mode", style="yellow")
    # In celery mode the first report comes at once: it says whether any worker consumes `cards`.
    reporter = WaitReporter(settings, orch.dispatcher.mode, store.count_by_status,
                            lambda line: err.print(f"orchestrator: {line}", style="dim"),
                            report_first_pass=orch.dispatcher.mode == "celery")

    if orch.dispatcher.runs_agents:
        from squad.agents.egress import remove_leftovers
        from squad.agents.orphans import own_all_orphans

        warn_unconfined(settings)
        own_all_orphans()  # this process runs agents: what they leave behind is ended with them
        remove_leftovers()  # proxy folders of a local orchestrator killed while its attempt ran

    stopped_by: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopped_by.append(signum)
        orch.stop()
        orch.dispatcher.interrupt()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    err.print(f"orchestrator: mode {orch.dispatcher.mode}, session {session}", style="dim")
    presence = None
    if orch.events is not None:  # `squad status` and /health report the mode this orchestrator decided
        from squad.live.presence import OrchestratorPresence

        presence = OrchestratorPresence(settings.events, store.redis_keys, session=session,
                                        mode=orch.dispatcher.mode).start()
    # Long-running in celery mode: cards wait for the workers, and it says so while none consumes them.
    watch = None
    if orch.dispatcher.mode == "celery" and not once and not wait:
        watch = ConsumerWatch(settings, lambda line: err.print(f"orchestrator: {line}", style="yellow")).start()
    try:
        code = orch.run(once=once, wait=wait, interval=interval, timeout=timeout, on_wait=reporter.maybe_report)
        if code == EXIT_TIMEOUT:
            err.print(f"squad: error: --timeout {timeout:g} s reached, {reporter.describe()}")
        elif code == 1 and wait:
            say_failed()
    finally:
        if watch is not None:
            watch.stop()
        orch.dispatcher.close(abort=orch.stopping.is_set())  # local attempts end first: still this mode
        if presence is not None:
            presence.stop()
    # Stopped by a signal: 130 for Ctrl-C, 143 for SIGTERM, as every interactive command.
    raise typer.Exit(128 + stopped_by[0] if stopped_by else code)


def up(
    demo: Annotated[bool, typer.Option(help="Load and run the demo backlog.")] = False,
    port: Annotated[int, typer.Option(min=1, max=65535, help="API and dashboard port.")] = 3000,
    concurrency: Annotated[int, typer.Option(min=1, help="Worker concurrency.")] = 2,
) -> None:
    """Run everything on this machine: Redis (embedded if none answers), worker, beat, orchestrator, API."""
    from squad.ops.up import run_up

    raise typer.Exit(run_up(demo=demo, port=port, concurrency=concurrency))
