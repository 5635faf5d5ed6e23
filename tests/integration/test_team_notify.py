"""Notifications (docs/team.md "Notifications") over real HTTP: local receivers check the signature
and the Slack shape; a receiver that hangs and one that answers 500 do not delay cards, and their
failures show in `squad status` and `/metrics`."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from squad.core.settings import load_settings
from squad.core.statuses import Status
from squad.store.card_store import CardStore
from squad.store.team_store import TeamStore
from squad.team.notify import SIGNATURE_HEADER, payload, signature
from support.cli import run_cli, squad_env
from support.fake_agents import sandbox_toml
from support.paths import AGENTS
from support.processes import wait_for
from support.workers import StartWorker

SECRET = "notify-secret-7"


class Receiver:
    """A local webhook receiver: records what it gets; `mode` is `ok`, `fail` (500) or `hang`."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.mode == "hang":
                    receiver.release.wait(600)
                code = 500 if receiver.mode == "fail" else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _h, body in self.got]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receivers(*modes: str) -> Iterator[list[Receiver]]:
    made = [Receiver(mode) for mode in modes]
    try:
        yield made
    finally:
        for r in made:
            r.close()


def _config(path: Path, hooks: list[tuple[str, str, str, str | None]]) -> None:
    lines = ['default_agent = "fail"', sandbox_toml(), "[agents.fail]",
             f"command = {json.dumps([sys.executable, str(AGENTS / 'fail.py')])}", 'parser = "markers"', ""]
    for name, url, fmt, secret in hooks:
        lines += ["[[notify]]", f'name = "{name}"', f'url = "{url}"', 'events = ["FAILED", "question"]',
                  f'format = "{fmt}"'] + ([f'secret = "{secret}"'] if secret else []) + [""]
    path.write_text("\n".join(lines), encoding="utf-8")


def test_payloads_are_signed_json_and_slack_blocks_with_card_text_escaped() -> None:
    settings = load_settings(notify=[{"url": "http://x/", "events": ["REVIEW"], "format": "slack"}],
                             public_url="https://squad.example")
    body = payload(settings.notify[0], settings, event="REVIEW", card_id="A-1", title="<!channel> & fix",
                   squad="web", status="REVIEW", at="2026-12-07T10:00:00+00:00")
    slack = json.loads(body)
    section = slack["blocks"][0]["text"]
    assert section["type"] == "mrkdwn" and "<https://squad.example/#/cards/A-1|A-1>" in section["text"]
    assert "&lt;!channel&gt; &amp; fix" in section["text"] and "<!channel>" not in section["text"]
    assert signature("k", b"body") == "sha256=" + hmac.new(b"k", b"body", hashlib.sha256).hexdigest()


def test_failed_cards_notify_signed_json_and_slack_while_dead_receivers_delay_nothing(
        redis_url: str, sqlite_url: str, tmp_path: Path, start_worker: StartWorker) -> None:
    """Given a worker, a beat and four receivers (signed JSON, Slack, one that hangs, one that
    answers 500), when three cards fail, the cards are FAILED while the hanging receiver still
    holds its request, the good receivers get one signed notification per card, and the broken
    ones show as failing in `squad status` and `/metrics`."""
    with receivers("ok", "ok", "hang", "fail") as (good, slack, hang, broken):
        config = tmp_path / "squad.toml"
        _config(config, [("good", good.url, "json", SECRET), ("slack", slack.url, "slack", None),
                         ("hang", hang.url, "json", None), ("broken", broken.url, "json", None)])
        env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_CONFIG=str(config),
                        SQUAD_MAX_RETRIES="0")
        worker = start_worker(env, concurrency=2)
        beat = run_beat(env, tmp_path)
        try:
            for n in range(3):
                assert run_cli("card", "add", "--id", f"N-{n}", "--title", f"card <{n}>", env=env).returncode == 0
            done = run_cli("orchestrate", "--once", "--wait", "--mode", "celery", env=env, timeout=300)
            store = CardStore(sqlite_url)
            assert all(c.status == Status.FAILED for c in store.list_cards()), done.stdout + done.stderr
            assert not hang.release.is_set()  # the cards settled while a receiver was hanging

            wait_for(lambda: len(good.got) >= 3 and len(slack.got) >= 3, 120, interval=0.5,
                     message="three notifications on each good receiver")
            # ... (the cards settle before beat's first pass: the worker made the consumer group at start)
            # ... and a team pass run after an attempt in the same pool process logs as no card
            def passes() -> list[dict[str, object]]:
                return [json.loads(line) for line in worker.log().splitlines()
                        if line.startswith("{") and "squad.team_pass[" in line and "succeeded" in line]

            wait_for(lambda: len(passes()) >= 2, 60, interval=0.5, message="two team passes logged")
            assert not any("card_id" in p for p in passes())
            for headers, body in good.got:
                assert headers[SIGNATURE_HEADER.lower()] == signature(SECRET, body)
            assert sorted(b["card_id"] for b in good.bodies()) == ["N-0", "N-1", "N-2"]
            assert {b["event"] for b in good.bodies()} == {"FAILED"}
            assert all(SIGNATURE_HEADER.lower() not in h for h, _b in slack.got)
            for message in slack.bodies():
                assert message["blocks"][0]["type"] == "section" and "FAILED" in message["blocks"][0]["text"]["text"]
            wait_for(lambda: TeamStore(store).outbox_counts()["failing"] >= 3, 120, interval=0.5,
                     message="the 500 receiver's notifications failing")
            status = run_cli("status", env=env)
            assert "notifications" in status.stdout and "failing" in status.stdout, status.stdout
            assert "HTTP 500" in status.stdout
            assert len(good.got) == 3  # one each, never twice
        finally:
            from support.processes import kill_tree

            kill_tree(beat)


def run_beat(env: dict[str, str], tmp_path: Path) -> Any:
    import subprocess

    log = open(tmp_path / "beat.log", "wb")  # noqa: SIM115 - kept open for the process lifetime
    return subprocess.Popen([sys.executable, "-m", "squad", "beat"], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def test_notify_test_sends_one_now_and_exits_1_on_failure(tmp_path: Path) -> None:
    with receivers("ok", "fail") as (good, broken):
        config = tmp_path / "squad.toml"
        _config(config, [("good", good.url, "json", SECRET), ("broken", broken.url, "slack", None)])
        env = squad_env(SQUAD_CONFIG=str(config))
        ok = run_cli("notify", "test", "good", env=env)
        assert ok.returncode == 0 and "good: delivered" in ok.stdout, ok.stdout + ok.stderr
        (headers, body), = good.got
        assert json.loads(body)["event"] == "test" and headers[SIGNATURE_HEADER.lower()] == signature(SECRET, body)
        both = run_cli("notify", "test", env=env)
        assert both.returncode == 1 and "broken: failed (HTTP 500)" in both.stdout
        assert run_cli("notify", "test", "nope", env=env).returncode == 2


def test_events_become_one_notification_per_target_filtered_by_event_and_squad(redis_url: str,
                                                                             sqlite_url: str) -> None:
    """Given two targets (one for FAILED and questions of squad `web`, one for REVIEW of any squad),
    when status and question events are on the stream and two passes read it, each wanted event is
    queued once for its target and delivered; others are not."""
    from squad.core.cards import parse_card
    from squad.live.events import EventBus, _event, status_event
    from squad.team.notify import collect, deliver_due

    with receivers("ok", "ok") as (web, review):
        settings = load_settings(redis_url=redis_url, database_url=sqlite_url, notify=[
            {"name": "web", "url": web.url, "events": ["FAILED", "question"], "squads": ["web"]},
            {"name": "review", "url": review.url, "events": ["REVIEW"], "format": "slack"}])
        store = CardStore(sqlite_url)
        try:
            store.add_cards([parse_card({"card_id": "W-1", "title": "w", "squad": "web"}),
                             parse_card({"card_id": "O-1", "title": "o", "squad": "ops"})])
            bus = EventBus(settings.events, store.redis_keys)
            assert collect(settings, store, bus, consumer="c1") == 0  # the group starts at the stream's end
            for event in (status_event("W-1", Status.FAILED), status_event("O-1", Status.FAILED),
                          status_event("O-1", Status.REVIEW), status_event("W-1", Status.DONE),
                          _event("question", "W-1", None, None, None, question="Which branch?")):
                bus.publish(event)
            assert collect(settings, store, bus, consumer="c1") == 3
            assert collect(settings, store, bus, consumer="c2") == 0  # read once, whoever reads next
            assert deliver_due(settings, store) == {"sent": 3, "failed": 0, "dropped": 0}
            assert deliver_due(settings, store) == {"sent": 0, "failed": 0, "dropped": 0}
            assert sorted((b["event"], b["card_id"]) for b in web.bodies()) == [("FAILED", "W-1"), ("question", "W-1")]
            assert [b["detail"] for b in web.bodies() if b["event"] == "question"] == ["Which branch?"]
            assert ["O-1" in m["blocks"][0]["text"]["text"] for m in review.bodies()] == [True]
            from support.api import run_api

            with run_api(settings, store=store) as api, api.client() as http:
                metrics = http.get("/metrics").text
            assert 'squad_notifications{state="sent"} 3.0' in metrics
            assert 'squad_notifications{state="failing"} 0.0' in metrics
        finally:
            store.dispose()


def test_a_failing_receiver_is_retried_later_then_dropped_after_a_day(redis_url: str, sqlite_url: str) -> None:
    from squad.store.card_store import now_s
    from squad.team.notify import KEEP_TRYING_S, deliver_due

    with receivers("fail") as (broken,):
        settings = load_settings(redis_url=redis_url, database_url=sqlite_url,
                                 notify=[{"name": "broken", "url": broken.url, "events": ["FAILED"]}])
        store = CardStore(sqlite_url)
        try:
            team = TeamStore(store)
            assert team.enqueue_notification(target="broken", event_key="k1", event="FAILED", card_id="A", body="{}")
            assert deliver_due(settings, store) == {"sent": 0, "failed": 1, "dropped": 0}
            assert deliver_due(settings, store) == {"sent": 0, "failed": 0, "dropped": 0}  # not due yet: backoff
            assert team.outbox_counts()["failing"] == 1
            # a day later (the clock moved on; the row is due again)
            later = now_s() + KEEP_TRYING_S + 60
            assert team.enqueue_notification(target="broken", event_key="k2", event="FAILED", card_id="B", body="{}",
                                             now=now_s() - KEEP_TRYING_S - 1)
            assert deliver_due(settings, store, now=later)["dropped"] >= 1
            assert team.outbox_counts()["dropped"] >= 1
            assert len(broken.got) >= 2
        finally:
            store.dispose()
