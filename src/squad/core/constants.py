"""Every Redis key, stream name, queue name and fixed duration, in one place (units in the name)."""

from __future__ import annotations

VERSION = "0.1.0"
#: What `squad version` and `squad --version` print (`squad.entry` answers both without the Typer app).
VERSION_LINES = {"version": f"{VERSION}\n", "--version": f"squad {VERSION}\n"}

# Redis streams (docs/api.md "WebSocket").
TASK_UPDATES_STREAM = "task_updates"
#: status events that may give an orchestrator pass something to do, `card_id` and `status` only
SETTLED_STREAM = "settled"
SETTLED_MAXLEN = 10_000
TASK_UPDATES_MAXLEN = 100_000
#: the most card ids one `added` event names: a batch of more new cards writes one event per this many
ADDED_EVENT_MAX_IDS = 1000
TASK_LOGS_PREFIX = "task:logs:"
#: the running orchestrators (a set of ids) and each one's heartbeat (`orchestrator:<id>`, with a TTL)
ORCHESTRATORS_KEY = "orchestrators"
ORCHESTRATOR_PREFIX = "orchestrator:"
TASK_LOGS_MAXLEN = 20_000
# Redis memory bounds (docs/security.md): a card's live log holds at most TASK_LOGS_MAXLEN entries and
# about TASK_LOGS_MAX_BYTES (each entry at most LIVE_LOG_ENTRY_MAX_CHARS); a log event on the shared
# stream carries at most LOG_EVENT_MAX_CHARS of its line. Archived logs keep the full lines.
TASK_LOGS_MAX_BYTES = 8 * 1024 * 1024
TASK_LOGS_MIN_ENTRIES = 100
LIVE_LOG_ENTRY_MAX_CHARS = 4096
LOG_EVENT_MAX_CHARS = 1024
EMBEDDED_REDIS_MAXMEMORY = "512mb"

# Celery.
CARDS_QUEUE = "cards"
MAINTENANCE_QUEUE = "maintenance"
#: A queue name squad accepts (`SQUAD_CARDS_QUEUE`): no ':' (kombu's separator of priority lists)
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
#: The message header naming the store (its instance id) a card's message belongs to
STORE_HEADER = "squad_store"
EXECUTE_TASK_NAME = "squad.execute_card_task"
CLEANUP_TASK_NAME = "squad.cleanup_old_results"
RECONCILE_TASK_NAME = "squad.reconcile"
PRIORITY_STEPS = list(range(10))
KOMBU_UNACKED_KEY = "unacked"
KOMBU_UNACKED_INDEX_KEY = "unacked_index"  # delivery tag -> when it was delivered (kombu's clock, seconds)

# Fixed progress steps (docs/architecture.md "Card lifecycle").
STEP_LOADING = (0, "loading card")
STEP_SELECTING = (10, "selecting agent")
STEP_IN_PROGRESS = (15, "marked IN_PROGRESS")
STEP_PROMPT = (20, "building prompt")
STEP_STARTING = (25, "starting agent")
STEP_EXECUTING = (30, "agent executing")
STEP_DONE = (100, "done")

# Runner. A line is held (and parsed: a Claude tool result or image can be megabytes of JSON) up to
# MAX_LINE_BYTES, the rest counted and dropped; what is logged of it is cut at LOG_LINE_MAX_BYTES.
MAX_LINE_BYTES = 16 * 1024 * 1024
LOG_LINE_MAX_BYTES = 64 * 1024
KILL_GRACE_S = 5.0
CANCEL_POLL_S = 0.5
ARCHIVE_MAX_BYTES = 4 * 1024 * 1024

# Throttles and loops.
PROGRESS_MIN_INTERVAL_S = 2.0
STORE_PROGRESS_INTERVAL_S = 1.0
LOG_FLUSH_INTERVAL_S = 0.2
LOG_FLUSH_LINES = 500
LOG_EVENTS_PER_BATCH = 100
REDIS_SOCKET_TIMEOUT_S = 5.0
REDIS_CONNECT_TIMEOUT_S = 2.0
HEALTH_PROBE_TIMEOUT_S = 1.0
RECONCILE_INTERVAL_S = 5.0
CLEANUP_INTERVAL_S = 3600.0
RESULT_EXPIRES_S = 86_400
WORKER_MAX_MEMORY_KIB = 512 * 1024  # a pool process above this is replaced after its task

# Worker supervision.
SUPERVISOR_BACKOFF_START_S = 1.0
SUPERVISOR_BACKOFF_MAX_S = 30.0

#: team use (docs/team.md): the periodic pass that runs schedules and delivers notifications
TEAM_TASK_NAME = "squad.team_pass"
TEAM_INTERVAL_S = 5.0

#: What squad says (logs, `squad status`) once Redis refuses writes for memory
REDIS_FULL_HINT = ("Redis is full (maxmemory reached with noeviction): live logs and events are not being"
                   " written; raise maxmemory, lower SQUAD_LOG_TTL, or delete old task:logs:* streams")
