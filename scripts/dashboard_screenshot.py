#!/usr/bin/env python3
"""Take docs/dashboard.png: a real `squad up` (embedded Redis, worker, orchestrator, API) working a
48-card backlog with the built-in demo agent, photographed by Debian's Chromium mid-run.

Run: `python scripts/dashboard_screenshot.py [--out docs/dashboard.png] [--after 45] [--dark]`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DEMO = [sys.executable, "-m", "squad.agents.demo"]
AGENTS = {
    "demo-quick": [*DEMO, "--duration", "12"],
    "demo-long": [*DEMO, "--duration", "90"],
    "demo-fail": [*DEMO, "--fail"],
}
SQUADS = ["backend", "frontend", "platform", "data", "qa", "docs"]
WORK = ["Add the login form", "Fix the billing webhook", "Index search results", "Rate-limit the API",
        "Export reports as CSV", "Write the audit log", "Cache user sessions", "Feature flags service",
        "Retry failed uploads", "SSO callback", "Paginate /api/orders", "Dark mode for settings",
        "Migrate to Postgres 16", "Nightly backup job", "Document the webhooks", "Speed up cold start"]


def backlog() -> list[dict[str, object]]:
    cards: list[dict[str, object]] = []
    for i in range(48):
        agent = ["demo-quick", "demo", "demo-long", "demo-quick", "demo-flaky", "demo-long"][i % 6]
        if i in (5, 17, 29):
            agent = "demo-fail"
        card: dict[str, object] = {
            "card_id": f"SQ-{101 + i}", "title": WORK[i % len(WORK)], "squad": SQUADS[i % len(SQUADS)],
            "agent": agent, "priority": (9 - i // 5) % 10, "labels": ["screenshot"],
            "max_retries": 0 if agent == "demo-fail" else 2,
        }
        if i >= 30 and i % 3 == 0:
            card["depends_on"] = [f"SQ-{101 + i - 20}"]
        if i == 41:
            card["depends_on"] = ["SQ-106"]  # fails: this one is BLOCKED
        cards.append(card)
    return cards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    parser.add_argument("--after", type=float, default=45.0, help="seconds of work before the photo")
    parser.add_argument("--dark", action="store_true")
    parser.add_argument("--extra", help="also photograph a card's detail, workers, history and metrics into this directory")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from squad.ops.embedded_redis import free_port

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "squad.toml").write_text("".join(
            f'[agents.{name}]\ncommand = {json.dumps(argv)}\nprompt = "stdin"\nparser = "markers"\n'
            for name, argv in AGENTS.items()), encoding="utf-8")
        (work / "backlog.json").write_text(json.dumps({"cards": backlog()}), encoding="utf-8")
        port = free_port()
        env = dict(os.environ, SQUAD_DATABASE_URL=f"sqlite:///{work / 'squad.db'}",
                   SQUAD_REDIS_URL=f"redis://127.0.0.1:{free_port()}", SQUAD_RETRY_BACKOFF="40",
                   PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
        subprocess.run([sys.executable, "-m", "squad", "backlog", "import", "backlog.json"], cwd=work, env=env,
                       check=True)
        up = subprocess.Popen([sys.executable, "-m", "squad", "up", "--port", str(port), "--concurrency", "6"],
                              cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            time.sleep(args.after / 2)
            httpx.post(f"{url}/api/tasks/SQ-148/cancel", timeout=30)
            time.sleep(args.after / 2)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1900, "height": 1000}, device_scale_factor=1,
                                        color_scheme="dark" if args.dark else "light")
                page.goto(url)
                page.wait_for_selector('#conn[data-state="live"]')
                page.wait_for_selector("body[data-loaded]")
                time.sleep(3)
                page.screenshot(path=args.out)
                if args.extra:
                    extra = Path(args.extra)
                    running = page.get_attribute('.lane[data-lane="IN_PROGRESS"] .card', "data-card-id")
                    for name, hash_ in [("detail", f"#/cards/{running}"), ("workers", "#/workers"),
                                        ("history", "#/history"), ("metrics", "#/metrics")]:
                        page.goto(f"{url}/{hash_}")
                        time.sleep(4)
                        page.screenshot(path=str(extra / f"{name}.png"))
                    page.emulate_media(color_scheme="dark")
                    page.goto(f"{url}/#/board")
                    time.sleep(3)
                    page.screenshot(path=str(extra / "dark.png"))
                browser.close()
        finally:
            os.killpg(up.pid, signal.SIGTERM)
            up.wait(timeout=60)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
