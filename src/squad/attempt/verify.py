"""The verify gate: `[workspace] verify` (or a card's `verify`) run in the worktree after a successful
agent and its auto-commit, and on a landing's result (docs/workspaces.md "Verify").

It runs through the agent's own spawning path (`agents.runner.run_agent`): its own process group,
the same environment rules, the same limits machinery (its own timeout, `verify_timeout`), ended on
cancel through the same observer. Only the tail of its output is kept (`VERIFY_OUTPUT_MAX_BYTES`); its
lines also go to the card's log, prefixed `[verify]`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from squad.agents.parsers import make_parser
from squad.agents.runner import Limits, run_agent
from squad.agents.sandbox import Sandbox
from squad.core.cards import Card
from squad.core.settings import Settings

__all__ = ["VERIFY_OUTPUT_MAX_BYTES", "VerifyResult", "run_verify", "verify_argv"]

VERIFY_OUTPUT_MAX_BYTES = 64 * 1024
LineSink = Callable[[str, str], None]


@dataclass(frozen=True)
class VerifyResult:
    """How verify ended: `error` is None when it passed (exit 0)."""

    exit_code: int | None
    output: str
    error: str | None

    @property
    def passed(self) -> bool:
        """Exit code 0 and no limit hit."""
        return self.error is None


def verify_argv(settings: Settings, card: Card) -> list[str] | None:
    """The card's own `verify`, else `[workspace] verify` (None: no gate)."""
    return card.verify or settings.workspace.verify


class _Tail:
    """The last VERIFY_OUTPUT_MAX_BYTES of the output's lines (stdout and stderr interleaved)."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque()
        self.size = 0
        self.dropped = 0

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.size += len(line.encode("utf-8", "replace")) + 1
        while self.size > VERIFY_OUTPUT_MAX_BYTES and len(self.lines) > 1:
            gone = self.lines.popleft()
            self.size -= len(gone.encode("utf-8", "replace")) + 1
            self.dropped += 1

    def text(self) -> str:
        head = f"[{self.dropped} earlier lines not kept]\n" if self.dropped else ""
        return head + "\n".join(self.lines)


class _VerifyObserver:
    """Lines to the tail and to the card's log; progress ignored; `stop` says when to end it (cancel)."""

    def __init__(self, on_line: LineSink, stop: Callable[[], str | None]) -> None:
        self.tail = _Tail()
        self.on_line_sink, self.stop = on_line, stop

    def on_line(self, level: str, message: str) -> None:
        self.tail.add(message)
        self.on_line_sink(level, f"[verify] {message}")

    def on_progress(self, progress: int, step: str) -> None:
        return None

    def stop_reason(self) -> str | None:
        return self.stop()


def run_verify(argv: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float, on_line: LineSink,
               stop: Callable[[], str | None] = lambda: None, sandbox: Sandbox | None = None) -> VerifyResult:
    """Run verify to its end, its timeout or a cancel (`stop` returns a reason), inside `sandbox`."""
    observer = _VerifyObserver(on_line, stop)
    on_line("INFO", f"verify: {' '.join(argv)}")
    result = run_agent(argv, cwd=cwd, env=env, stdin_data=None, parser=make_parser("plain"),
                       limits=Limits(soft_time_limit_s=timeout_s, time_limit_s=timeout_s), observer=observer,
                       sandbox=sandbox)
    output = observer.tail.text()
    if result.outcome == "succeeded":
        on_line("INFO", "verify passed")
        return VerifyResult(exit_code=0, output=output, error=None)
    if result.outcome in ("failed",) and result.exit_code is not None:
        error = f"verify failed (exit {result.exit_code})"
    elif result.outcome in ("timeout", "soft_timeout"):
        error = f"verify timed out after {timeout_s:g}s"
    elif result.outcome == "cancelled":
        error = result.error or "cancelled"
    else:
        error = f"verify failed: {result.error}"
    on_line("ERROR", error)
    return VerifyResult(exit_code=result.exit_code, output=output, error=error)
