"""An attempt's log as the store keeps it: bounded (head and tail), rebuilt from the live log when its
worker died, and cut short when the database disk is full.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import structlog

from squad.core.constants import ARCHIVE_MAX_BYTES
from squad.live.connections import STREAM_START
from squad.live.events import EventBus, format_log_line
from squad.store.card_store import RunOutcome

log = structlog.get_logger(__name__)
LIVE_LOG_PAGE = 1000


DISK_FULL_LOG_BYTES = 16 * 1024  # what a run keeps of its log when the database is full


class LogArchive:
    """The archived log of one attempt, bounded: the first half of the cap and the last half.

    Errors are usually at the end of a log, so an oversized log keeps its head *and* its tail,
    with a marker line saying how many lines and bytes were cut in between.
    """

    def __init__(self, max_bytes: int = ARCHIVE_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.head: list[str] = []
        self.head_bytes = 0
        self.tail: deque[tuple[str, int]] = deque()
        self.tail_bytes = 0
        self.cut_lines = 0
        self.cut_bytes = 0

    def add(self, entry: str) -> None:
        """One formatted log line."""
        size = len(entry.encode("utf-8", errors="replace")) + 1
        if not self.tail and self.head_bytes + size <= self.max_bytes // 2:
            self.head.append(entry)
            self.head_bytes += size
            return
        self.tail.append((entry, size))
        self.tail_bytes += size
        while self.tail_bytes > self.max_bytes // 2 and self.tail:
            _old, old_size = self.tail.popleft()
            self.tail_bytes -= old_size
            self.cut_lines += 1
            self.cut_bytes += old_size

    def text(self) -> str:
        """Head, the cut marker (if anything was cut), tail."""
        parts = list(self.head)
        if self.cut_lines:
            parts.append(f"[… {self.cut_lines} lines ({self.cut_bytes} bytes) cut: the log outgrew "
                         f"{self.max_bytes} bytes; its head and tail are kept]")
        parts.extend(entry for entry, _size in self.tail)
        return "\n".join(parts)


def log_tail(text: str, max_bytes: int) -> str:
    """The end of a log (where errors are), at most about `max_bytes`, with a marker when cut."""
    if len(text.encode()) <= max_bytes:
        return text
    tail = text.encode()[-max_bytes:].decode(errors="ignore")
    return f"[… log cut to its last {max_bytes} bytes: the database disk is full]\n{tail}"


def disk_full_outcome(outcome: RunOutcome, exc: BaseException) -> RunOutcome:
    """A failed, retryable outcome with a short log: what still fits when the database is full."""
    reason = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
    return replace(outcome, succeeded=False, cancelled=False, retryable=True,
                   error=f"could not record the attempt: database disk full ({reason})",
                   log=log_tail(outcome.log, DISK_FULL_LOG_BYTES))


def live_log_archive(events: EventBus | None, card_id: str, task_id: str | None) -> str:
    """What the card's live log (Redis) kept of one attempt, as an archive ('' without Redis)."""
    if events is None or not task_id:
        return ""
    archive = LogArchive()
    after: str | None = None
    try:
        while True:
            page = events.read_logs(card_id, after=after or STREAM_START, limit=LIVE_LOG_PAGE)
            for entry in page:
                if entry.get("task_id") == task_id:
                    archive.add(format_log_line(entry.get("timestamp", ""), entry.get("level", "INFO"),
                                                entry.get("message", "")))
            if len(page) < LIVE_LOG_PAGE:
                break
            after = page[-1]["id"]
    except Exception as exc:  # Redis down: the run is still closed, without its log
        log.warning("live log not archived", card_id=card_id, error=str(exc))
    return archive.text()
