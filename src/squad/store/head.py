"""The newest Alembic revision of the store's schema, in a module that imports nothing.

`store/tables.py` (and through it every migration check) names it; `store/peek.py` compares a SQLite
file's revision with it without importing SQLAlchemy (docs/benchmarks.md "CLI"). A test keeps it
equal to the head of `migrations/versions`.
"""

from __future__ import annotations

SCHEMA_HEAD = "0015"
