"""Appraisal: trust state of nodes and its transitions, signed results, asset tags,
the audit log, result-signing keys and policy bundles.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

Existing tables only gain columns (ADD COLUMN, no table copy on either backend, see
0003).  nodes.trust_state carries its CHECK constraint inline, as SQLite cannot add one
to an existing table; every existing node starts 'enrolled' (its trust is judged again
at its next attestation).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TRUST_STATES = ("enrolled", "affirming", "warning", "contraindicated", "expired", "revoked")
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    listed = ", ".join(f"'{state}'" for state in _TRUST_STATES)
    op.execute(
        "ALTER TABLE nodes ADD COLUMN trust_state VARCHAR(16) DEFAULT 'enrolled' NOT NULL"
        f" CONSTRAINT ck_nodes_trust_state CHECK (trust_state IN ({listed}))"
    )
    op.add_column("nodes", sa.Column("trust_since", sa.DateTime(), nullable=True))
    op.add_column("nodes", sa.Column("trust_expires_at", sa.DateTime(), nullable=True))
    op.add_column("nodes", sa.Column("trust_reason", sa.Text(), nullable=True))
    op.add_column("nodes", sa.Column("last_peer", sa.String(length=255), nullable=True))
    op.add_column("nodes", sa.Column("last_site", sa.String(length=255), nullable=True))
    op.create_index(op.f("ix_nodes_trust_expires_at"), "nodes", ["trust_expires_at"])
    op.add_column("evidence", sa.Column("runtime_log", sa.LargeBinary(), nullable=True))
    op.add_column("results", sa.Column("trust_vector", sa.JSON(), nullable=True))
    op.add_column("results", sa.Column("policy_id", sa.Text(), nullable=True))
    op.add_column("results", sa.Column("ear", sa.Text(), nullable=True))
    op.add_column("results", sa.Column("expires_at", sa.DateTime(), nullable=True))
    op.add_column("results", sa.Column("evidence_digest", sa.LargeBinary(), nullable=True))
    op.add_column("results", sa.Column("appraisal_input", sa.JSON(), nullable=True))
    op.create_table(
        "trust_transitions",
        sa.Column("id", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("node_id", sa.String(length=255), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=False),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence_digest", sa.LargeBinary(), nullable=True),
        sa.Column("result_id", sa.BigInteger(), nullable=True),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.node_id"], name=op.f("fk_trust_transitions_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trust_transitions")),
    )
    op.create_index(op.f("ix_trust_transitions_node_id_at"), "trust_transitions", ["node_id", "at"])
    op.create_table(
        "asset_tags",
        sa.Column("node_id", sa.String(length=255), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("serial", sa.Integer(), nullable=False),
        sa.Column("issued_at", sa.DateTime(), nullable=False),
        sa.Column("issued_by", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.node_id"], name=op.f("fk_asset_tags_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_asset_tags")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("private_pem", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("retired_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
    )
    op.create_table(
        "policy_bundles",
        sa.Column("id", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("set_at", sa.DateTime(), nullable=False),
        sa.Column("set_by", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_bundles")),
    )


def downgrade() -> None:
    op.drop_table("policy_bundles")
    op.drop_table("signing_keys")
    op.drop_index(op.f("ix_audit_log_at"), table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("asset_tags")
    op.drop_index(op.f("ix_trust_transitions_node_id_at"), table_name="trust_transitions")
    op.drop_table("trust_transitions")
    for column in ("appraisal_input", "evidence_digest", "expires_at", "ear", "policy_id"):
        op.drop_column("results", column)
    op.drop_column("results", "trust_vector")
    op.drop_column("evidence", "runtime_log")
    op.drop_index(op.f("ix_nodes_trust_expires_at"), table_name="nodes")
    for column in ("last_site", "last_peer", "trust_reason", "trust_expires_at", "trust_since"):
        op.drop_column("nodes", column)
    # Both backends drop the column's CHECK constraint with it.
    op.drop_column("nodes", "trust_state")
