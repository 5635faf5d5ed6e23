"""`squad deploy`, `doctor`, `init`, `agents check`: setting a machine up and checking it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from squad.cli.common import cli_settings, out, print_json
from squad.cli.options import JsonOpt
from squad.core.errors import SquadError

agents_app = typer.Typer(help="Configured agents.", no_args_is_help=True)


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
    settings = cli_settings()
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


def doctor(as_json: JsonOpt = False) -> None:
    """Check this machine's setup (database, Redis persistence and memory policy, limits, agents, clock)."""
    from squad.ops.doctor import report, run_checks

    checks = run_checks(cli_settings())
    if as_json:
        print_json(report(checks))
    else:
        for check in checks:
            out.print(f"{'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.detail}", markup=False)
            if not check.ok:
                out.print(f"      fix: {check.fix}", markup=False)
    bad = sum(not c.ok for c in checks)
    if not as_json:
        out.print("everything looks right" if not bad else f"{bad} problem(s) to fix", markup=False)
    raise typer.Exit(1 if bad else 0)


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

    settings = cli_settings()
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
        print_json(rows)
        return
    from squad.core.safetext import table

    out.print(table(("agent", "installed", "runnable", "command", "detail"),
                    [(row["agent"] + (" (default)" if row["default"] else ""), "yes" if row["installed"] else "no",
                      "yes" if row["runnable"] else "no", " ".join(row["command"]), str(row["detail"])[:60])
                     for row in rows]))
