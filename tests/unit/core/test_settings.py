"""Settings: precedence, every README.md "Configuration" variable, derived URLs, and bad values as one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from squad.agents.presets import agent_for, all_agents
from squad.core.cards import CardSpec
from squad.core.errors import ConfigError
from squad.core.retries import RetryPolicy
from squad.core.settings import AgentConfig, CardLimits, Settings, load_settings
from support.cli import run_cli, squad_env


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---- precedence: flag > env > squad.toml (or SQUAD_CONFIG) > default ------------------------------
def test_defaults_apply_when_nothing_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given no env (the hermetic fixture sets only SQUAD_WORKDIR) and no squad.toml
    monkeypatch.delenv("SQUAD_WORKDIR")
    # When
    s = load_settings()
    # Expect the defaults of README.md "Configuration"
    assert s.redis_url == "redis://127.0.0.1:6379"
    assert s.database_url == "sqlite:///.squad/squad.db"
    assert s.use_celery is True
    assert (s.soft_time_limit, s.time_limit) == (1700, 1800)
    assert s.max_retries == 3
    assert (s.retry_backoff, s.retry_backoff_max) == (60, 3600)
    assert s.log_ttl == 86400
    assert s.api_token is None
    assert s.workdir == Path(".squad/work")
    assert s.stall_timeout == 900
    assert s.budget_usd is None
    assert s.requeue_after == 60
    assert s.lease_s == 30


def test_squad_toml_overrides_the_default() -> None:
    write_toml(Path("squad.toml"), "max_retries = 5\nretry_backoff = 2.5\n")
    s = load_settings()
    assert s.max_retries == 5
    assert s.retry_backoff == 2.5


def test_env_overrides_squad_toml(monkeypatch: pytest.MonkeyPatch) -> None:
    write_toml(Path("squad.toml"), "max_retries = 5\n")
    monkeypatch.setenv("SQUAD_MAX_RETRIES", "7")
    assert load_settings().max_retries == 7


def test_flag_overrides_env_and_squad_toml(monkeypatch: pytest.MonkeyPatch) -> None:
    write_toml(Path("squad.toml"), "max_retries = 5\n")
    monkeypatch.setenv("SQUAD_MAX_RETRIES", "7")
    assert load_settings(max_retries=9).max_retries == 9


def test_flag_left_unset_does_not_hide_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A CLI option the user did not give arrives as None and must not mask the environment.
    monkeypatch.setenv("SQUAD_MAX_RETRIES", "7")
    assert load_settings(max_retries=None).max_retries == 7


def test_squad_config_points_to_another_file_and_local_squad_toml_is_ignored(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_toml(Path("squad.toml"), "max_retries = 5\n")
    other = write_toml(tmp_path / "elsewhere.toml", 'max_retries = 2\ndefault_agent = "mine"\n'
                       '[agents.mine]\ncommand = ["python3", "my_agent.py", "{card_id}"]\n')
    monkeypatch.setenv("SQUAD_CONFIG", str(other))
    s = load_settings()
    assert s.max_retries == 2
    assert agent_for(s, None, None)[0] == "mine"


def test_squad_config_naming_a_missing_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setenv("SQUAD_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_settings()


# ---- every README.md "Configuration" variable parses from the environment ------------------------------------------
SPEC_ENV = {
    "SQUAD_REDIS_URL": ("redis://10.0.0.5:6380", "redis_url", "redis://10.0.0.5:6380"),
    "SQUAD_BROKER_URL": ("rediss://:pw@b.example:6379/4", "broker_url", "rediss://:pw@b.example:6379/4"),
    "SQUAD_RESULT_BACKEND": ("redis://r.example/5", "result_backend", "redis://r.example/5"),
    "SQUAD_EVENTS_URL": ("redis://e.example/6", "events_url", "redis://e.example/6"),
    "SQUAD_DATABASE_URL": ("postgresql+psycopg://u:p@db/squad", "database_url",
                           "postgresql+psycopg://u:p@db/squad"),
    "USE_CELERY": ("false", "use_celery", False),
    "SQUAD_SOFT_TIME_LIMIT": ("50", "soft_time_limit", 50.0),
    "SQUAD_TIME_LIMIT": ("2000", "time_limit", 2000.0),
    "SQUAD_MAX_RETRIES": ("0", "max_retries", 0),
    "SQUAD_RETRY_BACKOFF": ("0.5", "retry_backoff", 0.5),
    "SQUAD_RETRY_BACKOFF_MAX": ("120", "retry_backoff_max", 120.0),
    "SQUAD_LOG_TTL": ("3600", "log_ttl", 3600),
    "SQUAD_API_TOKEN": ("s3cret", "api_token", "s3cret"),
    "SQUAD_WORKDIR": ("/tmp/squad-work", "workdir", Path("/tmp/squad-work")),
    "SQUAD_VISIBILITY_TIMEOUT": ("5000", "visibility_timeout", 5000.0),
    "SQUAD_STALL_TIMEOUT": ("0", "stall_timeout", 0.0),
    "SQUAD_BUDGET_USD": ("2.5", "budget_usd", 2.5),
    "SQUAD_REQUEUE_AFTER": ("15", "requeue_after", 15.0),
    "SQUAD_LEASE_S": ("6", "lease_s", 6.0),
}


@pytest.mark.parametrize("env_name", list(SPEC_ENV))
def test_every_spec_variable_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, env_name: str) -> None:
    raw, attr, expected = SPEC_ENV[env_name]
    monkeypatch.setenv(env_name, raw)
    assert getattr(load_settings(), attr) == expected


def test_all_spec_variables_together_form_one_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, (raw, _attr, _expected) in SPEC_ENV.items():
        monkeypatch.setenv(name, raw)
    s = load_settings()
    for _name, (_raw, attr, expected) in SPEC_ENV.items():
        assert getattr(s, attr) == expected, attr


@pytest.mark.parametrize("raw", ["true", "1", "yes", "TRUE"])
def test_use_celery_accepts_the_usual_true_spellings(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("USE_CELERY", raw)
    assert load_settings().use_celery is True


def test_secrets_are_masked_in_the_displayed_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUAD_API_TOKEN", "s3cret")
    monkeypatch.setenv("SQUAD_REDIS_URL", "redis://:hunter2@r.example:6379")
    shown = load_settings().display()
    assert shown["api_token"] == "***"
    assert "hunter2" not in str(shown)


# ---- derived URLs -------------------------------------------------------------------------------
def test_broker_results_and_events_are_db_0_1_2_of_the_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUAD_REDIS_URL", "redis://:pw@cache.example:6380")
    s = load_settings()
    assert s.broker == "redis://:pw@cache.example:6380/0"
    assert s.results == "redis://:pw@cache.example:6380/1"
    assert s.events == "redis://:pw@cache.example:6380/2"


def test_derived_urls_keep_tls_scheme_and_replace_a_db_in_the_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUAD_REDIS_URL", "rediss://cache.example:6380/7")
    s = load_settings()
    # rediss:// always verifies the server's certificate (a query option every Redis client reads)
    assert (s.broker, s.results, s.events) == (
        "rediss://cache.example:6380/0?ssl_cert_reqs=required", "rediss://cache.example:6380/1?ssl_cert_reqs=required",
        "rediss://cache.example:6380/2?ssl_cert_reqs=required")


def test_tls_settings_reach_every_rediss_url_and_leave_redis_urls_alone(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    monkeypatch.setenv("SQUAD_REDIS_URL", "rediss://:pw@cache.example:6380")
    monkeypatch.setenv("SQUAD_EVENTS_URL", "redis://events.example/5")
    monkeypatch.setenv("SQUAD_REDIS_TLS_CA_CERTS", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SQUAD_REDIS_TLS_CERTFILE", str(tmp_path / "client.pem"))
    s = load_settings()
    assert s.broker == (f"rediss://:pw@cache.example:6380/0?ssl_cert_reqs=required&ssl_ca_certs={tmp_path}/ca.pem"
                        f"&ssl_certfile={tmp_path}/client.pem")
    assert s.events == "redis://events.example/5"


def test_explicit_broker_result_and_events_urls_win_over_derived_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUAD_REDIS_URL", "redis://cache.example:6380")
    monkeypatch.setenv("SQUAD_BROKER_URL", "redis://broker.example/3")
    monkeypatch.setenv("SQUAD_RESULT_BACKEND", "rediss://:pw@results.example/4")
    monkeypatch.setenv("SQUAD_EVENTS_URL", "redis://events.example/5")
    s = load_settings()
    assert s.broker == "redis://broker.example/3"
    assert s.results == "rediss://:pw@results.example/4?ssl_cert_reqs=required"
    assert s.events == "redis://events.example/5"


def test_only_the_explicit_url_wins_the_others_stay_derived(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUAD_REDIS_URL", "redis://cache.example:6380")
    monkeypatch.setenv("SQUAD_EVENTS_URL", "redis://events.example/5")
    s = load_settings()
    assert s.broker == "redis://cache.example:6380/0"
    assert s.events == "redis://events.example/5"


# ---- visibility timeout -------------------------------------------------------------------------
def test_visibility_timeout_defaults_to_hard_limit_plus_600() -> None:
    assert load_settings().visibility_timeout_s == 1800 + 600


def test_visibility_timeout_default_follows_a_changed_hard_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUAD_TIME_LIMIT", "60")
    monkeypatch.setenv("SQUAD_SOFT_TIME_LIMIT", "30")
    assert load_settings().visibility_timeout_s == 660


def test_explicit_visibility_timeout_above_the_hard_limit_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUAD_VISIBILITY_TIMEOUT", "1801")
    assert load_settings().visibility_timeout_s == 1801


@pytest.mark.parametrize("value", ["1800", "100"])
def test_visibility_timeout_not_above_the_hard_limit_is_rejected(monkeypatch: pytest.MonkeyPatch,
                                                                 value: str) -> None:
    monkeypatch.setenv("SQUAD_VISIBILITY_TIMEOUT", value)
    with pytest.raises(ConfigError, match="visibility_timeout") as info:
        load_settings()
    assert "\n" not in str(info.value)


def test_soft_limit_above_the_hard_limit_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUAD_TIME_LIMIT", "100")
    with pytest.raises(ConfigError, match="soft_time_limit"):
        load_settings()


# ---- retry backoff ------------------------------------------------------------------------------
def test_retry_delay_doubles_per_retry_and_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUAD_RETRY_BACKOFF", "60")
    monkeypatch.setenv("SQUAD_RETRY_BACKOFF_MAX", "300")
    policy = RetryPolicy.for_card(load_settings(), CardSpec(card_id="A", title="a"))
    assert [policy.delay_s(n) for n in range(4)] == [60, 120, 240, 300]
    assert policy.delay_s(1, jitter=0.25) == 150


def test_a_card_s_own_limits_win_and_its_soft_limit_never_exceeds_its_hard_one() -> None:
    s = load_settings(time_limit=100, soft_time_limit=90, max_retries=3)
    assert s.limits_for(CardSpec(card_id="A", title="a")) == CardLimits(90, 100, 3)
    assert s.limits_for(CardSpec(card_id="B", title="b", time_limit=50, max_retries=0)) == CardLimits(50, 50, 0)


# ---- agents -------------------------------------------------------------------------------------
def test_agents_from_squad_toml_overlay_the_presets_and_squads_pick_agents() -> None:
    write_toml(Path("squad.toml"), """
default_agent = "claude"
[squads]
backend = "mine"
[agents.mine]
command = ["python3", "my_agent.py", "{card_id}", "{prompt_file}"]
prompt = "file"
parser = "plain"
env = { MY_FLAG = "1" }
resume = ["--resume", "{session_id}"]
""")
    s = load_settings()
    name, agent = agent_for(s, None, "backend")
    assert name == "mine"
    assert agent == AgentConfig(command=["python3", "my_agent.py", "{card_id}", "{prompt_file}"], prompt="file",
                                parser="plain", env={"MY_FLAG": "1"}, resume=["--resume", "{session_id}"])
    assert agent_for(s, None, None)[0] == "claude"
    assert agent_for(s, "demo", "backend")[0] == "demo"
    assert {"demo", "demo-flaky", "claude", "codex", "aider", "mine"} <= set(all_agents(s))


def test_unknown_agent_name_is_a_config_error_listing_the_configured_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown agent 'nope'.*demo"):
        agent_for(load_settings(), "nope", None)


def test_hooks_and_prompt_template_are_read_from_squad_toml() -> None:
    write_toml(Path("squad.toml"), 'prompt_template = "prompt.j2"\n[hooks]\nbefore_run = ["true"]\ntimeout = 5\n')
    s = load_settings()
    assert s.prompt_template == Path("prompt.j2")
    assert s.hooks.before_run == ["true"]
    assert s.hooks.timeout == 5


# ---- bad values: one ConfigError line -----------------------------------------------------------
BAD_ENV = [
    ({"SQUAD_MAX_RETRIES": "-1"}, "SQUAD_MAX_RETRIES"),
    ({"SQUAD_MAX_RETRIES": "many"}, "SQUAD_MAX_RETRIES"),
    ({"SQUAD_TIME_LIMIT": "0"}, "SQUAD_TIME_LIMIT"),
    ({"SQUAD_LEASE_S": "-5"}, "SQUAD_LEASE_S"),
    ({"SQUAD_STALL_TIMEOUT": "-1"}, "SQUAD_STALL_TIMEOUT"),
    ({"SQUAD_BUDGET_USD": "lots"}, "SQUAD_BUDGET_USD"),
    ({"SQUAD_REDIS_URL": "http://cache.example"}, "SQUAD_REDIS_URL"),
    ({"SQUAD_BROKER_URL": "amqp://mq.example"}, "SQUAD_BROKER_URL"),
    ({"SQUAD_DATABASE_URL": "mysql://db/squad"}, "SQUAD_DATABASE_URL"),
    ({"USE_CELERY": "maybe"}, "USE_CELERY"),
    ({"SQUAD_CORS_ORIGINS": "not json"}, "cors_origins"),
    ({"SQUAD_CARDS_QUEUE": "cards:2"}, "SQUAD_CARDS_QUEUE"),  # ':' names kombu's priority lists
    ({"SQUAD_MAINTENANCE_QUEUE": ""}, "SQUAD_MAINTENANCE_QUEUE"),
]


@pytest.mark.parametrize(("env", "names"), BAD_ENV, ids=[next(iter(e)) + "=" + v for e, _ in BAD_ENV
                                                          for v in e.values()])
def test_bad_env_value_is_one_config_error_line_naming_the_setting(monkeypatch: pytest.MonkeyPatch,
                                                                   env: dict[str, str], names: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert names in message
    assert "\n" not in message


BAD_TOML = [
    ('[agents.mine]\ncommand = "claude -p"\n', "agents.mine.command"),
    ('[agents.mine]\ncommand = []\n', "agents.mine.command"),
    ('[agents.mine]\ncommand = ["x"]\nparser = "xml"\n', "agents.mine.parser"),
    ('[agents.mine]\ncommand = ["x"]\nprompt = "pipe"\n', "agents.mine.prompt"),
    ('[agents.mine]\ncommand = ["x"]\nshell = true\n', "agents.mine.shell"),
    ('[hooks]\nbefore_run = "make"\n', "hooks.before_run"),
    ("max_retries = -1\n", "SQUAD_MAX_RETRIES"),
    ("max_retries = [\n", "invalid TOML"),
    ("this is not toml\n", "invalid TOML"),
]


@pytest.mark.parametrize(("text", "names"), BAD_TOML)
def test_bad_squad_toml_is_one_config_error_line(text: str, names: str) -> None:
    write_toml(Path("squad.toml"), text)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert names in str(info.value)
    assert "\n" not in str(info.value)


def test_settings_constructed_directly_still_validate() -> None:
    # Settings is also used directly by other modules: the same rules hold there.
    with pytest.raises(ValueError):
        Settings(max_retries=-1)


# ---- through the CLI: one line, exit 2, no traceback --------------------------------------------
def test_cli_with_a_bad_env_value_exits_2_with_one_line_and_no_traceback() -> None:
    # Given SQUAD_MAX_RETRIES=-1, When `squad card list`
    proc = run_cli("card", "list", env=squad_env(SQUAD_MAX_RETRIES="-1"))
    # Expect exit 2 and exactly one clear line
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "SQUAD_MAX_RETRIES" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_with_an_agent_command_given_as_a_string_exits_2_with_one_line() -> None:
    write_toml(Path("squad.toml"), '[agents.mine]\ncommand = "claude -p"\n')
    proc = run_cli("card", "list")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "agents.mine.command" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


# ---- [workspace] keys per process (docs/workspaces.md "Landing the work") -----------------------------------------
def test_every_workspace_key_is_settable_per_process_over_the_toml_section(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a squad.toml [workspace] section, and a few SQUAD_WORKSPACE_<KEY> variables of this process
    config = write_toml(tmp_path / "squad.toml", '[workspace]\nrepo = "/srv/a"\nbase = "dev"\nland = "merge"\n')
    monkeypatch.setenv("SQUAD_CONFIG", str(config))
    monkeypatch.setenv("SQUAD_WORKSPACE_REPO", "/srv/b")
    monkeypatch.setenv("SQUAD_WORKSPACE_REMOTE", "origin")
    monkeypatch.setenv("SQUAD_WORKSPACE_VERIFY", "pytest -q 'tests/a b'")
    monkeypatch.setenv("SQUAD_WORKSPACE_AFTER_LAND", '["gh", "pr", "close", "{branch}"]')
    monkeypatch.setenv("SQUAD_WORKSPACE_VERIFY_TIMEOUT", "30")
    ws = load_settings().workspace
    # Expect each variable over its key, the other keys of the section kept
    assert (ws.repo, ws.remote, ws.base, ws.land) == (Path("/srv/b"), "origin", "dev", "merge")
    assert ws.verify == ["pytest", "-q", "tests/a b"] and ws.after_land == ["gh", "pr", "close", "{branch}"]
    assert ws.verify_timeout == 30


@pytest.mark.parametrize(("name", "value", "message"), [
    ("SQUAD_WORKSPACE_LAND", "sideways", "workspace.land"),
    ("SQUAD_WORKSPACE_REMOTE", "--upload-pack=x", "workspace.remote"),
    ("SQUAD_WORKSPACE_VERIFY", "[not json", "SQUAD_WORKSPACE_VERIFY"),
])
def test_a_bad_workspace_variable_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                        message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()
