"""The database underneath the store: engine, SQLite pragmas, migrations, transactions.

Kept apart from `store.py` so the card queries read as queries: nothing here knows what a card is.
SQLite is the default (WAL and `BEGIN IMMEDIATE` writers, because a worker, the API and the
orchestrator share one file); PostgreSQL serves several machines.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from squad.store.tables import SCHEMA_HEAD

SQLITE_BUSY_TIMEOUT_S = 30
MIGRATE_ATTEMPTS = 5
#: Any constant works: it only has to be the same in every process that migrates.
PG_MIGRATION_LOCK_ID = 727274


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and writers that lock up front."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # The busy timeout (seconds) may be given in the URL: sqlite:///file.db?timeout=5.
    busy_s = float(parsed.query.get("timeout", SQLITE_BUSY_TIMEOUT_S))  # type: ignore[arg-type]
    url = parsed.difference_update_query(["timeout"]).render_as_string(hide_password=False)
    engine = create_engine(url, connect_args={"timeout": busy_s, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # WAL + busy timeout: several processes (worker, API, orchestrator) share the file.
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_s * 1000)}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "connect")
    def _no_autobegin(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling must be off for BEGIN IMMEDIATE to work.
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Writers take the write lock up front, so a read-then-write never deadlocks.
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One short write transaction (SQLite: `BEGIN IMMEDIATE`)."""
    with engine.connect() as conn:
        conn.execution_options(sqlite_immediate=True)
        with conn.begin():
            yield conn


def schema_current(engine: Engine) -> bool:
    """Fast path (no Alembic import): a worker process opens the store every few dozen cards."""
    try:
        with engine.connect() as conn:
            rev = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        return rev == SCHEMA_HEAD
    except SQLAlchemyError:
        return False


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (safe to call from many processes)."""
    if schema_current(engine):
        return
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    for attempt in range(MIGRATE_ATTEMPTS):
        try:
            with transaction(engine) as conn:
                if engine.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK_ID})")
                current = MigrationContext.configure(conn).get_current_revision()
                if current == head:
                    return
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
            return
        except (OperationalError, SQLAlchemyError):
            if attempt == MIGRATE_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def ping(engine: Engine) -> bool:
    """True when the database answers and (SQLite) its write lock can be taken: a file locked by
    another process still answers reads, but no attempt could record its outcome."""
    try:
        if engine.dialect.name == "sqlite":
            with transaction(engine) as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True
    except SQLAlchemyError:
        return False
