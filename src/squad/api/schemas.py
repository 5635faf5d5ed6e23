"""Response and request models of the HTTP API (docs/api.md); cards reuse `squad.core.cards.Card`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from squad.core.cards import (
    CARD_ID_RE,
    DESCRIPTION_MAX_CHARS,
    NAME_MAX_CHARS,
    TITLE_MAX_CHARS,
    WORKDIR_MAX_CHARS,
    Card,
    CardSpec,
    Run,
)
from squad.core.statuses import Status, TaskState

M = TypeVar("M", bound=BaseModel)


class ErrorOut(BaseModel):
    """Every error answer: one line, plus one line per problem for invalid input."""

    detail: str
    problems: list[str] = Field(default_factory=list)


class HealthOut(BaseModel):
    """`GET /health`: exactly the keys of docs/api.md."""

    status: Literal["healthy", "degraded", "unhealthy"]
    timestamp: datetime
    version: str
    database: Literal["connected", "error"]
    redis: Literal["connected", "error", "not_available"]
    celery: Literal["connected", "no_workers", "error", "not_available"]
    celery_workers: int
    active_websockets: int
    execution_mode: Literal["celery", "local"]


class AuthOut(BaseModel):
    """`GET /api/auth`: the token presented (or none) is accepted, and who it is."""

    authorized: bool
    token_required: bool
    name: str = Field(description="The token's name (`SQUAD_API_TOKEN`, `anonymous` on an open server)")
    role: Literal["viewer", "operator", "admin"]


class CardAction(BaseModel):
    """A successful write on a card, from the audit log: "approved by NAME"."""

    action: str
    who: str
    at: datetime


class IntakeOut(BaseModel):
    """`POST /api/intake/github`: what the delivery did (`add`, `edit`, `cancel`, `retry`, `ignored`)."""

    action: str
    card_id: str | None
    message: str


class AuditOut(BaseModel):
    """One row of the audit log (`GET /api/audit`)."""

    id: int
    at: datetime
    who: str
    action: str
    card_id: str | None
    client: str | None
    result: str


_TEXT = r"^[^\x00]*$"  # the store cannot hold NUL characters


class CardIn(CardSpec):
    """Body of `POST /api/cards`: a card spec, validated exactly like a backlog import.

    Same fields and validators as `CardSpec`; the constraints the validators enforce are also
    spelled out here so that the OpenAPI schema tells clients what will be accepted.
    """

    card_id: str = Field(pattern=CARD_ID_RE.pattern)
    title: str = Field(min_length=1, max_length=TITLE_MAX_CHARS, pattern=r"\S")
    description: str = Field(default="", max_length=DESCRIPTION_MAX_CHARS, pattern=_TEXT)
    squad: str | None = Field(default=None, max_length=NAME_MAX_CHARS, pattern=_TEXT)
    agent: str | None = Field(default=None, max_length=NAME_MAX_CHARS, pattern=_TEXT)
    workdir: str | None = Field(default=None, max_length=WORKDIR_MAX_CHARS, pattern=_TEXT)

    @field_validator("time_limit", "soft_time_limit", "max_retries", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # JSON true/false is not a number
            raise ValueError("must be a number, not true/false")
        return value


class CardDetail(Card):
    """One card with its runs (the shape of `squad card show --json`)."""

    runs: list[Run] = Field(default_factory=list)
    actions: list[CardAction] = Field(default_factory=list, description="Who approved, cancelled, … this card")


class CeleryTask(BaseModel):
    """The live task of a card, in Celery's vocabulary; the store decides the status."""

    task_id: str | None
    status: TaskState
    progress: int
    current_step: str | None
    elapsed: float | None = None
    eta: float | None = None
    worker: str | None = None
    retries: int = 0
    max_retries: int = 0
    result: Any = None
    traceback: str | None = None


def built(cls: type[M], fields: dict[str, Any]) -> M:
    """A model from values that are already typed and complete (every field given), without
    validating them again: what `model_construct` does, minus its per-field default handling, which
    costs more than the rest of a 2,000-card board request."""
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", fields)
    object.__setattr__(obj, "__pydantic_fields_set__", set(fields))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


class EnhancedCard(Card):
    """A card with its task state, whether a log can be read, and what a board card shows."""

    celery_task: CeleryTask | None = None
    logs_available: bool = False
    next_attempt_at: datetime | None = Field(default=None, description="RETRYING: when the next attempt is due")
    cost_usd: float = Field(default=0.0, description="Cost of every run so far, USD")
    last_output_at: datetime | None = Field(default=None, description="Last line in the live log")
    time_limit_s: float | None = Field(default=None, description="Effective hard time limit of a run")


class BoardCard(BaseModel):
    """What a board card shows (`GET /api/board`), and nothing else; a field without a value is left
    out of the answer."""

    card_id: str
    title: str
    status: Status
    priority: int
    attempts: int
    progress: int
    max_retries: int = Field(description="Effective retry budget (the card's own, else the default)")
    time_limit_s: float = Field(description="Effective hard time limit of a run")
    cost_usd: float = Field(description="Cost of every run so far, USD")
    created_at: datetime
    updated_at: datetime
    squad: str | None = None
    agent: str | None = None
    current_step: str | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = Field(default=None, description="RETRYING: when the next attempt is due")
    task_status: TaskState | None = Field(default=None, description="`celery_task.status` of `/api/cards/enhanced`")
    elapsed: float | None = Field(default=None, description="Seconds the last run took, or has taken so far")
    worker: str | None = Field(default=None, description="Worker of the last run")
    last_output_at: datetime | None = Field(default=None, description="IN_PROGRESS: last line in the live log")
    parent: str | None = Field(default=None, description="The card whose attempt created this one (docs/agents.md)")
    question: str | None = Field(default=None, description="NEEDS_INPUT: what the card's agent asks a person")
    choices: list[str] | None = Field(default=None, description="NEEDS_INPUT: the answers the agent offers")
    verify_exit: int | None = Field(default=None, description="The latest run's verify exit code (0: passed)")
    landed_commit: str | None = Field(default=None, description="The commit its landing put on base")


class LogEntry(BaseModel):
    """One log line; `id` is the stream entry id to pass as `after`."""

    id: str
    timestamp: str
    level: str
    message: str
    task_id: str | None = None


class RunLog(BaseModel):
    """The archived log of one run."""

    run_id: int
    card_id: str
    attempt: int
    status: str
    log: str


class RetryIn(BaseModel):
    """Body of `POST /api/tasks/{card_id}/retry`."""

    model_config = ConfigDict(extra="forbid")

    force: bool = Field(default=False, strict=True)  # JSON true/false only, not 0/1


class BulkRetryIn(BaseModel):
    """Body of `POST /api/tasks/retry`: several cards at once."""

    model_config = ConfigDict(extra="forbid")

    card_ids: list[str] = Field(min_length=1, max_length=1000)
    force: bool = Field(default=False, strict=True)  # JSON true/false only, not 0/1


class BulkRetryItem(BaseModel):
    """The outcome of one card of a bulk retry."""

    card_id: str
    ok: bool
    status_code: int
    new_task_id: str | None = None
    message: str


class BulkRetryOut(BaseModel):
    """Answer of a bulk retry: one item per card, in the order given."""

    retried: int
    results: list[BulkRetryItem]


class PromptOut(BaseModel):
    """The prompt an attempt was sent."""

    card_id: str
    attempt: int
    prompt: str


class RetryOut(BaseModel):
    """Answer of a retry (docs/api.md)."""

    status: str
    card_id: str
    old_task_id: str | None
    new_task_id: str | None
    message: str


class CancelOut(BaseModel):
    """Answer of a cancel: the card is CANCELLED and its agent group has been ended."""

    status: Literal["cancelled"]
    card_id: str
    task_id: str | None
    message: str
    card: Card


class WorkerOut(BaseModel):
    """One Celery worker as last seen by a broadcast."""

    name: str
    status: Literal["online", "offline"]
    active_cards: list[str] = Field(default_factory=list)
    processed: int = 0
    concurrency: int | None = None
    last_heartbeat: datetime | None = None
    queues: list[str] = Field(default_factory=list)
    leases: list[str] = Field(default_factory=list, description="Cards it holds a claim on")


class WorkersOut(BaseModel):
    """`GET /api/workers`."""

    status: Literal["connected", "no_workers", "error", "not_available"]
    checked_at: datetime | None
    workers: list[WorkerOut]


class Percentiles(BaseModel):
    """p50/p95 of a duration, seconds (null without data)."""

    p50: float | None = None
    p95: float | None = None
    count: int = 0


class MinuteBucket(BaseModel):
    """Runs that ended in one minute."""

    minute: datetime
    succeeded: int = 0
    failed: int = 0


class MetricsOut(BaseModel):
    """`GET /api/metrics`: the last hour of runs plus current counts."""

    window_s: int
    generated_at: datetime
    runs_finished: int
    runs_succeeded: int
    runs_failed: int
    throughput_per_minute: float
    throughput: list[MinuteBucket]
    queue_wait_s: Percentiles
    run_time_s: Percentiles
    error_rate: float
    counts_by_status: dict[str, int]
    total_cost_usd: float
    queue_depth: int | None = None
    workspace_disk_bytes: int = 0


class HistoryRun(Run):
    """A run with its card's title, squad and agent (`GET /api/runs`)."""

    title: str
    squad: str | None = None
    agent: str | None = None


class SeriesBucket(BaseModel):
    """One time bucket of `GET /api/metrics/series`."""

    start: datetime
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    run_time_p50: float | None = None
    run_time_p95: float | None = None
    error_rate: float | None = None
    queue_depth: int = 0
    cost_usd: float = 0.0


class SquadCost(BaseModel):
    """Cost of one squad's runs over the window."""

    squad: str
    cost_usd: float


class DayCost(BaseModel):
    """Cost of the runs that ended on one UTC day."""

    day: str
    cost_usd: float


class MetricsSeries(BaseModel):
    """`GET /api/metrics/series`: charts over a selectable window."""

    window_s: int
    bucket_s: int
    generated_at: datetime
    buckets: list[SeriesBucket]
    succeeded: int
    failed: int
    retried: int
    error_rate: float
    run_time_p50: float | None
    run_time_p95: float | None
    cost_per_day: list[DayCost]
    cost_per_squad: list[SquadCost]


class FileStatOut(BaseModel):
    """One file of a card's diff."""

    path: str
    insertions: int
    deletions: int


class DiffOut(BaseModel):
    """`GET /api/cards/{card_id}/diff`: `base…branch` of the card's workspace; `patch` is capped
    (a `[patch truncated: …]` line marks the cut, and `truncated` is true)."""

    branch: str
    base_commit: str
    head_commit: str
    files: list[FileStatOut]
    patch: str
    truncated: bool = False


class RejectIn(BaseModel):
    """Body of `POST /api/cards/{card_id}/reject`: what the next attempt must change."""

    model_config = ConfigDict(extra="forbid")

    feedback: str = Field(min_length=1, max_length=20_000, pattern=r"^[^\x00]*[^\x00\s][^\x00]*$")


class AnswerIn(BaseModel):
    """Body of `POST /api/cards/{card_id}/answer`: a person's reply to the card's question."""

    model_config = ConfigDict(extra="forbid")

    answer: str = Field(min_length=1, max_length=16 * 1024, pattern=r"^[^\x00]*[^\x00\s][^\x00]*$")


class AnswerOut(BaseModel):
    """Answer of `POST /api/cards/{card_id}/answer`: the card, IN_PROGRESS again."""

    status: Literal["answered"]
    card_id: str
    message: str
    card: Card


class ReviewOut(BaseModel):
    """Answer of approve (card DONE, or LANDING with landing on), reject (card QUEUED under `task_id`)
    and land (card LANDING)."""

    status: Literal["approved", "rejected", "landing"]
    card_id: str
    task_id: str | None = None
    message: str
    card: Card


_DESCRIPTIONS = {
    400: "Not allowed in the card's current status",
    401: "Missing, unknown or revoked API token (or webhook signature)",
    403: "The token's role is too low: the message names the role needed",
    404: "Unknown card or run",
    409: "Conflicts with the current state (e.g. the card exists)",
    422: "Invalid input; `problems` lists every problem",
    503: "A backing service (database, Redis) does not answer",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error codes (every error body is an `ErrorOut`)."""
    return {code: {"model": ErrorOut, "description": _DESCRIPTIONS[code]} for code in (*codes, 503)}


class StatusOut(BaseModel):
    """One card status and its facts (`GET /api/statuses`), in the board's lane order."""

    status: Status
    meaning: str
    final: bool
    active: bool
    waiting: bool
    blocks_dependants: bool
    wakes_orchestrator: bool
    running: bool
    cancellable: bool
    retryable: bool
    celery_state: TaskState | None
    next: list[Status] = Field(description="statuses a card may go to from this one (the transition table)")
