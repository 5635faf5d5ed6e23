"""Cards: allowed status transitions, card id rule, field validation (with a property test)."""

from __future__ import annotations

import itertools
import re
import string
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squad.core.cards import CARD_ID_RE, CardSpec, parse_card
from squad.core.errors import BacklogError, SquadError, TransitionError
from squad.core.statuses import (
    ACTIVE,
    FINAL,
    STATUS_FACTS,
    TRANSITIONS,
    Status,
    allowed_sources,
    check_transition,
    statuses_where,
)

S = Status
#: The lifecycle of docs/architecture.md "Card lifecycle", written out independently of the table in cards.py.
EXPECTED_EDGES = {
    (S.TODO, S.QUEUED), (S.QUEUED, S.IN_PROGRESS), (S.IN_PROGRESS, S.DONE),
    (S.IN_PROGRESS, S.RETRYING), (S.RETRYING, S.QUEUED), (S.IN_PROGRESS, S.FAILED),
    (S.RETRYING, S.FAILED),
    # cancel from any non-final status
    (S.TODO, S.CANCELLED), (S.QUEUED, S.CANCELLED), (S.IN_PROGRESS, S.CANCELLED),
    (S.RETRYING, S.CANCELLED), (S.BLOCKED, S.CANCELLED),
    # blocked while a dependency failed, back to TODO when it recovers
    (S.TODO, S.BLOCKED), (S.BLOCKED, S.TODO),
    # user retry of FAILED / CANCELLED, forced retry of DONE
    (S.FAILED, S.QUEUED), (S.CANCELLED, S.QUEUED), (S.DONE, S.QUEUED),
}
ALL_PAIRS = list(itertools.product(Status, Status))


# ---- transitions --------------------------------------------------------------------------------
@pytest.mark.parametrize(("old", "new"), sorted((o, n) for o in TRANSITIONS for n in TRANSITIONS[o]))
def test_every_allowed_transition_passes(old: Status, new: Status) -> None:
    check_transition("C-1", old, new)  # no exception


@pytest.mark.parametrize(("old", "new"), [(o, n) for o, n in ALL_PAIRS if n not in TRANSITIONS[o]])
def test_every_other_transition_raises_transition_error(old: Status, new: Status) -> None:
    with pytest.raises(TransitionError, match=f"card C-1: cannot go from {old} to {new}"):
        check_transition("C-1", old, new)


@pytest.mark.parametrize(("old", "new"), sorted(EXPECTED_EDGES))
def test_the_spec_lifecycle_is_allowed(old: Status, new: Status) -> None:
    assert new in TRANSITIONS[old]


@pytest.mark.parametrize(("old", "new"), [
    (S.TODO, S.DONE), (S.TODO, S.IN_PROGRESS), (S.QUEUED, S.DONE), (S.DONE, S.FAILED),
    (S.DONE, S.TODO), (S.CANCELLED, S.DONE), (S.BLOCKED, S.QUEUED), (S.FAILED, S.DONE),
    (S.RETRYING, S.DONE), (S.DONE, S.CANCELLED), (S.BLOCKED, S.IN_PROGRESS),
])
def test_shortcuts_that_skip_execution_are_illegal(old: Status, new: Status) -> None:
    with pytest.raises(TransitionError):
        check_transition("C-1", old, new)


def test_every_status_has_a_row_in_the_transition_table() -> None:
    assert set(TRANSITIONS) == set(Status)


def test_transition_error_is_a_squad_error_with_exit_code_2() -> None:
    assert issubclass(TransitionError, SquadError)
    assert TransitionError.exit_code == 2


def test_check_transition_accepts_plain_strings() -> None:
    check_transition("C-1", "TODO", "QUEUED")
    with pytest.raises(TransitionError):
        check_transition("C-1", "DONE", "FAILED")


@pytest.mark.parametrize("new", list(Status))
def test_allowed_sources_is_the_inverse_of_the_table(new: Status) -> None:
    assert set(allowed_sources(new)) == {old for old in Status if new in TRANSITIONS[old]}


def test_status_values_are_the_spec_names() -> None:
    assert {s.value for s in Status} == {"TODO", "QUEUED", "IN_PROGRESS", "DONE", "RETRYING", "FAILED",
                                         "CANCELLED", "BLOCKED", "REVIEW", "LANDING", "NEEDS_INPUT", "WAITING"}


def test_review_goes_to_done_queued_or_cancelled_only_and_is_reached_from_in_progress() -> None:
    assert TRANSITIONS[Status.REVIEW] == {Status.DONE, Status.QUEUED, Status.CANCELLED, Status.LANDING}
    assert allowed_sources(Status.REVIEW) == [Status.IN_PROGRESS]
    with pytest.raises(TransitionError):
        check_transition("C-1", "REVIEW", "FAILED")


# ---- card id ------------------------------------------------------------------------------------
@pytest.mark.parametrize("card_id", ["A", "a", "0", "API-12", "x.y_z-1", "A" * 64, "9lives", "card.v2"])
def test_valid_card_ids_are_accepted(card_id: str) -> None:
    assert parse_card({"card_id": card_id, "title": "t"}).card_id == card_id


@pytest.mark.parametrize("card_id", ["", "-a", ".a", "_a", "A" * 65, "a b", "a/b", "ä", "a:b", "a\nb",
                                     "card#1", "../etc"])
def test_invalid_card_ids_are_rejected_naming_the_field(card_id: str) -> None:
    with pytest.raises(BacklogError) as info:
        parse_card({"card_id": card_id, "title": "t"})
    assert any("card_id" in p for p in info.value.problems)


@pytest.mark.parametrize("card_id", ["a.lock", "x..y", "end.", "A..", "v1.lock"])
def test_ids_git_cannot_use_as_a_branch_name_are_rejected_with_the_reason(card_id: str) -> None:
    with pytest.raises(BacklogError) as info:
        parse_card({"card_id": card_id, "title": "t"})
    assert any("card_id" in p and "git branch name" in p for p in info.value.problems)
    assert subprocess.run(["git", "check-ref-format", "--branch", f"squad/{card_id}"], capture_output=True,
                          check=False).returncode != 0  # the rule is git's own


@pytest.mark.parametrize("card_id", ["a.lockx", "x.y.z", "lock", "a-.b", "v1.2.3"])
def test_ids_near_the_git_rules_stay_valid(card_id: str) -> None:
    assert parse_card({"card_id": card_id, "title": "t"}).card_id == card_id
    assert subprocess.run(["git", "check-ref-format", "--branch", f"squad/{card_id}"], capture_output=True,
                          check=False).returncode == 0


def test_card_id_rule_is_the_spec_pattern() -> None:
    assert CARD_ID_RE.pattern == r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


# ---- priority and other fields ------------------------------------------------------------------
@pytest.mark.parametrize("priority", range(10))
def test_priority_0_to_9_is_accepted(priority: int) -> None:
    assert parse_card({"card_id": "C", "title": "t", "priority": priority}).priority == priority


@pytest.mark.parametrize("priority", [-1, 10, 99, 1.5, True, "high", None])
def test_priority_outside_0_to_9_or_not_an_integer_is_rejected(priority: object) -> None:
    with pytest.raises(BacklogError) as info:
        parse_card({"card_id": "C", "title": "t", "priority": priority})
    assert all(p.startswith("card C: priority") for p in info.value.problems), info.value.problems


def test_priority_defaults_to_5_and_lists_to_empty() -> None:
    card = parse_card({"card_id": "C", "title": "t"})
    assert card.priority == 5
    assert card.depends_on == [] and card.labels == [] and card.acceptance_criteria == []


def test_missing_title_and_unknown_field_are_both_reported_for_the_card() -> None:
    with pytest.raises(BacklogError) as info:
        parse_card({"card_id": "C-7", "colour": "red"})
    problems = info.value.problems
    assert len(problems) == 2
    assert any("title" in p for p in problems)
    assert any("colour: unknown field" in p for p in problems)
    assert all(p.startswith("card C-7: ") for p in problems)


def test_a_card_that_is_not_an_object_is_rejected_with_its_position() -> None:
    with pytest.raises(BacklogError, match=r"cards\[3\]: must be an object"):
        parse_card(["not", "a", "card"], where="cards[3]")


@pytest.mark.parametrize(("field", "value"), [
    ("depends_on", "A"), ("labels", "x"), ("acceptance_criteria", [1, 2]), ("time_limit", 0),
    ("time_limit", "soon"), ("max_retries", -1), ("title", ""), ("soft_time_limit", -3),
])
def test_bad_field_types_or_values_are_rejected(field: str, value: object) -> None:
    with pytest.raises(BacklogError) as info:
        parse_card({"card_id": "C", "title": "t", field: value})
    assert any(field in p for p in info.value.problems)


def test_all_spec_fields_are_accepted() -> None:
    card = parse_card({
        "card_id": "API-1", "title": "Add health", "description": "d", "acceptance_criteria": ["a", "b"],
        "squad": "backend", "agent": "claude", "priority": 9, "depends_on": ["API-0"], "labels": ["api"],
        "workdir": "/tmp/x", "time_limit": 60, "soft_time_limit": 50, "max_retries": 1,
        "repo": "/srv/app", "base": "main", "review": True, "verify": ["pytest", "-q"], "land": "merge",
        "land_when": "done",
    })
    assert (card.repo, card.base, card.review) == ("/srv/app", "main", True)
    assert (card.verify, card.land, card.land_when) == (["pytest", "-q"], "merge", "done")
    assert set(CardSpec.model_fields) == {
        "card_id", "title", "description", "acceptance_criteria", "squad", "agent", "priority", "depends_on",
        "labels", "workdir", "time_limit", "soft_time_limit", "max_retries", "repo", "base", "review",
        "verify", "land", "land_when"}
    assert card.depends_on == ["API-0"] and card.time_limit == 60


# ---- property tests -----------------------------------------------------------------------------
ID_FIRST = string.ascii_letters + string.digits
ID_REST = ID_FIRST + "._-"
# the rule, and what git allows in a branch name (no "..", no ".lock" or "." at the end)
valid_ids = st.builds(lambda a, b: a + b, st.sampled_from(ID_FIRST), st.text(ID_REST, max_size=63)).filter(
    lambda s: ".." not in s and not s.endswith((".lock", ".")))


@settings(max_examples=300, deadline=None)
@given(card_id=valid_ids, priority=st.integers(0, 9), deps=st.lists(valid_ids, max_size=4))
def test_property_any_id_matching_the_rules_makes_a_valid_card(card_id: str, priority: int, deps: list[str]) -> None:
    card = parse_card({"card_id": card_id, "title": "t", "priority": priority, "depends_on": deps})
    assert (card.card_id, card.priority, card.depends_on) == (card_id, priority, deps)


@settings(max_examples=300, deadline=None)
@given(card_id=st.text(max_size=80).filter(lambda s: not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", s)))
def test_property_any_id_not_matching_the_rule_is_rejected(card_id: str) -> None:
    with pytest.raises(BacklogError):
        parse_card({"card_id": card_id, "title": "t"})


@settings(max_examples=200, deadline=None)
@given(priority=st.integers().filter(lambda p: not 0 <= p <= 9))
def test_property_any_priority_outside_0_to_9_is_rejected(priority: int) -> None:
    with pytest.raises(BacklogError):
        parse_card({"card_id": "C", "title": "t", "priority": priority})


@settings(max_examples=200, deadline=None)
@given(old=st.sampled_from(list(Status)), new=st.sampled_from(list(Status)))
def test_property_check_transition_agrees_with_the_table(old: Status, new: Status) -> None:
    if new in TRANSITIONS[old]:
        check_transition("C", old, new)
    else:
        with pytest.raises(TransitionError):
            check_transition("C", old, new)


# ---- the status facts (core.cards.STATUS_FACTS) ---------------------------------------------------
def test_every_status_has_one_row_of_facts_in_lane_order() -> None:
    assert list(STATUS_FACTS) == [Status.TODO, Status.BLOCKED, Status.QUEUED, Status.IN_PROGRESS, Status.RETRYING,
                                  Status.NEEDS_INPUT, Status.WAITING, Status.REVIEW, Status.LANDING, Status.FAILED,
                                  Status.CANCELLED, Status.DONE]
    assert set(STATUS_FACTS) == set(Status)


def test_the_sets_every_module_uses_are_derived_from_the_facts() -> None:
    from squad.core.depgraph import FAILED_DEPENDENCY, WAITING
    from squad.live.events import WAKE_STATUSES
    from squad.orchestration.orchestrator import FINAL_STATUSES

    assert {Status.TODO, Status.QUEUED, Status.IN_PROGRESS, Status.RETRYING, Status.LANDING, Status.NEEDS_INPUT,
            Status.WAITING} == ACTIVE
    assert {Status.DONE, Status.FAILED, Status.CANCELLED} == FINAL
    assert {"DONE", "FAILED", "CANCELLED"} == FINAL_STATUSES
    assert {"DONE", "FAILED", "CANCELLED", "RETRYING", "TODO", "LANDING"} == WAKE_STATUSES
    assert {"TODO", "BLOCKED"} == WAITING
    assert {"FAILED", "CANCELLED", "BLOCKED"} == FAILED_DEPENDENCY


@pytest.mark.parametrize("status", list(Status))
def test_the_facts_agree_with_the_transition_table(status: Status) -> None:
    facts = STATUS_FACTS[status]
    assert not (facts.final and facts.active), "a settled card is not waited for"
    if facts.final:
        assert facts.wakes_orchestrator, "a card settling may free its dependants"
    if facts.cancellable:
        assert Status.CANCELLED in TRANSITIONS[status]
    if facts.retryable:
        assert Status.QUEUED in TRANSITIONS[status]
    if facts.running:
        assert facts.active and facts.cancellable
    if facts.waiting:
        assert not facts.running and not facts.final


def test_statuses_where_names_only_boolean_facts() -> None:
    assert statuses_where("retryable") == {Status.FAILED, Status.CANCELLED}
    with pytest.raises(AttributeError):
        statuses_where("no such fact")


def test_text_longer_than_its_bound_as_sent_is_refused_even_when_stripping_would_fit_it() -> None:
    # A label of 101 characters whose first is white space: stripped it would fit the bound of 100
    with pytest.raises(BacklogError, match=r"labels: .*at most 100 characters"):
        parse_card({"card_id": "A", "title": "t", "labels": ["\v" + "*" * 100]})
    with pytest.raises(BacklogError, match=r"title: .*at most 500 characters"):
        parse_card({"card_id": "A", "title": " " + "t" * 500})
    # ... while white space around text within its bound is still stripped
    card = parse_card({"card_id": "A", "title": "  t  ", "labels": [" x "]})
    assert (card.title, card.labels) == ("t", ["x"])
