"""Admission: versions of each node's trust, so every replica's trust index reads
exactly the changes it has not seen, and its newest result without a GROUP BY.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

- `trust_version`: how many times the node's trust or newest result was written; one
  node's writes are serialised by its row lock, so a higher version is a newer entry.
- `change_seq`: where the write falls in the order replicas read changes in (see
  `verifier/store/versions.py`): PostgreSQL's transaction id, or on SQLite (one writer
  at a time) one more than the highest so far.
- `last_result_id`: the node's newest result.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    zero = sa.text("0")
    op.add_column(
        "nodes", sa.Column("trust_version", sa.BigInteger(), server_default=zero, nullable=False)
    )
    op.add_column(
        "nodes", sa.Column("change_seq", sa.BigInteger(), server_default=zero, nullable=False)
    )
    op.add_column("nodes", sa.Column("last_result_id", sa.BigInteger(), nullable=True))
    op.create_index(op.f("ix_nodes_change_seq"), "nodes", ["change_seq"])
    op.execute(
        "UPDATE nodes SET last_result_id ="
        " (SELECT MAX(results.id) FROM results WHERE results.node_id = nodes.node_id)"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_nodes_change_seq"), table_name="nodes")
    for column in ("last_result_id", "change_seq", "trust_version"):
        op.drop_column("nodes", column)
