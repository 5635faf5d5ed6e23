"""The API against an agent that plants files and a client that hides its token (issue 21, items 12
and 13; docs/security.md "Second round"), on a real uvicorn server and a real `squad serve`."""

from __future__ import annotations

import os
from base64 import urlsafe_b64encode
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from squad.agents.prompts import prompt_path
from squad.core.settings import Settings, load_settings
from squad.core.statuses import Status
from squad.store.card_store import CardStore
from support.api import run_api, squad_serve
from support.cli import squad_env
from support.store import seed

TOKEN = "tok-Round2-0913"


def test_the_prompt_endpoint_follows_no_planted_link_and_reads_no_attempt_that_never_was(
        api: Any, settings: Settings, tmp_path: Path) -> None:
    # Given cards that ran once, and an agent (same Unix user) that planted files under .prompts/
    store: CardStore = api.state.store
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$very-secret-hash\n", encoding="utf-8")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "attempt-1.md").write_text("root:$6$from-a-linked-folder\n", encoding="utf-8")
    for card_id in ("LINK", "DIRLINK", "FIFO", "PLANT"):
        seed(store, card_id, Status.FAILED)
    link = prompt_path(settings.workdir, "LINK", 1)
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)                                              # the file is a link
    prompt_path(settings.workdir, "DIRLINK", 1).parent.symlink_to(tmp_path / "elsewhere")  # its folder is one
    fifo = prompt_path(settings.workdir, "FIFO", 1)
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)                                                      # a reader would block on it
    planted = prompt_path(settings.workdir, "PLANT", 7)
    planted.parent.mkdir(parents=True)
    planted.write_text("a prompt of an attempt that never ran\n", encoding="utf-8")

    # When the prompts are asked for
    with api.client() as http:
        answers = {card_id: http.get(f"/api/cards/{card_id}/prompt", params={"attempt": 1})
                   for card_id in ("LINK", "DIRLINK", "FIFO")}
        seventh = http.get("/api/cards/PLANT/prompt", params={"attempt": 7})

    # Expect no planted content: the prompt is rendered again from the card instead
    for card_id, answer in answers.items():
        assert answer.status_code == 200, (card_id, answer.text)
        assert "root:" not in answer.text, card_id
        assert card_id in answer.json()["prompt"], card_id  # the card's own prompt, rendered again
    # ... and an attempt beyond the card's is 404, whatever file is there
    assert seventh.status_code == 404
    assert "no attempt 7" in seventh.json()["detail"] and "never ran" not in seventh.text


def test_a_percent_encoded_token_key_authenticates_but_never_reaches_the_log(redis_url: str, sqlite_url: str) -> None:
    # Given `squad serve` with a token, its log captured
    env = squad_env(SQUAD_REDIS_URL=redis_url, SQUAD_DATABASE_URL=sqlite_url, SQUAD_API_TOKEN=TOKEN)
    with squad_serve(env) as (base, log):
        # When a client spells the key `%74oken` (a server decodes it to `token`), on a read and a socket
        assert httpx.get(f"{base}/api/cards?%74oken={TOKEN}", timeout=10).status_code == 200
        assert httpx.get(f"{base}/api/cards?%54OKEN=x{TOKEN}", timeout=10).status_code == 401
        with connect(f"{base.replace('http', 'ws', 1)}/ws/tasks?%74oken={TOKEN}", open_timeout=10) as ws:
            ws.recv(timeout=10)
    out = log.text
    # Expect the requests in the access log, their token masked
    assert "/api/cards?%74oken=***" in out, out
    assert TOKEN not in out, out


def test_the_socket_takes_a_token_a_subprotocol_name_cannot_hold_as_base64url(redis_url: str,
                                                                              sqlite_url: str) -> None:
    # Given a server whose token holds a space, '/', '=' and a non-ASCII letter
    token = "a b/c=é"
    settings = load_settings(redis_url=redis_url, database_url=sqlite_url, api_token=token)
    encoded = urlsafe_b64encode(token.encode()).decode().rstrip("=")
    wrong = urlsafe_b64encode(b"a b/c=e").decode().rstrip("=")
    with run_api(settings) as api:
        # When the socket offers it as `squad.token64.<base64url>`: accepted, answered with `squad`
        with connect(api.ws_url, subprotocols=["squad", f"squad.token64.{encoded}"],  # type: ignore[list-item]
                     open_timeout=10) as ws:
            assert ws.subprotocol == "squad"
            assert '"connected"' in str(ws.recv(timeout=10))
        # ... a wrong one, or one that is not base64, is refused
        for bad in (wrong, "***"):
            with pytest.raises(InvalidStatus):
                connect(api.ws_url, subprotocols=["squad", f"squad.token64.{bad}"],  # type: ignore[list-item]
                        open_timeout=10).close()
