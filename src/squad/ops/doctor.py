"""`squad doctor`: is this machine's setup right? Each check says what is wrong and how to fix it.

It only reads: it never migrates the database nor changes Redis, so it is safe on a live install.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from squad.agents.presets import all_agents
from squad.core.constants import HEALTH_PROBE_TIMEOUT_S
from squad.core.masking import mask_url
from squad.core.settings import SandboxConfig, Settings

# Leases (`SQUAD_LEASE_S`) and retry times are compared across machines through the database clock.
CLOCK_SKEW_MAX_S = 2.0
REMOTE_TIMEOUT_S = 20.0  # `git ls-remote` of `[workspace] remote`


@dataclass(frozen=True)
class Check:
    """One finding: `ok` False means something must be fixed (`fix` says how)."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in the order an operator fixes things (database, Redis, limits, agents, workspace,
    clock)."""
    checks: list[Check] = []
    engine = _engine(settings)
    checks += _database(settings, engine)
    reachable = checks[0].ok  # else leave it alone: connecting would create a missing SQLite file
    checks += _redis(settings)
    checks.append(_visibility(settings, engine if reachable else None))
    checks += _agents(settings)
    checks += _workspace(settings)
    checks.append(_sandbox(settings))
    checks.append(_clock(engine) if reachable else Check("clock", False, "database not reachable",
                                                          "fix the database check first"))
    engine.dispose()
    return checks


def report(checks: list[Check]) -> list[dict[str, Any]]:
    """JSON-able form."""
    return [asdict(c) for c in checks]


# ---- database --------------------------------------------------------------------------------
def _engine(settings: Settings) -> Any:
    import sqlalchemy as sa

    args: dict[str, Any] = {}
    if settings.database_url.startswith("postgresql"):
        args["connect_timeout"] = 5
    return sa.create_engine(settings.database_url, connect_args=args)


def _database(settings: Settings, engine: Any) -> list[Check]:
    from sqlalchemy.exc import SQLAlchemyError

    from squad.store.tables import SCHEMA_HEAD

    url = mask_url(settings.database_url)
    if settings.database_url.startswith("sqlite"):
        path = engine.url.database
        if path and path != ":memory:" and not Path(path).exists():
            return [Check("database", False, f"{url}: no such database file",
                          "run `squad status` once to create and migrate it, or set SQUAD_DATABASE_URL")]
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            try:
                rev = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            except SQLAlchemyError:
                rev = None
    except SQLAlchemyError as exc:
        return [Check("database", False, f"{url}: {_first_line(exc)}",
                      "check SQUAD_DATABASE_URL, that the server runs and that this role may connect")]
    checks = [Check("database", True, f"{url} reachable")]
    if rev == SCHEMA_HEAD:
        checks.append(Check("schema", True, f"migrated (revision {rev})"))
    else:
        checks.append(Check("schema", False, f"revision {rev or 'none'}, this version needs {SCHEMA_HEAD}",
                            "run `squad status` once (any squad command migrates, one process at a time)"))
    return checks


# ---- Redis -----------------------------------------------------------------------------------
def _redis(settings: Settings) -> list[Check]:
    import redis

    from squad.live.connections import redis_client

    url = mask_url(settings.broker)
    client = redis_client(settings.broker, socket_timeout=HEALTH_PROBE_TIMEOUT_S * 3)
    try:
        persistence = client.info("persistence")
        memory = client.info("memory")
        try:
            save = str(client.config_get("save").get("save", ""))
        except redis.RedisError:  # CONFIG disabled (managed Redis): judge from INFO alone
            save = "unknown"
    except redis.RedisError as exc:
        return [Check("redis", False, f"{url}: {_first_line(exc)}",
                      "check SQUAD_REDIS_URL (password, rediss:// for TLS) and that redis-server runs")]
    finally:
        client.close()
    checks = [Check("redis", True, f"{url} reachable")]
    aof = str(persistence.get("aof_enabled", 0)) == "1"
    rdb = save not in ("", "unknown")
    if aof or rdb:
        checks.append(Check("redis persistence", True, "AOF on" if aof else f"RDB snapshots ({save})"))
    else:
        checks.append(Check("redis persistence", False,
                            "neither AOF nor RDB is on: a restart loses every queued message",
                            "set `appendonly yes` in redis.conf (or CONFIG SET appendonly yes + CONFIG REWRITE)"))
    limit = int(memory.get("maxmemory", 0) or 0)
    if limit > 0:
        checks.append(Check("redis maxmemory", True, f"{limit / 2**20:.0f} MiB"))
    else:
        checks.append(Check("redis maxmemory", False,
                            "0 (no limit): a flood of logs or events grows Redis until the machine runs out "
                            "of memory and the kernel kills it, queued messages with it",
                            "set `maxmemory` in redis.conf (the embedded Redis of `squad up` uses 512mb)"))
    policy = str(memory.get("maxmemory_policy", "unknown"))
    if policy == "noeviction":
        checks.append(Check("redis maxmemory-policy", True, "noeviction"))
    else:
        checks.append(Check("redis maxmemory-policy", False,
                            f"{policy}: Redis may evict queued messages and live logs when full",
                            "set `maxmemory-policy noeviction` in redis.conf"))
    return checks


# ---- limits, agents, clock -------------------------------------------------------------------
def _visibility(settings: Settings, engine: Any) -> Check:
    from sqlalchemy.exc import SQLAlchemyError

    hard = settings.time_limit
    longest = None
    if engine is not None:
        try:
            with engine.connect() as conn:
                longest = conn.exec_driver_sql("SELECT max(time_limit) FROM cards").scalar()
        except SQLAlchemyError:
            pass
    if longest is not None and float(longest) > hard:
        hard = float(longest)
    vis = settings.visibility_timeout_s
    if vis > hard:
        return Check("visibility timeout", True, f"{vis:g} s, above the longest hard limit ({hard:g} s)")
    return Check("visibility timeout", False,
                 f"{vis:g} s is not above the longest hard limit ({hard:g} s): a running card is delivered twice",
                 f"set SQUAD_VISIBILITY_TIMEOUT above {hard:g} (e.g. {hard + 600:g}) on every machine")


def _agents(settings: Settings) -> list[Check]:
    """The agents this install can pick: the default, the squads' and those configured in squad.toml."""
    names = {settings.default_agent, *settings.squads.values(), *settings.agents}
    checks = []
    agents = all_agents(settings)
    for name in sorted(names):
        agent = agents.get(name)
        if agent is None:
            checks.append(Check(f"agent {name}", False, "named but not configured",
                                f"add [agents.{name}] to squad.toml or fix default_agent/[squads]"))
            continue
        exe = agent.command[0]
        found = shutil.which(exe)
        if found:
            checks.append(Check(f"agent {name}", True, found))
        else:
            checks.append(Check(f"agent {name}", False, f"{exe!r} not found on PATH",
                                f"install {exe} for this user (PATH of the services), or change [agents.{name}]"))
    return checks


def _workspace(settings: Settings) -> list[Check]:
    """`[workspace]` (when a repo is set): the repo inside the allowed roots, a git repository, its
    `base` a commit, its `remote` (when the setting exists and is set) reachable. Cards that name a
    repo of their own are checked when they run."""
    from squad.attempt.workspaces import WorkspaceError, git, repo_root
    from squad.core.errors import ConfigError

    cfg = settings.workspace
    if cfg.repo is None:
        return []
    roots = ", ".join(str(r) for r in settings.allowed_root_paths())
    try:
        repo = settings.check_allowed(cfg.repo, "[workspace] repo")
    except ConfigError:
        return [Check("workspace repo", False, f"{cfg.repo.expanduser().resolve()} is outside the allowed roots "
                      f"({roots}): every card would fail",
                      "add its folder to allowed_roots in squad.toml (or SQUAD_ALLOWED_ROOTS, "
                      "os.pathsep-separated), or point [workspace] repo inside one")]
    try:
        root = repo_root(repo)
    except ConfigError as exc:
        return [Check("workspace repo", False, str(exc),
                      "point [workspace] repo at a git checkout (or run `git init` there)")]
    checks = [Check("workspace repo", True, f"{root}: a git repository inside the allowed roots")]
    if cfg.base:
        try:
            git(["rev-parse", "--verify", "--quiet", f"{cfg.base}^{{commit}}"], root)
            checks.append(Check("workspace base", True, f"{cfg.base} is a commit"))
        except WorkspaceError:
            checks.append(Check("workspace base", False, f"{cfg.base!r} names no commit in {root}",
                                "fix [workspace] base (a branch, tag or commit of the repository)"))
    remote = getattr(cfg, "remote", None)
    if isinstance(remote, str) and remote:
        try:
            git(["ls-remote", "--quiet", remote, "HEAD"], root, timeout=REMOTE_TIMEOUT_S)
            checks.append(Check("workspace remote", True, f"{remote} reachable"))
        except WorkspaceError as exc:
            checks.append(Check("workspace remote", False, f"{remote}: {exc}",
                                "check [workspace] remote, the network and this user's git credentials"))
    return checks


def _sandbox(settings: Settings) -> Check:
    """Whether attempts run in a bubblewrap sandbox here (docs/security.md)."""
    from squad.agents.sandbox import FALLBACK_FIX, effective_kind, probe

    config = settings.sandbox
    problem = probe(config.bwrap)
    if effective_kind(config) == "none":
        if config.kind == "none":
            return Check("sandbox", True, "none (chosen): agents see what the worker's user sees")
        # the default fell back: a finding, until bwrap works or `none` is chosen
        return Check("sandbox", False, f"none: {problem}: agents see what the worker's user sees", FALLBACK_FIX)
    if problem is not None:
        return Check("sandbox", False, f"bwrap chosen but {problem}: every card will fail",
                     "install bubblewrap or allow user namespaces, or set [sandbox] kind = \"none\"")
    how = "chosen" if config.kind == "bwrap" else "the default"
    return Check("sandbox", True, f"bwrap ({how}): {_sandbox_setup(settings, config)}")


def _sandbox_setup(settings: Settings, config: SandboxConfig) -> str:
    """What a bwrap sandbox gets here: the probe's binary, the network (allow_hosts counted, each
    agent that differs named), and how memory_mb, pids and cpu bind (cgroup or rlimit, set or not)."""
    from squad.agents.sandbox import bwrap_path, config_for, limits_here

    parts = [f"probe passed ({bwrap_path(config.bwrap)})", _network(config)]
    agents = all_agents(settings)
    for name in sorted({settings.default_agent, *settings.squads.values(), *settings.agents}):
        agent = agents.get(name)
        own = config_for(settings, agent) if agent is not None else config
        if (own.network, own.allow_hosts) != (config.network, config.allow_hosts):
            parts.append(f"agent {name}: {_network(own)}")
    bound = limits_here()
    limits = []
    for key, name, value in (("memory_mb", "memory", config.memory_mb), ("pids", "pids", config.pids),
                             ("cpu", "cpu", config.cpu)):
        limits.append(f"{key} {value:g} by {bound[name]}" if value is not None else f"{key} unset ({bound[name]} here)")
    parts.append("limits: " + ", ".join(limits))
    return "; ".join(parts)


def _network(config: SandboxConfig) -> str:
    if config.network != "allow":
        return f"network {config.network}"
    return f"network allow to {len(config.allow_hosts)} allow_hosts pattern(s)"


def _clock(engine: Any) -> Check:
    from sqlalchemy.exc import SQLAlchemyError

    if engine.dialect.name == "sqlite":
        return Check("clock", True, "SQLite: the database clock is this machine's")
    try:
        with engine.connect() as conn:
            before = time.time()
            db_now = float(conn.exec_driver_sql("SELECT extract(epoch FROM clock_timestamp())").scalar())
            after = time.time()
    except SQLAlchemyError as exc:
        return Check("clock", False, f"cannot read the database clock: {_first_line(exc)}",
                     "fix the database check first")
    skew = db_now - (before + after) / 2
    tolerance = CLOCK_SKEW_MAX_S + (after - before) / 2
    detail = f"{skew:+.3f} s against the database"
    if abs(skew) <= tolerance:
        return Check("clock", True, detail)
    return Check("clock", False, detail + " (leases and retry times compare clocks)",
                 "run NTP (chrony or systemd-timesyncd) on this machine and the database host")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
