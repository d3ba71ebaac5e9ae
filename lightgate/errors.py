"""The one shape of a refusal across Lightgate: a named check, a message, the node.

`verifier.evidence.errors.EvidenceError` (evidence refused) and
`verifier.errors.VerifierError` (a request refused) both derive from it, so logs, the
CLI and the API print every refusal the same way: `check: message (node n)`.
"""

from __future__ import annotations

from typing import ClassVar


class Refusal(Exception):
    """Something was refused; `check` names the check that refused it."""

    check: ClassVar[str] = "refused"

    def __init__(self, message: str, *, node_id: str | None = None) -> None:
        self.node_id = node_id
        self.message = message
        super().__init__(message)

    @property
    def reason(self) -> str:
        """One line for users: the check, the node (when known) and what was wrong."""
        node = f" (node {self.node_id})" if self.node_id else ""
        return f"{self.check}: {self.message}{node}"
