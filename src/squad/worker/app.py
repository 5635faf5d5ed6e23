"""The Celery app instance workers run (`squad.celery_app` hands it to the stock `celery -A` command).

Built from the process's settings when first imported; the tasks in `squad.worker.tasks` are
registered on it.
"""

from __future__ import annotations

from squad.core.settings import load_settings
from squad.live.celery_config import make_celery

celery_app = make_celery(load_settings())
app = celery_app
