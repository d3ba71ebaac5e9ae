"""Measured boot: event logs (stored once), findings and claims on results, golden values.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

Every change to the existing tables is an ADD COLUMN, which neither backend answers by
copying the table (evidence and results are the large ones):
- evidence.event_log_sha256 carries its foreign key inline.  SQLite cannot add a
  constraint to an existing table, and a batch rebuild of evidence would have to drop a
  table that results refers to (refused while foreign keys are enforced).  PostgreSQL
  marks an inline foreign key on a new column with no default valid without scanning
  the table, where a separate ADD CONSTRAINT would scan evidence under a lock that
  blocks attestations.  The constraint is named as the models' naming convention names
  it (alembic's inline REFERENCES would leave the name to the database).
- results.findings and results.workarounds get DEFAULT '[]', so rows written before
  this revision read as empty lists (PostgreSQL 11+ stores a constant default without
  rewriting the table; SQLite computes it on read).  They are JSONB on PostgreSQL.

Downgrade drops the columns in place (SQLite 3.35+ DROP COLUMN; a column whose own
definition holds its REFERENCES clause may be dropped) and the two new tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EVIDENCE_EVENT_LOG_FK = "fk_evidence_event_log_sha256_event_logs"
# JSONB on PostgreSQL, JSON on SQLite (the models' JSONWithDefault says why).
_JSON_WITH_DEFAULT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "event_logs",
        sa.Column("sha256", sa.LargeBinary(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_event_logs")),
    )
    blob = sa.LargeBinary().compile(dialect=op.get_context().dialect)
    op.execute(
        f"ALTER TABLE evidence ADD COLUMN event_log_sha256 {blob}"
        f" CONSTRAINT {_EVIDENCE_EVENT_LOG_FK} REFERENCES event_logs (sha256)"
    )
    for name in ("findings", "workarounds"):
        op.add_column(
            "results", sa.Column(name, _JSON_WITH_DEFAULT, server_default="[]", nullable=False)
        )
    op.add_column("results", sa.Column("claims", sa.JSON(), nullable=True))
    op.create_table(
        "golden_values",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("imported_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_golden_values")),
    )


def downgrade() -> None:
    op.drop_table("golden_values")
    op.drop_column("results", "claims")
    op.drop_column("results", "workarounds")
    op.drop_column("results", "findings")
    if op.get_context().dialect.name != "sqlite":  # SQLite drops it with the column
        op.drop_constraint(_EVIDENCE_EVENT_LOG_FK, "evidence", type_="foreignkey")
    op.drop_column("evidence", "event_log_sha256")
    op.drop_table("event_logs")
