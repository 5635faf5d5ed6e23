"""instance: this store's id, which namespaces its Redis keys (`squad:<instance id>:task_updates`)

Revision ID: 0004
Revises: 0005
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "instance",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("instance_id", sa.String(32), nullable=False),
    )
    op.bulk_insert(table, [{"id": 1, "instance_id": uuid.uuid4().hex}])


def downgrade() -> None:
    op.drop_table("instance")
