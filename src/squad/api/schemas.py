"""Response and request models of the HTTP API (SPEC §8); cards reuse `squad.cards.Card`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from squad.cards import CARD_ID_RE, Card, CardSpec, Run

TaskState = Literal["PENDING", "STARTED", "PROGRESS", "SUCCESS", "FAILURE", "RETRY", "REVOKED"]


class ErrorOut(BaseModel):
    """Every error answer: one line, plus one line per problem for invalid input."""

    detail: str
    problems: list[str] = Field(default_factory=list)


class HealthOut(BaseModel):
    """`GET /health`: exactly the keys of SPEC §8."""

    status: Literal["healthy", "degraded", "unhealthy"]
    timestamp: datetime
    version: str
    database: Literal["connected", "error"]
    redis: Literal["connected", "error", "not_available"]
    celery: Literal["connected", "no_workers", "error", "not_available"]
    celery_workers: int
    active_websockets: int
    execution_mode: Literal["celery", "local"]


_TEXT = r"^[^\x00]*$"  # the store cannot hold NUL characters


class CardIn(CardSpec):
    """Body of `POST /api/cards`: a card spec, validated exactly like a backlog import.

    Same fields and validators as `CardSpec`; the constraints the validators enforce are also
    spelled out here so that the OpenAPI schema tells clients what will be accepted.
    """

    card_id: str = Field(pattern=CARD_ID_RE.pattern)
    title: str = Field(min_length=1, max_length=500, pattern=r"\S")
    description: str = Field(default="", pattern=_TEXT)
    squad: str | None = Field(default=None, max_length=100, pattern=_TEXT)
    agent: str | None = Field(default=None, max_length=100, pattern=_TEXT)
    workdir: str | None = Field(default=None, pattern=_TEXT)

    @field_validator("time_limit", "soft_time_limit", "max_retries", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # JSON true/false is not a number
            raise ValueError("must be a number, not true/false")
        return value

    def spec(self) -> CardSpec:
        """The plain `CardSpec` the store takes."""
        return CardSpec.model_validate(self.model_dump())


class CardDetail(Card):
    """One card with its runs (the shape of `squad card show --json`)."""

    runs: list[Run] = Field(default_factory=list)


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


class EnhancedCard(Card):
    """A card with its task state and whether a log can be read."""

    celery_task: CeleryTask | None = None
    logs_available: bool = False


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

    force: bool = False


class RetryOut(BaseModel):
    """Answer of a retry (SPEC §8)."""

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
