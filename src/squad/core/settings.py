"""Settings: one typed object, built once, passed inward.

Precedence: CLI flag (keyword overrides) > environment > `squad.toml` (or `SQUAD_CONFIG`) > default.
"""

from __future__ import annotations

import json
import os
import shlex
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import AliasChoices, BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from squad.core.constants import CARDS_QUEUE, MAINTENANCE_QUEUE, QUEUE_NAME_PATTERN
from squad.core.errors import ConfigError
from squad.core.hostpatterns import parse_pattern
from squad.core.masking import mask_url, misplaced_userinfo

PromptMode = Literal["stdin", "arg", "file"]
ParserName = Literal["claude-stream-json", "codex-json", "markers", "plain"]
KeepPolicy = Literal["on_failure", "always", "never"]
LandMode = Literal["none", "merge", "rebase", "squash"]
LandWhen = Literal["approve", "done"]
#: a git remote's name (`git remote add NAME`), never an option or a URL
REMOTE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
WORKSPACE_ENV_PREFIX = "SQUAD_WORKSPACE_"


class AgentRlimits(BaseModel):
    """Resource limits applied to an agent process (and inherited by what it starts).

    `processes` is Linux's RLIMIT_NPROC: it counts every process of the worker's user, not only the
    agent's, so set it well above what the worker itself runs.
    """

    model_config = {"extra": "forbid"}

    address_space_mb: int | None = Field(default=None, ge=16)
    open_files: int | None = Field(default=None, ge=16)
    processes: int | None = Field(default=None, ge=1)
    file_size_mb: int | None = Field(default=None, ge=1)

    def as_resource_limits(self) -> list[tuple[int, int]]:
        """(resource.RLIMIT_*, value) pairs for the limits that are set; soft = hard = value."""
        import resource

        mib = 1024 * 1024
        pairs = [(resource.RLIMIT_AS, self.address_space_mb and self.address_space_mb * mib),
                 (resource.RLIMIT_NOFILE, self.open_files),
                 (resource.RLIMIT_NPROC, self.processes),
                 (resource.RLIMIT_FSIZE, self.file_size_mb and self.file_size_mb * mib)]
        return [(res, int(value)) for res, value in pairs if value]


class LimitedCard(Protocol):
    """What a card's limits are resolved from: a `CardSpec`, or just these three of its fields."""

    @property
    def time_limit(self) -> float | None: ...
    @property
    def soft_time_limit(self) -> float | None: ...
    @property
    def max_retries(self) -> int | None: ...


@dataclass(frozen=True)
class CardLimits:
    """A card's effective limits: its own values where it sets them, else the settings'."""

    soft_time_limit_s: float
    time_limit_s: float
    max_retries: int


SandboxKind = Literal["none", "bwrap"]
SandboxNetwork = Literal["on", "off", "allow"]
#: Files and folders of /etc an attempt never sees (each replaced by an empty one in its sandbox).
DEFAULT_HIDDEN_ETC = ["/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers",
                      "/etc/sudoers.d", "/etc/ssh", "/etc/ssl/private", "/etc/squad"]


class SandboxConfig(BaseModel):
    """`[sandbox]` (and `[agents.X.sandbox]`): what an attempt may see and use (docs/security.md).

    An agent's own table overrides the keys it sets; its `rw_paths` and `ro_paths` add to the global ones.
    """

    model_config = {"extra": "forbid"}

    #: None: `bwrap` where the start-up probe finds it working, else `none` (with a warning)
    kind: SandboxKind | None = None
    #: the bubblewrap binary (default: `bwrap` in the system folders)
    bwrap: str | None = None
    #: `off`: no network; `allow`: only `allow_hosts`, through the attempt's egress proxy
    network: SandboxNetwork = "on"
    #: with `network = "allow"`: `host`, `host:port`, `*.domain` (squad.core.hostpatterns)
    allow_hosts: list[str] = Field(default_factory=list)
    rw_paths: list[str] = Field(default_factory=list)
    ro_paths: list[str] = Field(default_factory=list)
    hide: list[str] = Field(default_factory=lambda: list(DEFAULT_HIDDEN_ETC))
    memory_mb: int | None = Field(default=None, ge=16)
    pids: int | None = Field(default=None, ge=1)
    #: CPUs (e.g. 1.5); cgroups only
    cpu: float | None = Field(default=None, gt=0)

    @field_validator("allow_hosts")
    @classmethod
    def _host_patterns(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_pattern(item)  # its ValueError says what is wrong with which entry
        return value

    def merged(self, agent: SandboxConfig | None) -> SandboxConfig:
        """These settings with an agent's own on top (paths and hosts added, other keys replaced)."""
        if agent is None:
            return self
        update = {key: getattr(agent, key) for key in agent.model_fields_set}
        update["allow_hosts"] = [*self.allow_hosts, *agent.allow_hosts]
        update["rw_paths"] = [*self.rw_paths, *agent.rw_paths]
        update["ro_paths"] = [*self.ro_paths, *agent.ro_paths]
        return self.model_copy(update=update)


class AgentConfig(BaseModel):
    """One agent: an argv (never a shell), how the prompt is passed, how output is parsed."""

    model_config = {"extra": "forbid"}

    command: list[str] = Field(min_length=1)
    prompt: PromptMode = "stdin"
    parser: ParserName = "markers"
    resume: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    rlimits: AgentRlimits | None = None
    #: Names (shell-style globs, e.g. "AWS_*") of environment variables this agent must not receive.
    env_deny: list[str] = Field(default_factory=list)
    sandbox: SandboxConfig | None = None


class HooksConfig(BaseModel):
    """Optional argv lists run in the card's working directory."""

    model_config = {"extra": "forbid"}

    after_create: list[str] | None = None
    before_run: list[str] | None = None
    after_run: list[str] | None = None
    timeout: float = Field(default=120.0, gt=0)


class WorkspaceConfig(BaseModel):
    """`[workspace]`: each card in its own git worktree of `repo` (docs/workspaces.md)."""

    model_config = {"extra": "forbid"}

    repo: Path | None = None
    base: str | None = Field(default=None, max_length=255)
    branch_prefix: str = Field(default="squad/", max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    keep: KeepPolicy = "on_failure"
    review: bool = False
    auto_commit: bool = True
    ttl_days: float = Field(default=7, gt=0)
    after_approve: list[str] | None = None
    hook_timeout: float = Field(default=600.0, gt=0)
    # Landing the work (docs/workspaces.md "Landing the work"): a shared remote, the verify gate, the train.
    remote: str | None = Field(default=None, max_length=100, pattern=REMOTE_NAME_PATTERN)
    verify: list[str] | None = Field(default=None, min_length=1)
    verify_timeout: float = Field(default=600.0, gt=0)
    land: LandMode = "none"
    land_when: LandWhen = "approve"
    delete_landed_branch: bool = False
    after_land: list[str] | None = None


NOTIFY_EVENTS_EXTRA = ("question",)
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class NotifyConfig(BaseModel):
    """One `[[notify]]` entry: where to send which events, in which shape (docs/team.md)."""

    model_config = {"extra": "forbid"}
    name: str | None = Field(default=None, pattern=_NAME)
    url: str = Field(pattern=r"^https?://", max_length=2000)
    events: list[str] = Field(min_length=1)
    format: Literal["json", "slack"] = "json"
    secret: str | None = None
    squads: list[str] | None = None

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        from squad.core.statuses import Status

        known = {*Status.__members__, *NOTIFY_EVENTS_EXTRA}
        out = [e if e in NOTIFY_EVENTS_EXTRA else e.upper() for e in value]
        wrong = [e for e in out if e not in known]
        if wrong:
            raise ValueError(f"unknown event(s) {', '.join(wrong)} (card statuses or question)")
        return out


class ScheduleConfig(BaseModel):
    """One `[[schedule]]` entry: a 5-field cron line (UTC) and the card it adds at each tick."""

    model_config = {"extra": "forbid"}
    name: str | None = Field(default=None, pattern=_NAME)
    cron: str = Field(max_length=200)
    card: dict[str, Any]

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"cron must have 5 fields (minute hour day month weekday, UTC), got {value!r}")
        return value

    @field_validator("card")
    @classmethod
    def _card_named(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("card_id"), str) or not isinstance(value.get("title"), str):
            raise ValueError("card needs card_id and title (both may use {date} and {time})")
        return value


class GithubIntakeConfig(BaseModel):
    """`[intake.github]`: the webhook secret, the label that makes an issue a card, and
    `[intake.github.repos]` (repository full name → the card's `repo`)."""

    model_config = {"extra": "forbid"}
    secret: str | None = None
    label: str = "squad"
    repos: dict[str, Path] = Field(default_factory=dict)
    squad: str | None = None
    agent: str | None = None


class IntakeConfig(BaseModel):
    """`[intake]`: where cards come in from besides the backlog (GitHub issues)."""

    model_config = {"extra": "forbid"}
    github: GithubIntakeConfig = Field(default_factory=GithubIntakeConfig)


def _name_entries(kind: str, entries: Sequence[NotifyConfig | ScheduleConfig]) -> None:
    """Entries without a `name` get `<kind>-<position>`; two entries of one kind never share one."""
    names: set[str] = set()
    for index, entry in enumerate(entries):
        entry.name = entry.name or f"{kind}-{index + 1}"
        names.add(entry.name)
    if len(names) != len(entries):
        raise ValueError(f"two [[{kind}]] entries share a name")


def config_path() -> Path:
    """The squad.toml in use: `SQUAD_CONFIG`, else `./squad.toml`."""
    return Path(os.environ.get("SQUAD_CONFIG", "squad.toml"))


class _TomlSource(PydanticBaseSettingsSource):
    """Reads `squad.toml` (or `SQUAD_CONFIG`); missing file means no values."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = config_path()
        self.data: dict[str, Any] = {}
        if path.is_file():
            try:
                self.data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
        elif "SQUAD_CONFIG" in os.environ:
            raise ConfigError(f"SQUAD_CONFIG={path}: no such file")

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k in self.settings_cls.model_fields}


class _WorkspaceEnvSource(PydanticBaseSettingsSource):
    """Every `[workspace]` key as `SQUAD_WORKSPACE_<KEY>` (e.g. `SQUAD_WORKSPACE_REPO`), so that workers
    on several machines point at their own clone; merged key by key over `squad.toml`'s section.
    A list (`verify`, `after_approve`, `after_land`) is a JSON array or a shell-style word list."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, info in WorkspaceConfig.model_fields.items():
            raw = os.environ.get(WORKSPACE_ENV_PREFIX + name.upper())
            if raw is None:
                continue
            if "list" in str(info.annotation):
                raw_text = raw.strip()
                try:
                    values[name] = json.loads(raw_text) if raw_text.startswith("[") else shlex.split(raw_text)
                except ValueError as exc:  # json.JSONDecodeError is a ValueError too
                    raise ConfigError(f"invalid setting {WORKSPACE_ENV_PREFIX}{name.upper()}: {exc}") from None
            else:
                values[name] = raw
        return {"workspace": values} if values else {}


class Settings(BaseSettings):
    """Every setting of README.md "Configuration"."""

    model_config = SettingsConfigDict(env_prefix="SQUAD_", extra="ignore", populate_by_name=True)

    redis_url: str = "redis://127.0.0.1:6379"
    broker_url: str | None = None
    result_backend: str | None = None
    events_url: str | None = None
    # TLS for rediss:// URLs (every Redis client: broker, results, events): CA bundle, client cert and key.
    redis_tls_ca_certs: Path | None = None
    redis_tls_certfile: Path | None = None
    redis_tls_keyfile: Path | None = None
    database_url: str = "sqlite:///.squad/squad.db"
    use_celery: bool = Field(default=True, validation_alias=AliasChoices("USE_CELERY", "use_celery"))
    soft_time_limit: float = Field(default=1700, gt=0)
    time_limit: float = Field(default=1800, gt=0)
    max_retries: int = Field(default=3, ge=0, le=100)
    retry_backoff: float = Field(default=60, ge=0)
    retry_backoff_max: float = Field(default=3600, ge=0)
    log_ttl: int = Field(default=86400, gt=0)
    api_token: str | None = None
    workdir: Path = Path(".squad/work")
    visibility_timeout: float | None = Field(default=None, gt=0)
    stall_timeout: float = Field(default=900, ge=0)
    budget_usd: float | None = Field(default=None, ge=0)
    requeue_after: float = Field(default=60, gt=0)
    lease_s: float = Field(default=30, gt=0)
    cors_origins: list[str] = Field(default_factory=list)
    #: Where a card's `workdir` may lie besides `workdir` (env: `os.pathsep`-separated).
    allowed_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    #: Host names the API answers besides the loopback names (env: comma-separated).
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    protect_metrics: bool = False
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    keep_prompts: bool = False
    #: Celery task events from the start (workers' task-received/started/succeeded, senders' task-sent).
    #: Off: each cost the worker's main process ~1.5 ms of CPU per card; Flower turns the workers'
    #: events on itself (every 5 s). docs/operations.md "Celery tooling and monitoring".
    task_events: bool = False
    #: The broker queues of this store's cards and of its reconciler (docs/operations.md "Queues per
    #: store"): two stores on one Redis give each its own. `squad up` picks `cards.<instance id>`.
    cards_queue: str = Field(default=CARDS_QUEUE, max_length=100, pattern=QUEUE_NAME_PATTERN)
    maintenance_queue: str = Field(default=MAINTENANCE_QUEUE, max_length=100, pattern=QUEUE_NAME_PATTERN)
    #: The agents' channel back (`squad mcp`, docs/agents.md): how long `ask_human` waits for a person
    #: (in all, per attempt), how deep sub-cards may nest and how many one card may create in all.
    ask_timeout: float = Field(default=3600, gt=0, le=7 * 24 * 3600)
    subcard_depth: int = Field(default=3, ge=0, le=20)
    subcard_limit: int = Field(default=200, ge=0, le=10_000)
    #: Where the per-attempt sockets of the channel live (a 0700 folder per attempt; default: a
    #: `squad-<uid>` folder in the runtime or temporary directory, never inside a worktree).
    channel_dir: Path | None = None

    default_agent: str = "demo"
    squads: dict[str, str] = Field(default_factory=dict)
    routes: dict[str, str] = Field(default_factory=dict)  # squad name -> Celery queue of its cards
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    prompt_template: Path | None = None
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    workspace: WorkspaceConfig = Field(default_factory=WorkspaceConfig)
    #: team use (docs/team.md): webhooks, cron schedules, GitHub intake, the dashboard's address in links
    notify: list[NotifyConfig] = Field(default_factory=list)
    schedule: list[ScheduleConfig] = Field(default_factory=list)
    intake: IntakeConfig = Field(default_factory=IntakeConfig)
    public_url: str | None = Field(default=None, pattern=r"^https?://", max_length=500)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _WorkspaceEnvSource(settings_cls), _TomlSource(settings_cls))

    @field_validator("redis_url", "broker_url", "result_backend", "events_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"must be a redis://, rediss:// or unix:// URL, got {mask_url(value)!r}")
        return _encoded_userinfo(value)

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()]
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _db_scheme(cls, value: str) -> str:
        # `postgres://` and `postgresql://` (as hosting providers print them) mean psycopg 3, our driver.
        for plain in ("postgres://", "postgresql://"):
            if value.startswith(plain):
                value = "postgresql+psycopg://" + value[len(plain):]
        if not (value.startswith("sqlite") or value.startswith("postgresql")):
            raise ValueError(f"must be sqlite:///… or postgresql+psycopg://…, got {mask_url(value)!r}")
        return value if value.startswith("sqlite") else _encoded_userinfo(value) or value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        _name_entries("notify", self.notify)
        _name_entries("schedule", self.schedule)
        if self.soft_time_limit > self.time_limit:
            raise ValueError(
                f"soft_time_limit ({self.soft_time_limit}) must not exceed time_limit ({self.time_limit})"
            )
        if self.visibility_timeout is not None and self.visibility_timeout <= self.time_limit:
            raise ValueError(
                f"visibility_timeout ({self.visibility_timeout}) must exceed time_limit ({self.time_limit}),"
                " or a running card is delivered twice"
            )
        return self

    # ---- derived values -------------------------------------------------------------------
    def _redis_db(self, db: int) -> str:
        parts = urlsplit(self.redis_url)
        if parts.scheme == "unix":
            return f"{self.redis_url}?db={db}" if "?" not in self.redis_url else self.redis_url
        return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))

    @property
    def broker(self) -> str:
        """Celery broker URL (DB 0 unless explicit)."""
        return self._with_tls(self.broker_url or self._redis_db(0))

    @property
    def results(self) -> str:
        """Celery result backend URL (DB 1 unless explicit)."""
        return self._with_tls(self.result_backend or self._redis_db(1))

    @property
    def events(self) -> str:
        """Events and live logs URL (DB 2 unless explicit)."""
        return self._with_tls(self.events_url or self._redis_db(2))

    def _with_tls(self, url: str) -> str:
        """A `rediss://` URL with the TLS options as query parameters, which redis-py, kombu and
        Celery's result backend all read: certificates required, CA and client cert from settings."""
        parts = urlsplit(url)
        if parts.scheme != "rediss":
            return url
        query = dict(parse_qsl(parts.query))
        query.setdefault("ssl_cert_reqs", "required")
        for key, value in (("ssl_ca_certs", self.redis_tls_ca_certs), ("ssl_certfile", self.redis_tls_certfile),
                           ("ssl_keyfile", self.redis_tls_keyfile)):
            if value is not None:
                query.setdefault(key, str(value.expanduser().resolve()))
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, safe="/"), parts.fragment))

    @property
    def visibility_timeout_s(self) -> float:
        """Broker redelivery timeout: always above the hard limit."""
        return self.visibility_timeout or self.time_limit + 600

    def allowed_root_paths(self) -> list[Path]:
        """The resolved allowed roots: `SQUAD_WORKDIR` and every `allowed_roots` entry (docs/security.md)."""
        return [Path(root).expanduser().resolve() for root in (self.workdir, *self.allowed_roots)]

    def check_allowed(self, path: Path, what: str) -> Path:
        """`path` resolved, or ConfigError when it lies outside every allowed root."""
        resolved = path.expanduser().resolve()
        roots = self.allowed_root_paths()
        if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
            raise ConfigError(f"{what} {resolved} is outside the allowed roots "
                              f"({os.pathsep.join(str(r) for r in roots)}; set SQUAD_ALLOWED_ROOTS)")
        return resolved

    def limits_for(self, card: LimitedCard) -> CardLimits:
        """The one place a card's limits and retry budget are resolved (the soft limit never
        exceeds the hard one, and no card runs longer than this installation's hard limit)."""
        hard = min(card.time_limit or self.time_limit, self.time_limit)
        return CardLimits(soft_time_limit_s=min(card.soft_time_limit or self.soft_time_limit, hard),
                          time_limit_s=hard,
                          max_retries=card.max_retries if card.max_retries is not None else self.max_retries)

    def display(self) -> dict[str, Any]:
        """Settings with secrets masked, for `squad status`."""
        data = self.model_dump(mode="json", exclude={"agents"})
        if data.get("api_token"):
            data["api_token"] = "***"
        for entry in data.get("notify") or []:
            if entry.get("secret"):
                entry["secret"] = "***"
        if (data.get("intake") or {}).get("github", {}).get("secret"):
            data["intake"]["github"]["secret"] = "***"
        for key in ("redis_url", "broker_url", "result_backend", "events_url", "database_url"):
            if data.get(key):
                data[key] = mask_url(data[key])
        return data


def _encoded_userinfo(url: str | None) -> str | None:
    """Refuse a URL whose password holds an unencoded `/`, `#` or `?` (an `@` after its host): every
    client would take part of the password for the host, and print it in its errors."""
    if url is not None and misplaced_userinfo(url):
        raise ValueError("its user name or password holds a character that must be percent-encoded "
                         "(/ as %2F, # as %23, ? as %3F, @ as %40)")
    return url


def load_settings(**overrides: Any) -> Settings:
    """Build Settings; any invalid value becomes one ConfigError line naming the setting."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        if not loc:  # a check across settings (e.g. visibility timeout vs hard limit)
            raise ConfigError(f"invalid settings: {first['msg']}") from None
        env = loc if "." in loc else ("USE_CELERY" if loc.lower() == "use_celery" else f"SQUAD_{loc.upper()}")
        raise ConfigError(f"invalid setting {env}: {first['msg']}") from None
    except SettingsError as exc:  # e.g. a list setting whose env value is not JSON
        raise ConfigError(f"invalid setting: {str(exc).splitlines()[0]}") from None
