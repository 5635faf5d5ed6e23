"""A local-mode project for the sandbox tests: its squad.toml, environment and store."""

from __future__ import annotations

from pathlib import Path

from squad.store.card_store import CardStore
from support.cli import squad_env
from support.processes import free_port


def project(tmp_path: Path, toml: str) -> tuple[dict[str, str], CardStore]:
    """A squad.toml with `toml`, the environment of a local-mode run (no Redis answering, its own HOME,
    no retries) and the store."""
    db_url = f"sqlite:///{tmp_path / '.squad' / 'squad.db'}"
    (tmp_path / "squad.toml").write_text(toml, encoding="utf-8")
    env = squad_env(USE_CELERY="false", SQUAD_REDIS_URL=f"redis://127.0.0.1:{free_port()}",
                    SQUAD_DATABASE_URL=db_url, SQUAD_MAX_RETRIES="0", SQUAD_ALLOWED_ROOTS=str(tmp_path),
                    HOME=str(tmp_path / "home"))
    return env, CardStore(db_url)
