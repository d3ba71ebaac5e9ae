"""Admission: credentials issued to nodes (certificates and tokens), for revocation.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

One row per certificate or token the credential gate issued: whose, until when, which
attestation result vouched for it, and whether (and why) it was revoked.  The CRL is the
certificates revoked and not yet expired; the index on (node_id, not_after) finds a
node's live credentials when its trust is lost.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("node_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("issued_at", sa.DateTime(), nullable=False),
        sa.Column("not_after", sa.DateTime(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("ear_digest", sa.LargeBinary(), nullable=False),
        sa.Column("key_name", sa.LargeBinary(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("kind IN ('certificate', 'token')", name=op.f("ck_credentials_kind")),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.node_id"], name=op.f("fk_credentials_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_credentials")),
    )
    op.create_index(
        op.f("ix_credentials_node_id_not_after"), "credentials", ["node_id", "not_after"]
    )
    op.create_index(op.f("ix_credentials_revoked_at"), "credentials", ["revoked_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_credentials_revoked_at"), table_name="credentials")
    op.drop_index(op.f("ix_credentials_node_id_not_after"), table_name="credentials")
    op.drop_table("credentials")
