"""The Celery app, for the stock CLI: `celery -A squad.celery_app worker|inspect|flower` works as is.

The instance lives in `squad.worker.app` and its configuration in `squad.live.celery_config`; this
module only names them where Celery and the documentation look.
"""

from __future__ import annotations

from squad.live.celery_config import card_priority, make_celery
from squad.worker.app import app, celery_app

__all__ = ["app", "card_priority", "celery_app", "make_celery"]
