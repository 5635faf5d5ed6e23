"""The card store: the single source of truth for cards and runs.

Every status change is a compare-and-set UPDATE (`WHERE status IN (...)`), so two processes can
never both move a card; a worker owns a running card through a claim token with a lease.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from operator import attrgetter
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    BindParameter,
    Connection,
    Select,
    Text,
    Update,
    bindparam,
    case,
    cast,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from squad.core import depgraph
from squad.core.cards import Card, CardSpec, GitFacts, Run, Usage
from squad.core.depgraph import find_cycle
from squad.core.errors import BacklogError, DuplicateCardError, NotFoundError, SquadError, TransitionError
from squad.core.namespace import RedisKeys
from squad.core.retries import RetryPolicy, retries_used
from squad.core.statuses import ACTIVE, CLAIMED, RunStatus, Status, allowed_sources, check_transition
from squad.store import db
from squad.store.tables import cards as cards_t
from squad.store.tables import instance as instance_t
from squad.store.tables import land_trains as land_trains_t
from squad.store.tables import metadata
from squad.store.tables import runs as runs_t

#: (card_id, status, depends_on, priority, created_at, updated_at): what the orchestrator's graph keeps
GraphRow = tuple[str, str, list[str], int, float, float]
SPEC_FIELDS = tuple(CardSpec.model_fields)
_OPTIONAL_EXPORT = frozenset({"repo", "base", "review", "verify", "land", "land_when"})
_RUN_PUBLIC = [c for c in runs_t.c if c.name not in ("log", "patch")]
#: uncommitted work saved on a run before its worktree was removed (bigger patches stay on disk only)
PATCH_MAX_BYTES = 4 * 1024 * 1024


def now_s() -> float:
    """Wall-clock seconds (stored as floats: portable across SQLite and PostgreSQL)."""
    return time.time()


def to_dt(ts: float | None) -> datetime | None:
    """Epoch seconds to an aware UTC datetime."""
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


@dataclass(frozen=True)
class Claim:
    """A worker's ownership of one running attempt."""

    card: Card
    run_id: int
    token: str
    attempt: int
    previous_session_id: str | None
    retry_index: int = 0  # 0-based index of the retry that would follow this attempt


class QueuedCard(NamedTuple):
    """A card `enqueue_many` moved to QUEUED: what its message needs (its limits resolve through
    `Settings.limits_for`, like any card's)."""

    card_id: str
    task_id: str
    priority: int
    soft_time_limit: float | None
    time_limit: float | None
    squad: str | None
    max_retries: int | None = None


@dataclass(frozen=True)
class RunOutcome:
    """What one attempt produced, as recorded on its run row."""

    succeeded: bool
    error: str | None = None
    exit_code: int | None = None
    usage: Usage = field(default_factory=Usage)
    log: str = ""
    cancelled: bool = False
    retryable: bool = True
    #: in a workspace: what the attempt left on the card branch
    git: GitFacts | None = None
    #: the verify gate's exit code and output tail (None: verify did not run)
    verify_exit: int | None = None
    verify_output: str | None = None
    #: which sandbox ran the attempt (None: it never got to build one)
    sandbox: str | None = None


#: Ids per `IN (...)` list and rows per multi-row statement: PostgreSQL refuses a statement with
#: more than 65,535 parameters, and an insert row of a card carries ~20.
IN_CHUNK = 5_000
INSERT_CHUNK = 1_000
#: A new card's row: its fields, then its fresh execution state. Inserted by one statement built once
#: per paramstyle, whose rows go to the driver's executemany as built here (the JSON lists serialized
#: as the JSON type would): SQLAlchemy's per-row, per-column bind processing of `insert(cards)` was
#: most of an import's insert (docs/benchmarks.md "Import").
_NEW_CARD_COLUMNS = (*CardSpec.model_fields, "status", "attempts", "progress", "created_at", "updated_at", "cost_usd",
                     "parent")
_JSON_COLUMNS = frozenset(c.name for c in cards_t.columns if isinstance(c.type, JSON) and c.name in _NEW_CARD_COLUMNS)
_INSERT_CARDS = {
    style: f"INSERT INTO cards ({', '.join(_NEW_CARD_COLUMNS)}) VALUES ({', '.join(marks)})"
    for style, marks in (("pyformat", [f"%({name})s" for name in _NEW_CARD_COLUMNS]),
                         ("named", [f":{name}" for name in _NEW_CARD_COLUMNS]))}


def chunks(items: Sequence[str], size: int = IN_CHUNK) -> Iterable[list[str]]:
    """Consecutive slices of at most `size` items (for IN lists and bulk statements)."""
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _move(card_id: str | BindParameter[str], new: Status, *, expected: Iterable[Status] | None = None) -> Update:
    """The one way to write a status: an UPDATE that matches only from a source the transition
    table (`cards.TRANSITIONS`) allows, narrowed to `expected`; callers add their own conditions."""
    sources = set(allowed_sources(new))
    if expected is not None:
        sources &= set(expected)
    values = sorted(s.value for s in sources)
    status_ok = cards_t.c.status == values[0] if len(values) == 1 else cards_t.c.status.in_(values)  # [] matches none
    return update(cards_t).where(cards_t.c.card_id == card_id).where(status_ok).values(status=new.value)


# ---- the statements of an attempt, built once --------------------------------------------------
# Building and cache-keying a Core statement cost more than running it on SQLite (py-spy of a no-op
# card: ~60 % of claim and finish). These are built once and take their values as parameters; they
# are the same compare-and-set statements as before (the transition table still decides the sources).
_B_CARD: BindParameter[str] = bindparam("b_card_id")
_B_TOKEN: BindParameter[str] = bindparam("b_token")
_CLAIM = (_move(_B_CARD, Status.IN_PROGRESS, expected=[Status.QUEUED])
          .where(cards_t.c.celery_task_id == bindparam("b_task_id"))
          .values(claim_token=_B_TOKEN, claimed_by=bindparam("b_worker"), lease_expires_at=bindparam("b_lease"),
                  attempts=cards_t.c.attempts + 1, progress=15, current_step="marked IN_PROGRESS",
                  updated_at=bindparam("b_stamp"))
          .returning(*cards_t.c))
_LAST_SESSION = (select(runs_t.c.session_id).where(runs_t.c.card_id == _B_CARD)
                 .where(runs_t.c.session_id.is_not(None)).order_by(runs_t.c.id.desc()).limit(1))
_OPEN_RUN = insert(runs_t)
_CLAIMED_VALUES = sorted(s.value for s in CLAIMED)  # IN_PROGRESS, and NEEDS_INPUT while its agent asks a person
_RENEW = (update(cards_t).where(cards_t.c.card_id == _B_CARD).where(cards_t.c.claim_token == _B_TOKEN)
          .where(cards_t.c.status.in_(_CLAIMED_VALUES)).values(lease_expires_at=bindparam("b_lease")))
_CLAIM_STATE = select(cards_t.c.status, cards_t.c.claim_token).where(cards_t.c.card_id == _B_CARD)
_RUN_ENDED = select(runs_t.c.ended_at).where(runs_t.c.id == bindparam("b_run_id"))
_ACTIVE_COUNT = select(func.count()).select_from(cards_t).where(
    cards_t.c.status.in_(sorted(s.value for s in ACTIVE)))
_PROGRESS = update(cards_t).where(cards_t.c.card_id == _B_CARD)
_PROGRESS_OF_CLAIM = _PROGRESS.where(cards_t.c.claim_token == _B_TOKEN)
#: fencing: only a run still open can be closed (SET columns come with the parameters)
_CLOSE_RUN = update(runs_t).where(runs_t.c.id == bindparam("b_run_id")).where(runs_t.c.ended_at.is_(None))
#: what `finish` reads of the card (not the whole row: its JSON columns would be decoded for nothing)
_FINISH_STATE = select(cards_t.c.card_id, cards_t.c.status, cards_t.c.claim_token, cards_t.c.cost_usd,
                       cards_t.c.attempts, cards_t.c.retry_base).where(cards_t.c.card_id == _B_CARD)
_ADD_COST = (update(cards_t).where(cards_t.c.card_id == _B_CARD)
             .values(cost_usd=cards_t.c.cost_usd + bindparam("b_cost")))
#: the end of an attempt, per new status: only from IN_PROGRESS and only for the claim's own token
_FINISH_MOVE = {new: _move(_B_CARD, new, expected=[Status.IN_PROGRESS]).where(cards_t.c.claim_token == _B_TOKEN)
                for new in Status if Status.IN_PROGRESS in allowed_sources(new)}
#: a succeeded attempt's move (DONE, or REVIEW), adding its cost in the same statement
_FINISH_SUCCESS = {new: _FINISH_MOVE[new].values(cost_usd=func.coalesce(cards_t.c.cost_usd, 0.0) + bindparam("b_cost"))
                   for new in (Status.DONE, Status.REVIEW, Status.LANDING, Status.WAITING)}
#: the success step each succeeded attempt's status shows
_SUCCESS_STEP = {Status.DONE: "done", Status.REVIEW: "waiting for review", Status.LANDING: "waiting to land",
                 Status.WAITING: "waiting for sub-cards"}
#: a succeeded attempt's card waits (WAITING) while a sub-card it created is not DONE (parent index)
_OPEN_CHILDREN = (select(func.count()).select_from(cards_t).where(cards_t.c.parent == _B_CARD)
                  .where(cards_t.c.status != Status.DONE.value))


#: The `landed_commit` of a card's last run, as a column of a SELECT of cards (`Card.landed_commit`).
LANDED_COMMIT = (select(runs_t.c.landed_commit).where(runs_t.c.card_id == cards_t.c.card_id)
                 .order_by(runs_t.c.id.desc()).limit(1).correlate(cards_t).scalar_subquery().label("landed_commit"))


def card_page_query(*, status: str | None = None, squad: str | None = None, limit: int | None = None,
                    offset: int = 0) -> Select[Any]:
    """SELECT of a page of cards (with `LANDED_COMMIT`) in board order (most urgent, then oldest, then
    by id), filtered."""
    query = select(cards_t, LANDED_COMMIT).order_by(cards_t.c.priority.desc(), cards_t.c.created_at, cards_t.c.card_id)
    if status:
        query = query.where(cards_t.c.status == Status(status).value)
    if squad:
        query = query.where(cards_t.c.squad == squad)
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    return query


def _columns(value: Usage | GitFacts) -> dict[str, Any]:
    """A flat dataclass of column values as a dict (`asdict` deep-copies every value on the way)."""
    return {f.name: getattr(value, f.name) for f in fields(value)}


_spec_values = attrgetter(*SPEC_FIELDS)


def _json_strings(items: list[str]) -> str:
    """`json.dumps(items)` of a list of strings, byte for byte, without building an encoder per call
    (the JSON type's way, and most of an import's row building)."""
    return "[" + ", ".join(map(encode_basestring_ascii, items)) + "]"


def _new_row(spec: CardSpec, fresh: dict[str, Any]) -> dict[str, Any]:
    """The parameters of `_INSERT_CARDS` for one new card, as the driver takes them."""
    row = dict(zip(SPEC_FIELDS, _spec_values(spec), strict=True))  # as they are (model_dump copies every list)
    for name in _JSON_COLUMNS:  # lists of strings (CardSpec), or None: JSON null, as the JSON type writes it
        value = row[name]
        row[name] = "null" if value is None else _json_strings(value)
    row.update(fresh)
    return row


def _card_from_row(row: Any) -> Card:
    data = dict(row._mapping)
    data["created_at"] = to_dt(data.get("created_at"))
    data["updated_at"] = to_dt(data.get("updated_at"))
    return Card.model_validate(data)


def _run_from_row(row: Any) -> Run:
    data = dict(row._mapping)
    for key in ("started_at", "ended_at"):
        data[key] = to_dt(data.get(key))
    data["log_available"] = data.get("ended_at") is not None
    return Run.model_validate(data)


class CardStore:
    """Cards and runs in SQL (SQLite by default, PostgreSQL for several machines)."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.engine = db.make_engine(url)
        self.last_db_error_at: float | None = None  # monotonic time of the last outage-like error
        self._instance_id: str | None = None
        if migrate:
            self.migrate()

        @event.listens_for(self.engine, "handle_error")
        def _note_error(ctx: Any) -> None:
            # Connection lost, server down, lock past the busy timeout (not a bug in a statement).
            if ctx.is_disconnect or isinstance(ctx.sqlalchemy_exception, OperationalError | InterfaceError):
                self.last_db_error_at = time.monotonic()

    # ---- setup (the database itself lives in `squad.store.db`) ------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (safe to call from many processes)."""
        db.migrate(self.engine)

    def tx(self) -> AbstractContextManager[Connection]:
        """One short write transaction."""
        return db.transaction(self.engine)

    def ping(self) -> bool:
        """True when the database answers (SQLite: and its write lock can be taken)."""
        return db.ping(self.engine)

    def failed_within(self, seconds: float) -> bool:
        """True when a statement of this process failed less than `seconds` ago (database outage)."""
        return self.last_db_error_at is not None and time.monotonic() - self.last_db_error_at < seconds

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()

    @property
    def instance_id(self) -> str:
        """This store's id (made by its first migration; the same for every process using it)."""
        if self._instance_id is None:
            with self.engine.connect() as conn:
                self._instance_id = str(conn.execute(select(instance_t.c.instance_id)).scalar_one())
        return self._instance_id

    @property
    def redis_keys(self) -> RedisKeys:
        """The names of this store's Redis keys and streams (`squad:<instance id>:...`)."""
        return RedisKeys.for_instance(self.instance_id)

    # ---- cards: create / read ---------------------------------------------------------------
    def add_cards(self, specs: Sequence[CardSpec], *, update_existing: bool = False, problems: Sequence[str] = (),
                  depends: Sequence[tuple[str, str]] = (), parent: str | None = None) -> tuple[list[str], list[str]]:
        """Insert cards all-or-nothing; with `update_existing`, rewrite cards still TODO.

        Returns the ids (added, updated). Every problem is gathered in the one transaction that
        inserts: `problems` already found without the store (a backlog file's own), then ids the store
        holds (a `DuplicateCardError` when that is the only problem, without `update_existing`), cards
        no longer TODO to rewrite, dependencies the store does not hold (of `specs`, and of the
        (card_id, dependency) pairs in `depends`, e.g. a backlog's entries given twice), and a dependency
        cycle through the new cards, looked for only among the cards they reach. New cards get
        `parent` (sub-cards an attempt created, docs/agents.md). Callers go through
        `actions.backlog.add_cards` (validation and status events).
        """
        with self.tx() as conn:
            ids = [s.card_id for s in specs]
            id_set = set(ids)
            found = list(problems)
            existing: dict[str, str] = {}
            mark = "%s" if conn.dialect.paramstyle in ("pyformat", "format") else "?"
            for chunk in chunks(ids):  # prebuilt: SQLAlchemy's expanding IN names each of the ids anew
                rows = conn.exec_driver_sql(
                    f"SELECT card_id, status FROM cards WHERE card_id IN ({', '.join([mark] * len(chunk))})",
                    tuple(chunk))
                existing.update((card_id, status) for card_id, status in rows)
            duplicates: list[str] = []
            for spec in specs:
                status = existing.get(spec.card_id)
                if status is None:
                    continue
                if not update_existing:
                    duplicates.append(spec.card_id)
                    found.append(DuplicateCardError.problem(spec.card_id))
                elif status != Status.TODO:
                    found.append(f"card {spec.card_id}: is {status}, only TODO cards can be updated")
            outside = list(dict.fromkeys([(s.card_id, d) for s in specs for d in s.depends_on if d not in id_set]
                                         + list(depends)))
            reached = self._reachable(conn, {dep for card_id, dep in outside if dep != card_id}, skip=id_set)
            for card_id, dep in outside:
                if dep != card_id and dep not in reached:
                    found.append(f"card {card_id}: depends_on unknown card {dep!r}")
            # (a card naming itself is the caller's problem "depends on itself", not a cycle)
            # (a card without dependencies is on no cycle)
            own = {s.card_id: (s.depends_on if s.card_id not in s.depends_on
                               else [d for d in s.depends_on if d != s.card_id]) for s in specs if s.depends_on}
            cycle = find_cycle({**reached, **own})
            if cycle:
                found.append(f"card {cycle[0]}: dependency cycle {' -> '.join(cycle)}")
            if found:
                if not problems and len(found) == len(duplicates):
                    raise DuplicateCardError(duplicates)
                raise BacklogError(found)
            stamp = now_s()
            fresh = {"status": Status.TODO.value, "attempts": 0, "progress": 0, "created_at": stamp,
                     "updated_at": stamp, "cost_usd": 0.0, "parent": parent}
            added = [spec for spec in specs if spec.card_id not in existing]
            new_rows = [_new_row(spec, fresh) for spec in added]
            # psycopg takes %(name)s, sqlite3 :name (whatever paramstyle SQLAlchemy's dialect uses)
            sql = _INSERT_CARDS["pyformat" if conn.dialect.paramstyle == "pyformat" else "named"]
            for start in range(0, len(new_rows), INSERT_CHUNK):
                conn.exec_driver_sql(sql, new_rows[start:start + INSERT_CHUNK])
            rewrites = [spec for spec in specs if spec.card_id in existing]
            for spec in rewrites:
                conn.execute(update(cards_t).where(cards_t.c.card_id == spec.card_id)
                             .where(cards_t.c.status == Status.TODO.value)
                             .values(**spec.model_dump(), updated_at=stamp))
            return [spec.card_id for spec in added], [spec.card_id for spec in rewrites]

    def _reachable(self, conn: Connection, start: set[str], *, skip: set[str]) -> dict[str, list[str]]:
        """card_id -> depends_on of the stored cards among `start` and of every stored card they
        depend on, directly or not, leaving out `skip` (the cards being written, whose new edges the
        caller has): read level by level, chunked. The only part of the graph a cycle through the new
        cards can run through."""
        graph: dict[str, list[str]] = {}
        frontier = sorted(start - skip)
        while frontier:
            found: set[str] = set()
            for chunk in chunks(frontier):
                for card_id, deps in conn.execute(select(cards_t.c.card_id, cards_t.c.depends_on)
                                                  .where(cards_t.c.card_id.in_(chunk))):
                    graph[card_id] = list(deps or [])
                    found.update(deps or [])
            frontier = sorted(found - graph.keys() - skip)
        return graph

    def get_card(self, card_id: str) -> Card:
        """One card, or NotFoundError."""
        with self.engine.connect() as conn:
            row = conn.execute(select(cards_t, LANDED_COMMIT).where(cards_t.c.card_id == card_id)).first()
        if row is None:
            raise NotFoundError(f"unknown card {card_id!r}")
        return _card_from_row(row)

    def get_cards(self, card_ids: Iterable[str]) -> dict[str, Card]:
        """Several cards in one query."""
        ids = list(card_ids)
        if not ids:
            return {}
        rows: list[Any] = []
        with self.engine.connect() as conn:
            for chunk in chunks(ids):
                rows += conn.execute(select(cards_t, LANDED_COMMIT).where(cards_t.c.card_id.in_(chunk))).all()
        return {r.card_id: _card_from_row(r) for r in rows}

    def list_cards(self, *, status: str | None = None, squad: str | None = None,
                   limit: int | None = None, offset: int = 0) -> list[Card]:
        """Cards, most urgent first, then oldest; one query."""
        query = card_page_query(status=status, squad=squad, limit=limit, offset=offset)
        with self.engine.connect() as conn:
            return [_card_from_row(r) for r in conn.execute(query)]

    def count_cards(self, *, status: str | None = None, squad: str | None = None) -> int:
        """How many cards `list_cards` would return without a page (the API's `X-Total-Count`)."""
        query = select(func.count()).select_from(cards_t)
        if status:
            query = query.where(cards_t.c.status == Status(status).value)
        if squad:
            query = query.where(cards_t.c.squad == squad)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def count_by_status(self) -> dict[str, int]:
        """Card counts for every status (zeros included)."""
        counts = {s.value: 0 for s in Status}
        with self.engine.connect() as conn:
            for status, n in conn.execute(select(cards_t.c.status, func.count()).group_by(cards_t.c.status)):
                counts[status] = n
        return counts

    def execution_state(self, card_id: str) -> dict[str, Any]:
        """Internal columns (claim, lease, next attempt) of one card."""
        with self.engine.connect() as conn:
            row = conn.execute(select(cards_t).where(cards_t.c.card_id == card_id)).first()
        if row is None:
            raise NotFoundError(f"unknown card {card_id!r}")
        return dict(row._mapping)

    # ---- status changes ---------------------------------------------------------------------
    def transition(self, card_id: str, new: Status, *, expected: Iterable[Status] | None = None,
                   **values: Any) -> bool:
        """Compare-and-set: move to `new` only from an allowed (and expected) status."""
        with self.tx() as conn:
            res = conn.execute(_move(card_id, new, expected=expected).values(updated_at=now_s(), **values))
            return res.rowcount == 1

    def enqueue(self, card_id: str, task_id: str, *, expected: Iterable[Status],
                session: str | None = None, fresh_retries: bool = False) -> bool:
        """Mark a card QUEUED under a new task id (the only id whose message may claim it).

        `fresh_retries` (a retry asked for by the user) restarts the automatic-retry budget.
        """
        extra: dict[str, Any] = {"retry_base": cards_t.c.attempts} if fresh_retries else {}
        return self.transition(card_id, Status.QUEUED, expected=expected, celery_task_id=task_id,
                               queued_at=now_s(), claim_token=None, claimed_by=None,
                               lease_expires_at=None, next_attempt_at=None, progress=0,
                               current_step="queued", session=session, **extra)

    def replace_task(self, card_id: str, old_task_id: str, new_task_id: str) -> bool:
        """Re-enqueue a QUEUED card whose message was lost: only the new task id may claim it."""
        with self.tx() as conn:
            res = conn.execute(update(cards_t).where(cards_t.c.card_id == card_id)
                               .where(cards_t.c.status == Status.QUEUED.value)
                               .where(cards_t.c.celery_task_id == old_task_id)
                               .values(celery_task_id=new_task_id, queued_at=now_s(), updated_at=now_s()))
            return res.rowcount == 1

    def delete_cards(self, card_ids: Sequence[str]) -> int:
        """Remove cards and their runs (used to reset the demo backlog)."""
        deleted = 0
        with self.tx() as conn:
            for chunk in chunks(card_ids):
                conn.execute(runs_t.delete().where(runs_t.c.card_id.in_(chunk)))
                deleted += int(conn.execute(cards_t.delete().where(cards_t.c.card_id.in_(chunk))).rowcount)
        return deleted

    def unqueue(self, card_id: str, task_id: str) -> bool:
        """Undo `enqueue` when the message could not be sent."""
        with self.tx() as conn:
            res = conn.execute(_move(card_id, Status.TODO, expected=[Status.QUEUED])
                               .where(cards_t.c.celery_task_id == task_id)
                               .values(updated_at=now_s(), current_step=None))
            return res.rowcount == 1

    def claim(self, card_id: str, task_id: str, worker: str, lease_s: float) -> Claim | None:
        """Take a QUEUED card for this task id and open a run; None if another owns it.

        A duplicate or redelivered message (same or stale task id) can never claim twice.
        """
        token = uuid.uuid4().hex
        with self.tx() as conn:
            stamp = self._clock(conn)  # leases are judged by the database's clock
            row = conn.execute(_CLAIM, {"b_card_id": card_id, "b_task_id": task_id, "b_token": token,
                                        "b_worker": worker, "b_lease": stamp + lease_s, "b_stamp": stamp}).first()
            if row is None:
                return None
            prev = None
            if row.attempts > 1:
                prev = conn.execute(_LAST_SESSION, {"b_card_id": card_id}).scalar()
            inserted = conn.execute(_OPEN_RUN, {
                "card_id": card_id, "attempt": row.attempts, "task_id": task_id, "worker": worker,
                "status": RunStatus.RUNNING.value, "queued_at": row.queued_at, "started_at": stamp,
            }).inserted_primary_key
            assert inserted is not None
            run_id = inserted[0]
        return Claim(card=_card_from_row(row), run_id=int(run_id), token=token,
                     attempt=int(row.attempts), previous_session_id=prev,
                     retry_index=retries_used(int(row.attempts), int(row.retry_base)))

    def renew_lease(self, card_id: str, token: str, lease_s: float) -> bool:
        """Extend the lease; False when the claim was taken away (cancelled, forced retry, swept)."""
        with self.tx() as conn:
            res = conn.execute(_RENEW, {"b_card_id": card_id, "b_token": token,
                                        "b_lease": self._clock(conn) + lease_s})
            return res.rowcount == 1

    def _clock(self, conn: Connection) -> float:
        """Now, by the database's clock (PostgreSQL), so a worker or sweeper whose own clock is
        off can neither shorten its lease nor judge another's; SQLite lives on one machine."""
        if self.engine.dialect.name == "postgresql":
            return float(conn.exec_driver_sql("SELECT extract(epoch from clock_timestamp())").scalar_one())
        return now_s()

    def db_now(self) -> float:
        """The database's clock (see `_clock`)."""
        with self.engine.connect() as conn:
            return self._clock(conn)

    def run_open(self, run_id: int) -> bool:
        """True while a run has not been closed (by its attempt, or by the sweeper as `lost`)."""
        with self.engine.connect() as conn:
            row = conn.execute(_RUN_ENDED, {"b_run_id": run_id}).first()
        return row is not None and row.ended_at is None

    def claim_alive(self, card_id: str, token: str) -> bool:
        """True while this claim still owns the card."""
        with self.engine.connect() as conn:
            row = conn.execute(_CLAIM_STATE, {"b_card_id": card_id}).first()
        return row is not None and row.claim_token == token and row.status in CLAIMED

    def set_progress(self, card_id: str, token: str | None, progress: int, step: str) -> None:
        """Record progress of the attempt that owns the card."""
        params = {"b_card_id": card_id, "progress": progress, "current_step": step}
        with self.tx() as conn:
            if token is None:
                conn.execute(_PROGRESS, params)
            else:
                conn.execute(_PROGRESS_OF_CLAIM, {**params, "b_token": token})

    def finish(self, claim: Claim, outcome: RunOutcome, policy: RetryPolicy, *,
               review: bool = False, land: bool = False) -> Status | None:
        """Close the run and move the card: DONE (REVIEW with `review`, else LANDING with `land`), or
        RETRYING (with next_attempt_at) / FAILED as `policy` decides.

        Returns the new status, or None when the claim had been taken away (the run is closed
        but the card is left to whoever took it).
        """
        stamp = now_s()
        with self.tx() as conn:
            run_status = (RunStatus.SUCCEEDED if outcome.succeeded
                          else RunStatus.CANCELLED if outcome.cancelled else RunStatus.FAILED).value
            # Fencing: only a run still open can be closed. A run the sweeper already closed as `lost`
            # (its worker was frozen past its lease) keeps that verdict: the late outcome is dropped.
            closed = conn.execute(_CLOSE_RUN, {
                "b_run_id": claim.run_id, "status": run_status, "ended_at": stamp, "exit_code": outcome.exit_code,
                "error": outcome.error, "log": outcome.log, "sandbox": outcome.sandbox,
                **_columns(outcome.usage),
                **(_columns(outcome.git) if outcome.git else {}),
                **({"verify_exit": outcome.verify_exit, "verify_output": outcome.verify_output}
                   if outcome.verify_output is not None else {})})
            if closed.rowcount != 1:
                return None
            if outcome.succeeded:
                # One statement: the move itself checks the claim (token, IN_PROGRESS) and adds the
                # cost; only a failure reads the card first (the retry decision needs its counters).
                new = Status.REVIEW if review else Status.LANDING if land else Status.DONE
                if conn.execute(_OPEN_CHILDREN, {"b_card_id": claim.card.card_id}).scalar_one():
                    new = Status.WAITING  # docs/agents.md "Sub-cards"
                moved = conn.execute(_FINISH_SUCCESS[new], {
                    "b_card_id": claim.card.card_id, "b_token": claim.token,
                    "b_cost": outcome.usage.cost_usd or 0.0, "claim_token": None, "claimed_by": None,
                    "lease_expires_at": None, "updated_at": stamp, "progress": 100,
                    "current_step": _SUCCESS_STEP[new], "last_error": None, "conflicts": None,
                    "landing_at": stamp if new == Status.LANDING else None})
                if moved.rowcount == 1:
                    return new
                if outcome.usage.cost_usd:  # the claim was taken away: the card keeps what was spent
                    conn.execute(_ADD_COST, {"b_card_id": claim.card.card_id, "b_cost": outcome.usage.cost_usd})
                return None
            row = conn.execute(_FINISH_STATE, {"b_card_id": claim.card.card_id}).one()
            if row.claim_token != claim.token or row.status != Status.IN_PROGRESS:
                if outcome.usage.cost_usd:
                    conn.execute(_ADD_COST, {"b_card_id": row.card_id, "b_cost": outcome.usage.cost_usd})
                return None
            cost = (row.cost_usd or 0.0) + (outcome.usage.cost_usd or 0.0)
            values: dict[str, Any] = {"claim_token": None, "claimed_by": None, "lease_expires_at": None,
                                      "updated_at": stamp, "cost_usd": cost}
            decision = policy.decide(attempts=row.attempts, retry_base=row.retry_base, cost_usd=cost,
                                     error=outcome.error, retryable=outcome.retryable)
            new = decision.status
            values["last_error"] = decision.error
            if decision.delay_s is not None:
                values.update(next_attempt_at=stamp + decision.delay_s,
                              current_step=f"retrying in {decision.delay_s:.0f}s")
            else:
                values["current_step"] = "failed"
            conn.execute(_FINISH_MOVE[new], {"b_card_id": row.card_id, "b_token": claim.token, **values})
            return new

    def cancel(self, card_id: str) -> Card:
        """Cancel a card in any non-final status; the running attempt sees its claim vanish."""
        card = self.get_card(card_id)
        if card.status in (Status.DONE, Status.CANCELLED):
            raise TransitionError(f"card {card_id}: cannot cancel a {card.status} card")
        check_transition(card_id, card.status, Status.CANCELLED)
        ok = self.transition(card_id, Status.CANCELLED, expected=[card.status], claim_token=None,
                             claimed_by=None, lease_expires_at=None, next_attempt_at=None, question=None,
                             choices=None, answer=None,
                             current_step="cancelled")
        if not ok:
            return self.cancel(card_id)  # status moved under us: look again
        return self.get_card(card_id)

    def lose_claim(self, card_id: str, token: str, error: str, policy: RetryPolicy, *,
                   now: float | None = None, log: str = "") -> Status | None:
        """Sweep a stale lease: fail the open run with `error` and retry the card like any failure
        (same `policy`, budget included).

        Only a lease still expired at `now` (default: the current time) is lost: a worker that
        renewed it between `stale_claims` and this call keeps its card. `log` (what the live log
        kept of the attempt) is archived into the lost run.
        """
        with self.tx() as conn:
            row = conn.execute(select(cards_t).where(cards_t.c.card_id == card_id)).first()
            stamp = self._clock(conn) if now is None else now
            if row is None or row.claim_token != token or row.status not in CLAIMED:
                return None
            if row.lease_expires_at is not None and row.lease_expires_at >= stamp:
                return None  # renewed since it was found stale: the worker is alive
            conn.execute(update(runs_t).where(runs_t.c.card_id == card_id)
                         .where(runs_t.c.ended_at.is_(None))
                         .values(status=RunStatus.LOST.value, ended_at=stamp, error=error, log=log))
            decision = policy.decide(attempts=row.attempts, retry_base=row.retry_base,
                                     cost_usd=row.cost_usd or 0.0, error=error)
            conn.execute(_move(card_id, decision.status, expected=CLAIMED)
                         .where(cards_t.c.claim_token == token)
                         .values(claim_token=None, claimed_by=None, question=None, choices=None, answer=None,
                                 lease_expires_at=None, last_error=decision.error, updated_at=stamp,
                                 next_attempt_at=None if decision.delay_s is None else stamp + decision.delay_s,
                                 current_step=error))
            return decision.status

    # ---- review ---------------------------------------------------------------------------------
    def approve(self, card_id: str) -> Card | None:
        """REVIEW → DONE; the card as it is now, or None when it is not in REVIEW (any more)."""
        with self.tx() as conn:
            row = conn.execute(_move(card_id, Status.DONE, expected=[Status.REVIEW])
                               .values(updated_at=now_s(), current_step="approved", last_error=None)
                               .returning(*cards_t.c)).first()
        return None if row is None else _card_from_row(row)

    def set_feedback(self, card_id: str, feedback: str) -> bool:
        """Record a rejection's feedback on a card still in REVIEW (the next attempt's prompt shows it)."""
        with self.tx() as conn:
            res = conn.execute(update(cards_t).where(cards_t.c.card_id == card_id)
                               .where(cards_t.c.status == Status.REVIEW.value)
                               .values(feedback=feedback, updated_at=now_s()))
            return res.rowcount == 1

    def note_review_error(self, card_id: str, error: str) -> bool:
        """Show an error on a card that stays in REVIEW (e.g. a failed `after_approve` hook)."""
        with self.tx() as conn:
            res = conn.execute(update(cards_t).where(cards_t.c.card_id == card_id)
                               .where(cards_t.c.status == Status.REVIEW.value)
                               .values(last_error=error, current_step="approval failed", updated_at=now_s()))
            return res.rowcount == 1

    # ---- landing (docs/workspaces.md "Landing the work") ----------------------------------------------
    def start_landing(self, card_id: str, expected: Iterable[Status]) -> Card | None:
        """Put a card into its repository's merge train (→ LANDING); None when it is not in `expected`."""
        stamp = now_s()
        with self.tx() as conn:
            row = conn.execute(_move(card_id, Status.LANDING, expected=expected)
                               .values(updated_at=stamp, landing_at=stamp, current_step="waiting to land",
                                       last_error=None)
                               .returning(*cards_t.c)).first()
        return None if row is None else _card_from_row(row)

    def landing_cards(self) -> list[Card]:
        """Every LANDING card, in the order it joined its train."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(cards_t).where(cards_t.c.status == Status.LANDING.value)
                                .order_by(cards_t.c.landing_at, cards_t.c.card_id))
            return [_card_from_row(r) for r in rows]

    def take_train(self, train: str, holder: str, card_id: str, lease_s: float) -> bool:
        """Hold a merge train (one repository and base) for `holder`, unless another holds it with a
        lease still running; True when held now."""
        with self.tx() as conn:
            stamp = self._clock(conn)
            row = conn.execute(select(land_trains_t).where(land_trains_t.c.train == train)).first()
            if row is None:
                conn.execute(insert(land_trains_t).values(train=train, holder=holder, card_id=card_id,
                                                          lease_expires_at=stamp + lease_s))
                return True
            res = conn.execute(update(land_trains_t).where(land_trains_t.c.train == train)
                               .where((land_trains_t.c.holder == holder)
                                      | (land_trains_t.c.lease_expires_at < stamp))
                               .values(holder=holder, card_id=card_id, lease_expires_at=stamp + lease_s))
            return res.rowcount == 1

    def renew_train(self, train: str, holder: str, lease_s: float) -> bool:
        """Extend a held train's lease; False when it is no longer ours."""
        with self.tx() as conn:
            res = conn.execute(update(land_trains_t).where(land_trains_t.c.train == train)
                               .where(land_trains_t.c.holder == holder)
                               .values(lease_expires_at=self._clock(conn) + lease_s))
            return res.rowcount == 1

    def release_train(self, train: str, holder: str) -> None:
        """Let go of a train (only ours)."""
        with self.tx() as conn:
            conn.execute(land_trains_t.delete().where(land_trains_t.c.train == train)
                         .where(land_trains_t.c.holder == holder))

    def train_holders(self) -> dict[str, tuple[str, str, float]]:
        """train -> (holder, card_id, lease_expires_at) of every held train."""
        with self.engine.connect() as conn:
            return {r.train: (r.holder, r.card_id, r.lease_expires_at) for r in conn.execute(select(land_trains_t))}

    def set_run_landing(self, run_id: int, **values: Any) -> None:
        """Write landing facts (`landed_commit`, `verify_exit`, `verify_output`) on a card's run."""
        with self.tx() as conn:
            conn.execute(update(runs_t).where(runs_t.c.id == run_id).values(**values))

    def append_run_log(self, run_id: int, text: str) -> None:
        """Add lines at the end of a run's archived log (a landing's lines, after its attempt's)."""
        if not text:
            return
        log_col = runs_t.c.log
        with self.tx() as conn:
            conn.execute(update(runs_t).where(runs_t.c.id == run_id).values(
                log=case((or_(log_col.is_(None), log_col == ""), literal(text)),
                         else_=log_col.concat("\n" + text))))

    def landed(self, card_id: str) -> bool:
        """LANDING → DONE (its base moved); False when the card is no longer LANDING."""
        with self.tx() as conn:
            res = conn.execute(_move(card_id, Status.DONE, expected=[Status.LANDING])
                               .values(updated_at=now_s(), current_step="landed", last_error=None,
                                       conflicts=None, progress=100))
            return res.rowcount == 1

    def note_landing(self, card_id: str, error: str, step: str = "cannot land") -> bool:
        """Show why a card stays in LANDING (e.g. base checked out in the user's own working tree);
        False when the card is not LANDING or already shows that reason (said once, not every pass)."""
        with self.tx() as conn:
            res = conn.execute(update(cards_t).where(cards_t.c.card_id == card_id)
                               .where(cards_t.c.status == Status.LANDING.value)
                               .where(or_(cards_t.c.last_error.is_(None), cards_t.c.last_error != error))
                               .values(last_error=error, current_step=step, updated_at=now_s()))
            return res.rowcount == 1

    def landing_back(self, card_id: str, error: str, conflicts: list[str], policy: RetryPolicy) -> Status | None:
        """A landing that conflicted or whose verify failed goes back to the card's agent: a new attempt
        counted like a retry (RETRYING, due at once), or FAILED with the reason once retries are spent.
        `conflicts` ([] after a verify failure) tells the next attempt to merge its base first."""
        with self.tx() as conn:
            row = conn.execute(_FINISH_STATE, {"b_card_id": card_id}).first()
            if row is None or row.status != Status.LANDING:
                return None
            decision = policy.decide(attempts=row.attempts, retry_base=row.retry_base,
                                     cost_usd=row.cost_usd or 0.0, error=error)
            stamp = now_s()
            values: dict[str, Any] = {"updated_at": stamp, "last_error": decision.error, "conflicts": conflicts}
            if decision.delay_s is not None:
                values.update(next_attempt_at=stamp, current_step=f"back to its agent: {error}")
            else:
                values["current_step"] = "failed"
            res = conn.execute(_move(card_id, decision.status, expected=[Status.LANDING]).values(**values))
            return decision.status if res.rowcount == 1 else None

    def save_patch(self, card_id: str, patch: str) -> None:
        """Keep uncommitted work on the card's latest run (appended; capped, the full file stays on disk)."""
        if len(patch.encode("utf-8", "replace")) > PATCH_MAX_BYTES:
            patch = (patch[:PATCH_MAX_BYTES]
                     + "\n[patch larger than the run archive holds: see SQUAD_WORKDIR/.archive]\n")
        patch = patch.replace("\x00", "")
        with self.tx() as conn:
            row = conn.execute(select(runs_t.c.id, runs_t.c.patch).where(runs_t.c.card_id == card_id)
                               .order_by(runs_t.c.id.desc()).limit(1)).first()
            if row is None:
                return
            conn.execute(update(runs_t).where(runs_t.c.id == row.id)
                         .values(patch=(row.patch + "\n" if row.patch else "") + patch))

    def run_patch(self, run_id: int) -> str:
        """Uncommitted work saved on a run before its worktree was removed ('' if none)."""
        return self._run_text(run_id, "patch")

    def latest_workspace_run(self, card_id: str) -> Run | None:
        """The card's latest run that recorded a branch (its diff is the card's change)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(*_RUN_PUBLIC).where(runs_t.c.card_id == card_id)
                               .where(runs_t.c.branch.is_not(None)).order_by(runs_t.c.id.desc()).limit(1)).first()
        return None if row is None else _run_from_row(row)

    # ---- scheduling queries -----------------------------------------------------------------
    def waiting_rows(self, card_ids: Sequence[str] | None = None) -> list[GraphRow]:
        """(card_id, status, depends_on, priority, created_at, updated_at) of every TODO/BLOCKED
        card, or of the given cards whatever their status (status index, chunked IN lists).

        Each distinct `depends_on` text is decoded once: cards with equal lists share one list
        object (read-only for the caller)."""
        cols = (cards_t.c.card_id, cards_t.c.status, cast(cards_t.c.depends_on, Text), cards_t.c.priority,
                cards_t.c.created_at, cards_t.c.updated_at)
        if card_ids is None:
            queries = [select(*cols).where(cards_t.c.status.in_(sorted(depgraph.WAITING)))]
        else:
            queries = [select(*cols).where(cards_t.c.card_id.in_(chunk)) for chunk in chunks(card_ids)]
        decoded: dict[str | None, list[str]] = {None: []}
        out: list[GraphRow] = []
        with self.engine.connect() as conn:
            for query in queries:
                for card_id, status, text, priority, created_at, updated_at in conn.execute(query):
                    deps = decoded.get(text)
                    if deps is None:
                        deps = decoded[text] = list(json.loads(text) or [])
                    out.append((card_id, status, deps, priority, created_at, updated_at))
        return out

    def statuses(self, card_ids: Sequence[str]) -> dict[str, str]:
        """card_id -> status of the given cards that exist (chunked IN lists)."""
        out: dict[str, str] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(card_ids):
                out.update((r[0], r[1]) for r in conn.execute(
                    select(cards_t.c.card_id, cards_t.c.status).where(cards_t.c.card_id.in_(chunk))))
        return out

    def graph_changes(self, since: float, *, count_waiting: bool = True
                      ) -> tuple[list[tuple[str, str, float]], int | None]:
        """(card_id, status, updated_at) of the cards written since `since` (updated_at index),
        and with `count_waiting` how many cards wait (TODO/BLOCKED), both from one snapshot."""
        with self.engine.connect() as conn:
            if count_waiting and self.engine.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            changed = [(r[0], r[1], r[2]) for r in conn.execute(
                select(cards_t.c.card_id, cards_t.c.status, cards_t.c.updated_at)
                .where(cards_t.c.updated_at >= since))]
            if not count_waiting:
                return changed, None
            waiting = conn.execute(select(func.count()).select_from(cards_t)
                                   .where(cards_t.c.status.in_(sorted(depgraph.WAITING)))).scalar_one()
        return changed, int(waiting)

    def enqueue_many(self, card_ids: Sequence[str], *, session: str | None = None,
                     as_read: Mapping[str, tuple[float, Sequence[str]]] | None = None
                     ) -> list[QueuedCard]:
        """Mark TODO cards QUEUED in one transaction, each under its own new task id.

        Compare-and-set per card (`status = TODO` in the UPDATE, one statement per chunk with
        RETURNING): a card another process moved meanwhile is simply not returned. With
        `as_read` (card_id -> the updated_at and depends_on the caller decided on), a card whose
        row was written since, or one of whose dependencies is no longer DONE, is not queued
        either (checked in the same transaction, rows locked on PostgreSQL).
        Returns the cards queued, in the caller's order.
        """
        assert Status.TODO in allowed_sources(Status.QUEUED)
        batch = uuid.uuid4().hex
        stamp = now_s()
        queued: list[QueuedCard] = []
        with self.tx() as conn:
            for chunk in chunks(card_ids):
                if as_read is not None:
                    chunk = self._unchanged_and_ready(conn, chunk, as_read)
                rows = conn.execute(
                    update(cards_t).where(cards_t.c.card_id.in_(chunk))
                    .where(cards_t.c.status == Status.TODO.value)
                    .values(status=Status.QUEUED.value, celery_task_id=f"{batch}-" + cards_t.c.card_id,
                            queued_at=stamp, updated_at=stamp, claim_token=None, claimed_by=None,
                            lease_expires_at=None, next_attempt_at=None, progress=0,
                            current_step="queued", session=session)
                    .returning(cards_t.c.card_id, cards_t.c.celery_task_id, cards_t.c.priority,
                               cards_t.c.soft_time_limit, cards_t.c.time_limit, cards_t.c.squad))
                queued += [QueuedCard(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]
        order = {cid: i for i, cid in enumerate(card_ids)}
        queued.sort(key=lambda q: order[q.card_id])  # keep the caller's order: priority 9 first
        return queued

    def _unchanged_and_ready(self, conn: Connection, chunk: list[str],
                             as_read: Mapping[str, tuple[float, Sequence[str]]]) -> list[str]:
        """The cards of `chunk` still TODO as the caller read them, whose dependencies are all DONE."""
        query = (select(cards_t.c.card_id, cards_t.c.updated_at).where(cards_t.c.card_id.in_(chunk))
                 .where(cards_t.c.status == Status.TODO.value))
        if self.engine.dialect.name == "postgresql":
            query = query.with_for_update()
        same = [cid for cid, updated_at in conn.execute(query) if updated_at == as_read[cid][0]]
        deps = sorted({d for cid in same for d in as_read[cid][1]})
        done: set[str] = set()
        for part in chunks(deps):
            done.update(r[0] for r in conn.execute(select(cards_t.c.card_id).where(cards_t.c.card_id.in_(part))
                                                   .where(cards_t.c.status == Status.DONE.value)))
        return [cid for cid in same if done.issuperset(as_read[cid][1])]

    def apply_blocked(self, to_block: list[str], to_release: list[str]) -> tuple[list[str], list[str]]:
        """Block and unblock cards (compare-and-set each); returns the ones that moved."""
        blocked = [cid for cid in to_block if self.transition(
            cid, Status.BLOCKED, expected=[Status.TODO], current_step="blocked by a dependency")]
        unblocked = [cid for cid in to_release if self.transition(
            cid, Status.TODO, expected=[Status.BLOCKED], current_step=None)]
        return blocked, unblocked

    def _select_ids(self, *conds: Any) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(cards_t.c.card_id, cards_t.c.celery_task_id, cards_t.c.claim_token,
                                       cards_t.c.priority).where(*conds)
                                .order_by(cards_t.c.priority.desc(), cards_t.c.created_at))
            return [tuple(r) for r in rows]

    def due_retries(self, now: float | None = None) -> list[str]:
        """RETRYING cards whose backoff has passed."""
        at = now_s() if now is None else now
        return [r[0] for r in self._select_ids(cards_t.c.status == Status.RETRYING.value,
                                               cards_t.c.next_attempt_at <= at)]

    def stale_claims(self, now: float | None = None) -> list[tuple[str, str]]:
        """(card_id, claim_token) of IN_PROGRESS cards whose lease ran out (by the database's clock)."""
        at = self.db_now() if now is None else now
        return [(r[0], r[2]) for r in self._select_ids(cards_t.c.status.in_(_CLAIMED_VALUES),
                                                       cards_t.c.lease_expires_at < at)]

    def stale_queued(self, older_than_s: float, now: float | None = None) -> list[tuple[str, str]]:
        """(card_id, task_id) of cards QUEUED for longer than `older_than_s`."""
        at = now_s() if now is None else now
        return [(r[0], r[1]) for r in self._select_ids(cards_t.c.status == Status.QUEUED.value,
                                                       cards_t.c.queued_at < at - older_than_s)]

    def in_flight(self) -> int:
        """Cards QUEUED or IN_PROGRESS (status index: O(cards in flight), not O(cards))."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(cards_t).where(
                cards_t.c.status.in_([Status.QUEUED.value, *_CLAIMED_VALUES]))).scalar_one())

    def active_count(self) -> int:
        """Cards not yet settled (TODO, QUEUED, IN_PROGRESS, RETRYING); status index: O(active
        cards), not O(cards) (`orchestrate --wait` asks after every card that settles)."""
        with self.engine.connect() as conn:
            return int(conn.execute(_ACTIVE_COUNT).scalar_one())

    # ---- runs -------------------------------------------------------------------------------
    def list_runs(self, card_id: str) -> list[Run]:
        """Runs of a card, first attempt first."""
        self.get_card(card_id)
        with self.engine.connect() as conn:
            rows = conn.execute(select(*_RUN_PUBLIC).where(runs_t.c.card_id == card_id)
                                .order_by(runs_t.c.id))
            return [_run_from_row(r) for r in rows]

    def get_run(self, run_id: int) -> Run:
        """One run, or NotFoundError."""
        with self.engine.connect() as conn:
            row = conn.execute(select(*_RUN_PUBLIC).where(runs_t.c.id == run_id)).first()
        if row is None:
            raise NotFoundError(f"unknown run {run_id}")
        return _run_from_row(row)

    def run_log(self, run_id: int) -> str:
        """The archived log of a run ('' while it runs)."""
        return self._run_text(run_id, "log")

    def _run_text(self, run_id: int, column: str) -> str:
        """One text column of a run ('' when empty), or NotFoundError."""
        with self.engine.connect() as conn:
            row = conn.execute(select(runs_t.c[column]).where(runs_t.c.id == run_id)).first()
        if row is None:
            raise NotFoundError(f"unknown run {run_id}")
        return row[0] or ""

    def last_run_log(self, card_id: str, attempt: int | None = None) -> tuple[Run, str] | None:
        """The archived log of a card's attempt (the latest by default)."""
        query = select(runs_t.c.id).where(runs_t.c.card_id == card_id)
        if attempt is not None:
            query = query.where(runs_t.c.attempt == attempt)
        with self.engine.connect() as conn:
            run_id = conn.execute(query.order_by(runs_t.c.id.desc()).limit(1)).scalar()
        if run_id is None:
            return None
        return self.get_run(run_id), self.run_log(run_id)

    def last_run_status(self, card_ids: Sequence[str]) -> dict[str, Run]:
        """The latest run of each card, in one query."""
        if not card_ids:
            return {}
        latest = (select(runs_t.c.card_id, func.max(runs_t.c.id).label("mx"))
                  .where(runs_t.c.card_id.in_(list(card_ids))).group_by(runs_t.c.card_id).subquery())
        with self.engine.connect() as conn:
            rows = conn.execute(select(*_RUN_PUBLIC).join(latest, runs_t.c.id == latest.c.mx))
            return {r.card_id: _run_from_row(r) for r in rows}

    def finished_runs(self, since: float) -> list[dict[str, Any]]:
        """Ended runs since a time (for metrics)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(runs_t.c.status, runs_t.c.queued_at, runs_t.c.started_at,
                                       runs_t.c.ended_at, runs_t.c.cost_usd)
                                .where(runs_t.c.ended_at >= since))
            return [dict(r._mapping) for r in rows]

    def total_cost(self) -> float:
        """Cost of every run of every card."""
        with self.engine.connect() as conn:
            return float(conn.execute(select(func.coalesce(func.sum(cards_t.c.cost_usd), 0.0))).scalar() or 0)

    def export_specs(self) -> list[dict[str, Any]]:
        """Every card's user-written fields (for `backlog export`)."""
        specs = [c.model_dump(include=set(SPEC_FIELDS), mode="json") for c in self.list_cards()]
        # workspace overrides appear only where a card sets them (older exports stay unchanged)
        return [{k: v for k, v in spec.items() if v is not None or k not in _OPTIONAL_EXPORT} for spec in specs]


def open_store(url: str) -> CardStore:
    """Open (and migrate) the store, turning driver errors into one clear SquadError."""
    try:
        return CardStore(url)
    except SQLAlchemyError as exc:
        msg = str(exc.orig if hasattr(exc, "orig") and exc.orig else exc).splitlines()[0]
        raise SquadError(f"cannot open database {url.split('@')[-1]}: {msg}") from None


__all__ = ["CardStore", "Claim", "QueuedCard", "RunOutcome", "metadata", "now_s", "open_store", "to_dt"]
