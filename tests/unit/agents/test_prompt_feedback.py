"""The prompt gets `feedback` and `previous_runs` (the default template puts the feedback first);
`orchestrate --wait` names the cards in REVIEW."""

from __future__ import annotations

from pathlib import Path

from squad.agents.prompts import render_prompt

CARD = {"card_id": "A-1", "title": "Add health", "description": "Return ok.", "acceptance_criteria": [],
        "squad": None}


def test_the_default_template_shows_the_rejection_feedback_before_the_task() -> None:
    text = render_prompt(None, CARD, 2, None, feedback="Handle the EMPTY list too")
    assert text.index("Handle the EMPTY list too") < text.index("# Add health")
    assert "rejected" in text.split("# Add health")[0]


def test_without_feedback_the_default_template_has_no_review_section() -> None:
    text = render_prompt(None, CARD, 1, None)
    assert text.startswith("# Add health") and "feedback" not in text.lower()


def test_a_custom_template_sees_previous_runs_and_feedback(tmp_path: Path) -> None:
    template = tmp_path / "t.j2"
    template.write_text("{% for r in previous_runs %}{{ r.attempt }}:{{ r.status }}:{{ r.files_changed }} "
                        "{% endfor %}[{{ feedback }}]", encoding="utf-8")
    runs = [{"attempt": 1, "status": "failed", "files_changed": 0}, {"attempt": 2, "status": "succeeded",
                                                                     "files_changed": 3}]
    assert render_prompt(template, CARD, 3, None, feedback="more tests", previous_runs=runs) == \
        "1:failed:0 2:succeeded:3 [more tests]"
    assert render_prompt(template, CARD, 1, None) == "[]"


def test_orchestrate_wait_says_when_cards_wait_for_a_review() -> None:
    from squad.cli.wait_report import describe_wait

    line = describe_wait({"TODO": 2, "REVIEW": 1, "DONE": 4}, "local", None)
    assert line == "waiting for 2 card(s): 2 TODO (1 in REVIEW: see squad review list) (running locally)"
    assert "REVIEW" not in describe_wait({"TODO": 1, "REVIEW": 0}, "local", None)
