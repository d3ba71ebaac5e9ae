"""The store's refusals.  The lookups subclass LookupError, as callers may catch that."""

from __future__ import annotations


class StoreError(Exception):
    """The store could not do what was asked."""


class UnknownNode(StoreError, LookupError):
    """No node with this id."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        super().__init__(f"node {node_id!r} is not known to the store")


class ChallengeNotAnswered(StoreError):
    """The answer given is not the pending challenge's, or the challenge expired; the
    enrollment stays pending (until it expires or is replaced)."""

    def __init__(self, node_id: str, why: str, *, expired: bool = False) -> None:
        self.node_id = node_id
        self.why = why
        self.expired = expired
        super().__init__(f"node {node_id!r}: {why}")


class EnrollmentNotPending(StoreError, LookupError):
    """The node has no pending enrollment (never begun, dropped, or already completed)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        super().__init__(f"node {node_id!r} has no pending enrollment")


class StoreInconsistent(StoreError):
    """Rows contradict the store's invariants (e.g. a node without an EK)."""
