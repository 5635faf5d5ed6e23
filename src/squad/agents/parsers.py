"""Turn an agent's output lines into log messages, progress, usage and a verdict.

Progress steps: docs/architecture.md, "Card lifecycle".

Agents lie and differ: some print `::progress` markers, some only words, Claude Code prints JSON
events whose final `result` decides success. One parser per output style keeps the runner generic.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from squad.core.cards import Usage
from squad.core.constants import STEP_EXECUTING
from squad.core.errors import ConfigError

__all__ = [
    "ClaudeStreamJsonParser",
    "CodexJsonParser",
    "LineResult",
    "MarkersParser",
    "PlainParser",
    "ProgressParser",
    "make_parser",
    "valid_session_id",
]

AGENT_MIN_PROGRESS = 30
AGENT_MAX_PROGRESS = 99
ESTIMATE_START = 30
ESTIMATE_SPAN = 60
ESTIMATE_TAU_S = 120.0
READING_PROGRESS = 40
WRITING_PROGRESS = 70
STEP_MAX_CHARS = 80
SUMMARY_MAX_CHARS = 500
TOOL_RESULT_MAX_CHARS = 200

# Matched against the stripped line: no lazy group followed by `\s*$`, so the match is linear in
# the line's length (a hostile 64 KiB line of spaces cannot make it quadratic).
_MARKER_RE = re.compile(r"::progress\s+(\d{1,3})(?:\s+(.*))?", re.DOTALL)
#: What a session id must look like to reach a `resume` argv (no spaces, no leading "-" option).
SESSION_ID_RE = re.compile(r"[A-Za-z0-9._:][A-Za-z0-9._:-]{0,127}")
MAX_STORED_INT = 2**31 - 1  # the store's INTEGER columns
MAX_COST_USD = 1e9

# Claude Code tools, by the kind of work they show; the keyword levels apply to them too.
_READ_TOOLS = frozenset({"Read", "Grep", "Glob", "LS", "NotebookRead", "WebFetch", "WebSearch"})
_WRITE_TOOLS = frozenset({"Edit", "MultiEdit", "Write", "NotebookEdit"})
_TOOL_TARGET_KEYS = ("file_path", "notebook_path", "command", "pattern", "path", "url", "query")


@dataclass
class LineResult:
    """One parsed line: what to log and, when the line carried progress, the new progress and step.

    `warnings` are extra log lines about fields the parser had to drop or clamp.
    """

    message: str
    progress: int | None = None
    step: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: the log level of `message` when not the stream's own (e.g. WARNING for an agent's retried error)
    level: str | None = None


def valid_session_id(value: object) -> str | None:
    """`value` when it can safely be a `resume` argv item, else None."""
    return value if isinstance(value, str) and SESSION_ID_RE.fullmatch(value) else None


def _number(value: object, name: str, warnings: list[str], *, maximum: float) -> float | None:
    """A finite number clamped to [0, maximum]; anything else is dropped with a warning."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        warnings.append(f"warning: ignored {name}: not a number")
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        number = math.inf
    if not math.isfinite(number):
        if math.isnan(number):
            warnings.append(f"warning: ignored {name}: not a number (NaN)")
            return None
        number = maximum if number > 0 else 0.0
        warnings.append(f"warning: clamped {name}: infinite")
        return number
    if number < 0 or number > maximum:
        warnings.append(f"warning: clamped {name}: {number:g} outside 0..{maximum:g}")
        return min(max(number, 0.0), maximum)
    return number


def _count(value: object, name: str, warnings: list[str]) -> int | None:
    number = _number(value, name, warnings, maximum=MAX_STORED_INT)
    return None if number is None else int(number)


def _added(total: int | None, more: int | None) -> int | None:
    """A running token count plus `more` (None: nothing reported), capped to what the store holds."""
    return total if more is None else min(MAX_STORED_INT, (total or 0) + more)


def _clip(text: str, limit: int) -> str:
    """First line of `text`, at most `limit` characters, so steps stay one short line."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


class ProgressParser:
    """Markers and keywords for every agent; subclasses add their own output format."""

    name: ClassVar[str] = "base"

    def __init__(self) -> None:
        self.usage = Usage()
        self.progress: int = STEP_EXECUTING[0]
        self.step: str = STEP_EXECUTING[1]

    # ---- public API -----------------------------------------------------------------------
    def feed(self, line: str, stream: str) -> LineResult:
        """Parse one output line (`stream` is "stdout" or "stderr")."""
        return self._text_line(line)

    def estimate(self, elapsed_s: float) -> int | None:
        """Time-based progress for agents that say nothing: 30 rising toward, never above, 90."""
        if elapsed_s < 0:
            return None
        return int(ESTIMATE_START + ESTIMATE_SPAN * (1.0 - math.exp(-elapsed_s / ESTIMATE_TAU_S)))

    def verdict(self, exit_code: int) -> str | None:
        """None when the attempt succeeded, else the error text."""
        return None if exit_code == 0 else f"exit code {exit_code}"

    def advance(self, progress: int, step: str | None = None) -> LineResult | None:
        """Raise progress (clamped to 30..99, never down); a LineResult when progress or step changed.

        The runner uses it for the time-based estimate so one object owns "never goes down".
        """
        value = max(self.progress, min(AGENT_MAX_PROGRESS, max(AGENT_MIN_PROGRESS, progress)))
        new_step = step or self.step
        if value == self.progress and new_step == self.step:
            return None
        self.progress, self.step = value, new_step
        return LineResult(message="", progress=value, step=new_step)

    # ---- shared pieces --------------------------------------------------------------------
    def _report(self, message: str, progress: int, step: str | None) -> LineResult:
        """A LineResult carrying (clamped, monotonic) progress, even when it did not change."""
        self.advance(progress, step)
        return LineResult(message=message, progress=self.progress, step=self.step)

    def _text_line(self, line: str) -> LineResult:
        """Marker first, then keywords, else just a log line."""
        stripped = line.strip()
        marker = _MARKER_RE.fullmatch(stripped) if stripped.startswith("::progress") else None
        if marker:
            step = marker.group(2) or None
            return self._report(line, int(marker.group(1)), _clip(step, STEP_MAX_CHARS) if step else None)
        lowered = line.lower()
        if "writing" in lowered:
            return self._report(line, WRITING_PROGRESS, _clip(line, STEP_MAX_CHARS))
        if "reading" in lowered:
            return self._report(line, READING_PROGRESS, _clip(line, STEP_MAX_CHARS))
        return LineResult(message=line)


class MarkersParser(ProgressParser):
    """Agents that print `::progress N step` markers (and keywords)."""

    name: ClassVar[str] = "markers"


class PlainParser(ProgressParser):
    """Agents with free-form output: keywords, markers if any, then the time estimate."""

    name: ClassVar[str] = "plain"


@dataclass
class _ResultEvent:
    """The fields of Claude's final `result` event that decide the verdict."""

    subtype: str
    is_error: bool
    text: str


def json_event(line: str, stream: str) -> dict[str, Any] | None:
    """The JSON object an agent printed on one stdout line, or None (the line is then plain text)."""
    if stream != "stdout" or not line.lstrip().startswith("{"):
        return None
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's stack
        return None
    return event if isinstance(event, dict) else None


class ClaudeStreamJsonParser(ProgressParser):
    """Claude Code `--output-format stream-json`: the final `result` event decides, not the exit code."""

    name: ClassVar[str] = "claude-stream-json"

    def __init__(self) -> None:
        super().__init__()
        self.result: _ResultEvent | None = None
        self._cwd: str | None = None

    def feed(self, line: str, stream: str) -> LineResult:
        """Parse one JSON event from stdout; anything else is a text line."""
        event = json_event(line, stream)
        if event is None:
            return self._text_line(line)
        kind = event.get("type")
        if kind == "system":
            return self._system(event)
        if kind == "assistant":
            return self._assistant(event)
        if kind == "user":
            return self._user(event)
        if kind == "result":
            return self._result(event)
        return LineResult(message=f"event: {_clip(kind, STEP_MAX_CHARS)}" if isinstance(kind, str)
                          else _clip(line, SUMMARY_MAX_CHARS))

    def verdict(self, exit_code: int) -> str | None:
        """Error from the `result` event (even with exit 0); no such event is an error too."""
        result = self.result
        if result is None:
            return "agent ended without a result event"
        if result.is_error or result.subtype != "success":
            if result.text and result.subtype not in ("success", ""):
                return f"{result.subtype}: {result.text}"
            return result.text or result.subtype or "agent reported an error"
        return None if exit_code == 0 else f"exit code {exit_code}"

    # ---- events ---------------------------------------------------------------------------
    def _session(self, event: dict[str, Any], warnings: list[str]) -> str | None:
        """The event's session id when it is safe to keep (and later to pass to `resume`)."""
        raw = event.get("session_id")
        if raw is None or raw == "":
            return None
        session = valid_session_id(raw)
        if session is None:
            warnings.append(f"warning: ignored session_id: must match {SESSION_ID_RE.pattern}"
                            f" (got {len(raw) if isinstance(raw, str) else type(raw).__name__}"
                            f"{' chars' if isinstance(raw, str) else ''})")
            return None
        self.usage = replace(self.usage, session_id=session)
        return session

    def _system(self, event: dict[str, Any]) -> LineResult:
        subtype = _clip(_str(event.get("subtype")), STEP_MAX_CHARS) or "?"
        warnings: list[str] = []
        session = self._session(event, warnings)
        if subtype == "init":
            self._cwd = _str(event.get("cwd")) or None
            model = _clip(_str(event.get("model")), STEP_MAX_CHARS)
            return LineResult(message=f"session {session or '?'} started" + (f" ({model})" if model else ""),
                              warnings=warnings)
        return LineResult(message=f"system: {subtype}", warnings=warnings)

    def _assistant(self, event: dict[str, Any]) -> LineResult:
        message = event.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        parts: list[str] = []
        tool_step: str | None = None
        tool_level = self.progress
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                text = _str(block.get("text")).strip()
                if text:
                    parts.append(f"assistant: {text[:SUMMARY_MAX_CHARS]}")
            elif block.get("type") == "tool_use":
                tool_step = self._tool_step(block)
                parts.append(f"tool: {tool_step}")
                name = _str(block.get("name"))
                if name in _WRITE_TOOLS:
                    tool_level = max(tool_level, WRITING_PROGRESS)
                elif name in _READ_TOOLS:
                    tool_level = max(tool_level, READING_PROGRESS)
            elif block.get("type") == "thinking":
                parts.append("assistant: (thinking)")
        summary = " | ".join(parts) or "assistant: (empty message)"
        if tool_step is not None:
            return self._report(summary, tool_level, tool_step)
        return LineResult(message=summary)

    def _user(self, event: dict[str, Any]) -> LineResult:
        message = event.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                label = "tool error" if block.get("is_error") else "tool result"
                return LineResult(message=f"{label}: {_clip(_flatten(block.get('content')), TOOL_RESULT_MAX_CHARS)}")
        return LineResult(message="user: " + _clip(_flatten(content), TOOL_RESULT_MAX_CHARS))

    def _result(self, event: dict[str, Any]) -> LineResult:
        subtype = _str(event.get("subtype"))
        is_error = bool(event.get("is_error"))
        text = _str(event.get("result"))
        if not text and isinstance(event.get("errors"), list):
            text = "; ".join(_str(e) for e in event["errors"] if e)
        self.result = _ResultEvent(subtype=subtype, is_error=is_error, text=text.strip())
        warnings: list[str] = []
        self._session(event, warnings)
        reported: dict[str, Any] = {
            "cost_usd": _number(event.get("total_cost_usd", event.get("cost_usd")), "total_cost_usd", warnings,
                                maximum=MAX_COST_USD),
            "num_turns": _count(event.get("num_turns"), "num_turns", warnings)}
        tokens = event.get("usage")
        if isinstance(tokens, dict):
            reported.update(_claude_tokens(tokens, warnings))
        usage = self.usage = replace(self.usage, **{k: v for k, v in reported.items() if v is not None})
        ok = not is_error and subtype == "success"
        details = [f"{usage.num_turns} turns" if usage.num_turns is not None else "",
                   f"${usage.cost_usd:.4f}" if usage.cost_usd is not None else ""]
        head = f"result: {_clip(subtype, STEP_MAX_CHARS) or '?'}" + ("" if ok else " (error)")
        extra = ", ".join(d for d in details if d)
        body = _clip(text, SUMMARY_MAX_CHARS)
        return LineResult(message=head + (f", {extra}" if extra else "") + (f": {body}" if body else ""),
                          warnings=warnings)

    def _tool_step(self, block: dict[str, Any]) -> str:
        """`Edit src/app.py`: the tool and its target, paths relative to the session's cwd."""
        name = _str(block.get("name")) or "tool"
        params = block.get("input")
        target = ""
        if isinstance(params, dict):
            for key in _TOOL_TARGET_KEYS:
                value = params.get(key)
                if isinstance(value, str) and value.strip():
                    target = value.strip()
                    break
        if target and self._cwd and target.startswith(self._cwd.rstrip("/") + "/"):
            target = target[len(self._cwd.rstrip("/")) + 1 :]
        return _clip(f"{name} {target}" if target else name, STEP_MAX_CHARS)


def _claude_tokens(tokens: dict[str, Any], warnings: list[str]) -> dict[str, int | None]:
    """A `result` event's `usage` as run columns. Its three input counts are disjoint (the Anthropic
    API's `input_tokens` are those after the last cache breakpoint), so every prompt token the model
    read is their sum: `input_tokens` records the sum, the cache columns the split."""
    fresh, written, read = (_count(tokens.get(name), name, warnings) for name in
                            ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
    total = None
    for part in (fresh, written, read):
        total = _added(total, part)
    return {"input_tokens": total, "output_tokens": _count(tokens.get("output_tokens"), "output_tokens", warnings),
            "cache_read_tokens": read, "cache_creation_tokens": written}


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def error_text(value: object) -> str:
    """An agent's error text; one that is itself a JSON document (an API's error body, as Codex
    passes it on) is shown by its message: `{"error": {"message": …}}`, `{"message": …}` or
    `{"detail": …}`, with the HTTP status when the document has one."""
    text = _str(value).strip()
    if not text.startswith("{"):
        return text
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return text
    if not isinstance(doc, dict):
        return text
    inner = doc.get("error")
    message = next((m.strip() for m in (inner.get("message") if isinstance(inner, dict) else inner,
                                        doc.get("message"), doc.get("detail")) if isinstance(m, str) and m.strip()),
                   None)
    if message is None:
        return text
    status = doc.get("status")
    return f"{message} (status {status})" if isinstance(status, int) and not isinstance(status, bool) else message


def _flatten(content: object) -> str:
    """Tool results are a string or a list of text blocks; show their text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # text blocks, and images (a screenshot Read) as a word
        return " ".join("[image]" if b.get("type") == "image" else _str(b.get("text"))
                        for b in content if isinstance(b, dict))
    return ""


class CodexJsonParser(ProgressParser):
    """Codex `codex exec --json` JSONL: `thread.started` gives the session, `item.*` the steps,
    `turn.completed` the tokens.

    As Codex itself decides: the turn's end decides the attempt. `turn.completed` succeeds (with exit
    code 0), `turn.failed` fails with its error; a stream that ends without either fails with the
    last error event, if any. A top-level `error` event is not an end: Codex prints one for each
    retried stream error ("Reconnecting... 2/5 (…)") and may still complete the turn, so it is a
    WARNING line, kept only as the reason should the turn not complete.
    """

    name: ClassVar[str] = "codex-json"

    def __init__(self) -> None:
        super().__init__()
        self.completed_turns = 0
        self.turn_end: str | None = None  # "completed" or "failed": how the last turn ended
        self.error: str | None = None  # the failed turn's error, else the last error event's

    def feed(self, line: str, stream: str) -> LineResult:
        """Parse one JSON event from stdout; anything else is a text line."""
        event = json_event(line, stream)
        if event is None:
            return self._text_line(line)
        kind = _str(event.get("type"))
        if kind in ("thread.started", "thread.resumed"):
            thread = event.get("thread_id")
            session = valid_session_id(thread)
            warnings = [] if session or not thread else [
                f"warning: ignored thread_id: must match {SESSION_ID_RE.pattern}"]
            self.usage = replace(self.usage, session_id=session or self.usage.session_id)
            return LineResult(message=f"session {self.usage.session_id or '?'} started", warnings=warnings)
        if kind == "turn.started":
            return LineResult(message="turn started")
        if kind == "turn.completed":
            return self._turn_completed(event)
        if kind == "turn.failed":
            err = event.get("error")
            text = error_text(err.get("message") if isinstance(err, dict) else err)
            self.turn_end, self.error = "failed", text or self.error or "turn failed"
            return LineResult(message=f"turn failed: {_clip(self.error, SUMMARY_MAX_CHARS)}")
        if kind == "error":
            self.error = error_text(event.get("message")) or "agent reported an error"
            return LineResult(message=f"error: {_clip(self.error, SUMMARY_MAX_CHARS)}", level="WARNING")
        if kind.startswith("item."):
            item = event.get("item")
            return self._item(kind, item if isinstance(item, dict) else {})
        return LineResult(message=f"event: {kind or '?'}")

    def verdict(self, exit_code: int) -> str | None:
        """The last turn's end decides; without one, the last error event (or that no turn ended)."""
        if self.turn_end == "failed":
            return self.error or "turn failed"
        if self.turn_end is None:
            return self.error or "agent ended without a completed turn"
        return None if exit_code == 0 else f"exit code {exit_code}"

    def _turn_completed(self, event: dict[str, Any]) -> LineResult:
        self.completed_turns += 1
        self.turn_end = "completed"
        tokens = event.get("usage")
        warnings: list[str] = []
        counts: dict[str, int | None] = {}
        if isinstance(tokens, dict):
            # Codex's input_tokens already count the cached ones (cached_input_tokens <= input_tokens).
            for ours, theirs in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                                 ("cache_read_tokens", "cached_input_tokens"),
                                 ("cache_creation_tokens", "cache_write_input_tokens")):
                counts[ours] = _count(tokens.get(theirs), theirs, warnings)
        totals: dict[str, Any] = {name: _added(getattr(self.usage, name), more) for name, more in counts.items()}
        usage = self.usage = replace(self.usage, num_turns=self.completed_turns, **totals)
        cached = f" ({usage.cache_read_tokens} cached)" if usage.cache_read_tokens else ""
        return LineResult(message=f"turn completed: {usage.input_tokens or 0} input{cached}, "
                                  f"{usage.output_tokens or 0} output tokens", warnings=warnings)

    def _item(self, kind: str, item: dict[str, Any]) -> LineResult:
        itype = _str(item.get("type") or item.get("item_type"))
        done = kind == "item.completed"
        if itype == "agent_message":
            text = _str(item.get("text")).strip()
            return LineResult(message=f"assistant: {text[:SUMMARY_MAX_CHARS]}" if text else "assistant: (empty)")
        if itype == "reasoning":
            return LineResult(message="assistant: (thinking)")
        if itype == "command_execution":
            command = _str(item.get("command"))
            step = _clip(f"run {command}", STEP_MAX_CHARS)
            if done:
                code = item.get("exit_code")
                out = _clip(_str(item.get("aggregated_output")), TOOL_RESULT_MAX_CHARS)
                return LineResult(message=f"command exited {code}: {step}" + (f": {out}" if out else ""))
            return self._report(f"tool: {step}", READING_PROGRESS, step)
        if itype == "file_change":
            changes = item.get("changes")
            paths = [_str(c.get("path")) for c in changes if isinstance(c, dict)] if isinstance(changes, list) else []
            step = _clip("edit " + ", ".join(p for p in paths if p), STEP_MAX_CHARS) if paths else "edit files"
            return self._report(f"tool: {step}", WRITING_PROGRESS, step)
        if itype == "mcp_tool_call":
            step = _clip(f"{_str(item.get('server'))}.{_str(item.get('tool'))}", STEP_MAX_CHARS)
            return self._report(f"tool: {step}", READING_PROGRESS, step)
        if itype == "web_search":
            step = _clip(f"search {_str(item.get('query'))}", STEP_MAX_CHARS)
            return self._report(f"tool: {step}", READING_PROGRESS, step)
        if itype == "todo_list":
            todos = item.get("items")
            n = len(todos) if isinstance(todos, list) else 0
            return LineResult(message=f"plan: {n} step(s)")
        if itype == "error":
            # "a non-fatal error surfaced as an item" (Codex's own words): a warning, never the verdict
            return LineResult(message=f"item error: {_clip(error_text(item.get('message')), SUMMARY_MAX_CHARS)}",
                              level="WARNING")
        return LineResult(message=f"{kind}: {itype or '?'}")


_PARSERS: dict[str, type[ProgressParser]] = {
    cls.name: cls for cls in (MarkersParser, PlainParser, ClaudeStreamJsonParser, CodexJsonParser)
}


def make_parser(name: str) -> ProgressParser:
    """A fresh parser for one attempt; unknown names are a configuration error."""
    try:
        return _PARSERS[name]()
    except KeyError:
        raise ConfigError(f"unknown parser {name!r} (known: {', '.join(sorted(_PARSERS))})") from None
