"""The prompt gets `feedback` and `previous_runs`; the default template puts the feedback first."""

from __future__ import annotations

from pathlib import Path

from squad.prompts import render_prompt

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
