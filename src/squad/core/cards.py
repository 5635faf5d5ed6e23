"""Cards and runs as pydantic models, and the bounds of what a card may hold; the statuses and their
transitions are `squad.core.statuses` (docs/architecture.md "Card lifecycle")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from squad.core.errors import BacklogError
from squad.core.safetext import excerpt
from squad.core.statuses import RunStatus, Status

CARD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")



def ref_name_problem(card_id: str) -> str | None:
    """Why `card_id` cannot name a git branch (`git check-ref-format` rules beyond CARD_ID_RE), or None:
    a card's branch is `<branch_prefix><card_id>` (docs/workspaces.md)."""
    if ".." in card_id:
        return "must not contain '..' (not a valid git branch name)"
    if card_id.endswith(".lock"):
        return "must not end with '.lock' (not a valid git branch name)"
    if card_id.endswith("."):
        return "must not end with '.' (not a valid git branch name)"
    return None


# Bounds of what a card may hold: a card is user input, stored, rendered into prompts and shown
# on every screen, so nothing in it is unbounded.
TITLE_MAX_CHARS = 500
DESCRIPTION_MAX_CHARS = 64 * 1024
NAME_MAX_CHARS = 100
WORKDIR_MAX_CHARS = 4096
LIST_ITEM_MAX_CHARS = 2000
CRITERIA_MAX_ITEMS = 100
LABELS_MAX_ITEMS = 50
DEPENDS_MAX_ITEMS = 200
CARD_ID_MAX_CHARS = 64
MAX_TIME_LIMIT_S = 7 * 24 * 3600.0
MAX_RETRIES_LIMIT = 100
#: the bound of each text field (of each item, for lists), checked on the text as sent
_MAX_CHARS = {"title": TITLE_MAX_CHARS, "description": DESCRIPTION_MAX_CHARS, "squad": NAME_MAX_CHARS,
              "agent": NAME_MAX_CHARS, "workdir": WORKDIR_MAX_CHARS, "acceptance_criteria": LIST_ITEM_MAX_CHARS,
              "depends_on": CARD_ID_MAX_CHARS, "labels": NAME_MAX_CHARS, "repo": 4096, "base": 255,
              "verify": LIST_ITEM_MAX_CHARS}



class CardSpec(BaseModel):
    """The user-written fields of a card (backlog file, `card add`, `POST /api/cards`)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    card_id: str
    title: str = Field(min_length=1, max_length=TITLE_MAX_CHARS)
    description: str = Field(default="", max_length=DESCRIPTION_MAX_CHARS)
    acceptance_criteria: list[Annotated[str, Field(max_length=LIST_ITEM_MAX_CHARS)]] = Field(
        default_factory=list, max_length=CRITERIA_MAX_ITEMS)
    squad: str | None = Field(default=None, max_length=NAME_MAX_CHARS)
    agent: str | None = Field(default=None, max_length=NAME_MAX_CHARS)
    priority: int = Field(default=5, ge=0, le=9)
    depends_on: list[Annotated[str, Field(max_length=CARD_ID_MAX_CHARS)]] = Field(
        default_factory=list, max_length=DEPENDS_MAX_ITEMS)
    labels: list[Annotated[str, Field(max_length=NAME_MAX_CHARS)]] = Field(
        default_factory=list, max_length=LABELS_MAX_ITEMS)
    workdir: str | None = Field(default=None, max_length=WORKDIR_MAX_CHARS)
    time_limit: float | None = Field(default=None, gt=0, le=MAX_TIME_LIMIT_S, allow_inf_nan=False)
    soft_time_limit: float | None = Field(default=None, gt=0, le=MAX_TIME_LIMIT_S, allow_inf_nan=False)
    max_retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES_LIMIT)
    # Workspace overrides (docs/workspaces.md): the card's git repository, base ref, review gate.
    repo: str | None = Field(default=None, max_length=4096)
    base: str | None = Field(default=None, max_length=255)
    review: bool | None = None
    # Landing overrides (docs/workspaces.md "Landing the work"): verify argv, landing mode and moment.
    verify: list[Annotated[str, Field(max_length=LIST_ITEM_MAX_CHARS)]] | None = Field(
        default=None, min_length=1, max_length=CRITERIA_MAX_ITEMS)
    land: Literal["none", "merge", "rebase", "squash"] | None = None
    land_when: Literal["approve", "done"] | None = None

    @field_validator("card_id", mode="before")
    @classmethod
    def _card_id(cls, value: Any) -> Any:
        # Checked before whitespace stripping and with fullmatch: "A-1\n" is not "A-1".
        if isinstance(value, str) and not CARD_ID_RE.fullmatch(value):
            raise ValueError(f"card_id {excerpt(repr(value))} must match {CARD_ID_RE.pattern}")
        if isinstance(value, str) and (problem := ref_name_problem(value)):
            raise ValueError(f"card_id {excerpt(repr(value))} {problem}")
        return value

    @field_validator(*_MAX_CHARS, mode="before")
    @classmethod
    def _raw_text(cls, value: Any, info: ValidationInfo) -> Any:
        # The one walk over a card's text, as sent: each string's bound (text is stripped of
        # surrounding white space before its bounds are checked; a value longer than its bound as sent
        # is still refused: the API's schema states the bound on what is sent), and what no store can
        # hold: PostgreSQL refuses NUL characters (and lone surrogates, which pydantic refuses itself as
        # `string_unicode`), SQLite would keep them.
        limit = _MAX_CHARS[info.field_name or ""]
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if not isinstance(item, str):
                continue
            if len(item) > limit:
                # pydantic's own error, so the message reads as for any other bound
                raise PydanticCustomError("string_too_long", "String should have at most {max_length} characters",
                                          {"max_length": limit})
            if "\x00" in item:
                where = f" (item {index})" if value is items else ""
                raise PydanticCustomError("nul_character", "must not contain NUL characters{where}", {"where": where})
        return value

    @field_validator("priority", "max_retries", mode="before")
    @classmethod
    def _strict_int(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be an integer")
        return value

    @field_validator("time_limit", "soft_time_limit", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number of seconds")
        return value

    @model_validator(mode="after")
    def _soft_below_hard(self) -> CardSpec:
        if (self.soft_time_limit is not None and self.time_limit is not None
                and self.soft_time_limit > self.time_limit):
            raise ValueError(f"soft_time_limit ({self.soft_time_limit:g}) must not exceed time_limit"
                             f" ({self.time_limit:g})")
        return self


class Card(CardSpec):
    """A card as stored, with its execution state (the shape of `squad card list --json`)."""

    model_config = ConfigDict(extra="ignore")

    # Read back as stored: cards written before a bound was introduced must stay readable.
    description: str = ""
    acceptance_criteria: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)
    workdir: str | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None

    status: Status = Status.TODO
    attempts: int = 0
    progress: int = 0
    current_step: str | None = None
    celery_task_id: str | None = None
    last_error: str | None = None
    feedback: str | None = None
    #: the files a landing left with conflict markers for the next attempt (None: no conflict)
    conflicts: list[str] | None = None
    #: the card whose attempt created this one (`create_cards`, docs/agents.md)
    parent: str | None = None
    #: while NEEDS_INPUT: what its agent asked (`ask_human`) and the choices it offered
    question: str | None = None
    choices: list[str] | None = None
    #: the commit its last run's landing put on base (None: that run did not land)
    landed_commit: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: Attempts made before the user's last retry (automatic retries are counted from here);
    #: internal, so never serialized.
    retry_base: int = Field(default=0, exclude=True)

    @model_validator(mode="after")
    def _soft_below_hard(self) -> Card:  # replaces the input check: see the fields above
        return self

    @field_validator(*_MAX_CHARS, mode="before")
    @classmethod
    def _raw_text(cls, value: Any, info: ValidationInfo) -> Any:  # replaces the input check too
        return value


@dataclass(frozen=True)
class Usage:
    """What an agent reported about its session and spend: one value from the agent's parser to the
    run row (its fields are the `runs` columns and the `Run` fields of the same names)."""

    session_id: str | None = None
    cost_usd: float | None = None
    num_turns: int | None = None
    #: every prompt token the model read, cached ones included (Claude: input + cache creation +
    #: cache read; Codex's own `input_tokens` already counts its cached tokens)
    input_tokens: int | None = None
    output_tokens: int | None = None
    #: of `input_tokens`, those read from the prompt cache and those written to it
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None


@dataclass(frozen=True)
class GitFacts:
    """What an attempt left on the card branch: recorded on the run (the `runs` columns and the
    `Run` fields of the same names)."""

    branch: str
    base_commit: str
    head_commit: str
    files_changed: int
    insertions: int
    deletions: int


class Run(BaseModel):
    """One attempt of a card."""

    # The API's shape of a run: flat, the fields of its `Usage` and `GitFacts` among the others.

    id: int
    card_id: str
    attempt: int
    task_id: str | None = None
    worker: str | None = None
    status: RunStatus = RunStatus.RUNNING
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    error: str | None = None
    cost_usd: float | None = None
    session_id: str | None = None
    num_turns: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    branch: str | None = None
    base_commit: str | None = None
    head_commit: str | None = None
    files_changed: int | None = None
    insertions: int | None = None
    deletions: int | None = None
    verify_exit: int | None = None
    verify_output: str | None = None
    landed_commit: str | None = None
    sandbox: str | None = None
    log_available: bool = False


def parse_card(data: Any, where: str = "card") -> CardSpec:
    """Validate one card; every problem becomes one line naming the card."""
    if not isinstance(data, dict):
        raise BacklogError([f"{where}: must be an object, got {type(data).__name__}"])
    try:
        spec = CardSpec.model_validate(data)
    except ValidationError as exc:
        raw_id = data.get("card_id")
        ident = excerpt(raw_id) if isinstance(raw_id, str) else where
        raise BacklogError([_format_error(ident, err) for err in exc.errors()]) from None
    return spec


def check_storable_text(what: str, text: str) -> None:
    """BacklogError unless a store can hold `text` (valid UTF-8, no NUL character)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BacklogError([f"{what}: not valid UTF-8 text"]) from None
    if "\x00" in text:
        raise BacklogError([f"{what}: must not contain NUL characters"])


def _format_error(ident: str, err: Any) -> str:
    field = ".".join(str(p) for p in err["loc"]) or "card"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "string_unicode":  # a lone surrogate: no store can hold it
        msg = "not valid UTF-8 text"
    return f"card {ident}: {field}: {msg}"
