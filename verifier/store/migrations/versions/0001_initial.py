"""Initial schema: nodes, keys, pending enrollments, join tokens, nonces, evidence, results.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Written out in full rather than importing verifier.store.models, so that this revision
keeps creating the schema it created even after the models move on.  Datetimes are naive
UTC TIMESTAMPs (the models' UTCDateTime); last_clock holds a UINT64 in a BIGINT (Uint64).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _row_id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(), nullable=True),
        sa.Column("last_clock", sa.BigInteger(), nullable=True),
        sa.Column("last_reset_count", sa.BigInteger(), nullable=True),
        sa.Column("last_restart_count", sa.BigInteger(), nullable=True),
        sa.Column("last_clock_safe", sa.Boolean(), nullable=True),
        sa.Column("last_attested_at", sa.DateTime(), nullable=True),
        sa.Column("last_status", sa.String(length=32), nullable=True),
        sa.Column("reboots", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("state IN ('pending', 'enrolled')", name=op.f("ck_nodes_state")),
        sa.CheckConstraint(
            "(last_clock IS NULL AND last_reset_count IS NULL"
            " AND last_restart_count IS NULL AND last_clock_safe IS NULL)"
            " OR (last_clock IS NOT NULL AND last_reset_count IS NOT NULL"
            " AND last_restart_count IS NOT NULL AND last_clock_safe IS NOT NULL)",
            name=op.f("ck_nodes_last_clock_whole"),
        ),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_nodes")),
    )
    op.create_table(
        "keys",
        sa.Column("id", _row_id(), autoincrement=True, nullable=False),
        sa.Column("node_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("fingerprint", sa.String(length=255), nullable=False),
        sa.Column("public", sa.LargeBinary(), nullable=False),
        sa.Column("name", sa.LargeBinary(), nullable=True),
        sa.Column("certificate", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("activated_at", sa.DateTime(), nullable=True),
        sa.Column("retired_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("kind IN ('ek', 'ak')", name=op.f("ck_keys_kind")),
        sa.CheckConstraint("state IN ('pending', 'active', 'retired')", name=op.f("ck_keys_state")),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.node_id"], name=op.f("fk_keys_node_id_nodes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_keys")),
        sa.UniqueConstraint(
            "node_id", "kind", "fingerprint", name=op.f("uq_keys_node_id_kind_fingerprint")
        ),
    )
    op.create_index(
        "uq_keys_active",
        "keys",
        ["node_id", "kind"],
        unique=True,
        sqlite_where=sa.text("state = 'active'"),
        postgresql_where=sa.text("state = 'active'"),
    )
    op.create_table(
        "pending_enrollments",
        sa.Column("node_id", sa.String(length=255), nullable=False),
        sa.Column("ek_key_id", _row_id(), nullable=False),
        sa.Column("ak_key_id", _row_id(), nullable=False),
        sa.Column("secret_digest", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ak_key_id"], ["keys.id"], name=op.f("fk_pending_enrollments_ak_key_id_keys")
        ),
        sa.ForeignKeyConstraint(
            ["ek_key_id"], ["keys.id"], name=op.f("fk_pending_enrollments_ek_key_id_keys")
        ),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.node_id"], name=op.f("fk_pending_enrollments_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_pending_enrollments")),
    )
    op.create_table(
        "join_tokens",
        sa.Column("token_digest", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_by", sa.String(length=255), nullable=True),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("token_digest", name=op.f("pk_join_tokens")),
    )
    op.create_table(
        "nonces",
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("node_id", sa.String(length=255), nullable=False),
        sa.Column("issued_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.node_id"], name=op.f("fk_nonces_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint("value", name=op.f("pk_nonces")),
    )
    op.create_index(op.f("ix_nonces_expires_at"), "nonces", ["expires_at"])
    op.create_index(op.f("ix_nonces_node_id"), "nonces", ["node_id"])
    op.create_table(
        "evidence",
        sa.Column("id", _row_id(), autoincrement=True, nullable=False),
        sa.Column("node_id", sa.String(length=255), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("quote_message", sa.LargeBinary(), nullable=False),
        sa.Column("quote_signature", sa.LargeBinary(), nullable=False),
        sa.Column("pcr_values", sa.JSON(), nullable=False),
        sa.Column("peer", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.node_id"], name=op.f("fk_evidence_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evidence")),
    )
    op.create_index(op.f("ix_evidence_node_id_received_at"), "evidence", ["node_id", "received_at"])
    op.create_table(
        "results",
        sa.Column("id", _row_id(), autoincrement=True, nullable=False),
        sa.Column("node_id", sa.String(length=255), nullable=False),
        sa.Column("evidence_id", _row_id(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("failed_checks", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("rebooted", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('affirming', 'warning', 'contraindicated', 'none')",
            name=op.f("ck_results_status"),
        ),
        sa.ForeignKeyConstraint(
            ["evidence_id"], ["evidence.id"], name=op.f("fk_results_evidence_id_evidence")
        ),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.node_id"], name=op.f("fk_results_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_results")),
        sa.UniqueConstraint("evidence_id", name=op.f("uq_results_evidence_id")),
    )
    op.create_index(op.f("ix_results_node_id_created_at"), "results", ["node_id", "created_at"])


def downgrade() -> None:
    op.drop_table("results")
    op.drop_table("evidence")
    op.drop_table("nonces")
    op.drop_table("join_tokens")
    op.drop_table("pending_enrollments")
    op.drop_table("keys")
    op.drop_table("nodes")
