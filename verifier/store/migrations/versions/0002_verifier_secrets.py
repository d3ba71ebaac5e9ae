"""Shared verifier secrets (the nonce MAC key): nonces become self-authenticating.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

Challenges no longer write a row; the nonces table now holds spent nonces only, written
with the attestation that spends them.  Unspent rows from 0001 stay valid for purging.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "verifier_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_verifier_secrets")),
    )


def downgrade() -> None:
    op.drop_table("verifier_secrets")
