"""Browser tests wait through `support.browser.wait_js`: Playwright's `wait_for_function` evaluates its
predicate with `eval` in the page, which the dashboard's Content-Security-Policy refuses (docs/security.md)."""

from __future__ import annotations

from pathlib import Path

BROWSER_TESTS = Path(__file__).resolve().parents[1] / "browser"


def test_no_browser_test_waits_with_wait_for_function() -> None:
    offenders = [f"{path.name}:{number}" for path in sorted(BROWSER_TESTS.glob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1) if "wait_for_function(" in line]
    assert list(BROWSER_TESTS.glob("test_*.py")), "no browser tests found"
    assert offenders == [], f"use support.browser.wait_js instead: {offenders}"
