"""The events' schema: each constructor of `squad.live.events` against docs/api.md "WebSocket".

The table, the examples and the greeting of the doc are parsed (tests/support/event_contract.py) and
compared with what the constructors write to the stream and what a reader decodes from it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from squad.core.statuses import Status
from squad.live import events
from squad.live.events import (
    Event,
    added_event,
    answer_event,
    connected_event,
    decode_event,
    log_event,
    note_event,
    progress_event,
    question_event,
    status_event,
)
from support.event_contract import (
    EVERY_EVENT,
    documented_examples,
    documented_fields,
    documented_greeting,
    documented_lists,
    documented_numbers,
    event_fields,
    problems,
)

#: Per type: the constructor with only what it needs, and with every field it can carry.
Build = Callable[[], Event]
CONSTRUCTORS: dict[str, tuple[Build, Build]] = {
    "status": (lambda: status_event("API-1", Status.TODO),
               lambda: status_event("API-1", Status.FAILED, "t-1", attempt=2, worker="w1@host",
                                    error="agent exited 3", event_id="tok:9")),
    "progress": (lambda: progress_event("API-1", "t-1", progress=45, current_step="analysing", elapsed=12.4,
                                        worker="w1@host"),
                 lambda: progress_event("API-1", "t-1", progress=45, current_step="analysing", elapsed=12.4,
                                        worker="w1@host", event_id="tok:7")),
    "log": (lambda: log_event("API-1", "t-1", level="INFO", message="reading src/app.py"),
            lambda: log_event("API-1", "t-1", level="INFO", message="[400 more lines in the card's log]",
                              timestamp="2026-11-30T04:00:00.000+00:00", skipped=400, event_id="tok:8")),
    "question": (lambda: question_event("API-1", "t-1", question="Keep the v1 route?"),
                 lambda: question_event("API-1", "t-1", question="Keep the v1 route?", choices=["yes", "no"],
                                        attempt=1, event_id="tok:9")),
    "answer": (lambda: answer_event("API-1", "t-1", answer="yes"),
               lambda: answer_event("API-1", "t-1", answer="yes", by="cli:ann", event_id="tok:10")),
    "note": (lambda: note_event("API-1", "t-1", message="the v1 route stays"),
             lambda: note_event("API-1", "t-1", message="the v1 route stays", event_id="tok:12")),
    "added": (lambda: added_event(["API-2", "API-3"]), lambda: added_event(["API-2", "API-3"], event_id="tok:1")),
}


def received(event: Event) -> dict[str, object]:
    """The event as a WebSocket client gets it: decoded, with a stream id."""
    return decode_event("1732890001234-0", event)


@pytest.mark.parametrize("event_type", sorted(CONSTRUCTORS))
def test_each_event_type_has_exactly_the_fields_docs_api_md_lists(event_type: str) -> None:
    least, most = CONSTRUCTORS[event_type]
    fields = event_fields(event_type)
    assert set(received(least())) == fields.always
    assert set(received(most())) == fields.all
    assert problems(received(least())) == [] and problems(received(most())) == []
    assert least()["type"] == most()["type"] == event_type


def test_every_event_type_is_documented_and_every_documented_type_has_a_constructor() -> None:
    documented = set(documented_fields()) - {EVERY_EVENT}
    constructors = {name for name, value in vars(events).items()
                    if name.endswith("_event") and not name.startswith("_") and callable(value)}
    assert documented == set(CONSTRUCTORS)
    assert constructors - {"decode_event"} == {f"{t}_event" for t in documented} | {"connected_event"}


def test_the_documented_numbers_are_the_fields_readers_decode_as_numbers() -> None:
    assert documented_numbers() == set(events.NUMERIC_FIELDS)
    assert documented_lists() == set(events.LIST_FIELDS)


def test_the_examples_of_docs_api_md_are_events_the_constructors_can_write() -> None:
    examples = documented_examples()
    assert {e["type"] for e in examples} == set(CONSTRUCTORS)
    for example in examples:
        assert problems(example) == [], example
        written = received(CONSTRUCTORS[example["type"]][1]())
        assert {k: type(v) for k, v in example.items()} == {k: type(written[k]) for k in example}, example


def test_the_first_message_is_the_documented_greeting() -> None:
    greeting = connected_event()
    assert set(greeting) == set(documented_greeting())
    assert greeting["type"] == "connected" and greeting["message"] and greeting["timestamp"]


def test_constructors_write_the_flat_strings_of_the_stream_in_a_fixed_order() -> None:
    # The stream holds strings: numbers as JSON, a missing optional field left out, no task as "".
    event = status_event("API-1", Status.RETRYING, None, attempt=2, error="agent exited 3")
    assert list(event) == ["type", "card_id", "task_id", "timestamp", "status", "attempt", "error"]
    assert (event["task_id"], event["status"], event["attempt"]) == ("", "RETRYING", "2")
    line = log_event("API-1", "t-1", level="STDERR", message="oops", timestamp="2026-11-30T04:00:00.000+00:00",
                     event_id="tok:3")
    assert line == {"type": "log", "card_id": "API-1", "task_id": "t-1", "timestamp": "2026-11-30T04:00:00.000+00:00",
                    "event_id": "tok:3", "level": "STDERR", "message": "oops"}
    progress = progress_event("API-1", "t-1", progress=45, current_step="x", elapsed=12.4, worker="w")
    assert (progress["progress"], progress["elapsed"]) == ("45", "12.4")
    assert received(progress)["progress"] == 45 and received(progress)["elapsed"] == 12.4


def test_a_field_the_doc_does_not_list_or_a_wrong_type_is_a_problem() -> None:
    # The check the integration tests run on real events finds drift in either direction.
    good = received(status_event("API-1", Status.DONE, "t-1", attempt=1))
    assert problems(good) == []
    assert problems({**good, "marker": "x"}) == ["undocumented marker"]
    assert problems({k: v for k, v in good.items() if k != "status"}) == ["missing status"]
    assert problems({**good, "attempt": "1"}) == ["attempt is str, the doc says a number"]
    assert problems({**good, "type": "shout"}) == ["type 'shout' is not documented"]


def test_cards_added_together_are_named_by_one_event_per_thousand_and_one_card_by_its_status_event() -> None:
    from squad.core.constants import ADDED_EVENT_MAX_IDS
    from squad.live.events import added_events, event_card_ids, names_card

    # Given 2,500 new cards, then a single one
    ids = [f"IMP-{i}" for i in range(2500)]
    batch, single = added_events(ids), added_events(["ONE"])
    # Expect three `added` events naming every card once, in order, each with its count
    assert [e["type"] for e in batch] == ["added"] * 3 and ADDED_EVENT_MAX_IDS == 1000
    assert [received(e)["count"] for e in batch] == [1000, 1000, 500]
    assert [cid for e in batch for cid in received(e)["card_ids"]] == ids
    assert [cid for e in batch for cid in event_card_ids(e)] == ids
    assert all(e["card_id"] == "" and e["status"] == "TODO" for e in batch)
    # ... a card-filtered reader finds its card in the one event that names it
    assert [names_card(e, "IMP-1500") for e in batch] == [False, True, False]
    # ... and one card keeps its TODO status event
    assert [(e["type"], e["card_id"], e["status"]) for e in single] == [("status", "ONE", "TODO")]
    assert event_card_ids(single[0]) == ["ONE"] and names_card(single[0], "ONE")
