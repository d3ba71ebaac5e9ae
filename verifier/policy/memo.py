"""Decisions memoised by (policy bundle digest, input digest).

A policy is a pure function of its bundle and its input, so the same claims under the
same policy need never be evaluated twice: a node re-attesting with an unchanged boot
costs one dictionary look-up.  The bundle digest is read from the engine on every call,
so a new policy starts with no memoised decisions.  Failures are not memoised: an OPA
server that timed out once may answer the next time.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping

from verifier.policy.engine import Decision, PolicyEngine


def input_digest(input: Mapping[str, object]) -> bytes:
    """SHA-256 of the input's canonical JSON (sorted keys, no spaces): a memo key for
    callers that have no digest of their own."""
    canonical = json.dumps(input, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).digest()


class MemoisedEngine:
    """Wraps any PolicyEngine with a bounded, thread-safe LRU of its Decisions.

    The caller supplies the input digest: it must change whenever anything in the input
    changes (the verifier already hashes the evidence it appraises).
    """

    def __init__(self, engine: PolicyEngine, *, entries: int = 4096) -> None:
        if entries < 1:
            raise ValueError("a decision memo needs at least one entry")
        self._engine = engine
        self._entries = entries
        self._decisions: OrderedDict[tuple[str, bytes], Decision] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    @property
    def engine(self) -> PolicyEngine:
        return self._engine

    @property
    def bundle_digest(self) -> str:
        return self._engine.bundle_digest

    @property
    def policy_id(self) -> str:
        return self._engine.policy_id

    @property
    def hits(self) -> int:
        return self._hits

    @property
    def misses(self) -> int:
        return self._misses

    def __len__(self) -> int:
        return len(self._decisions)

    def evaluate(self, input: Mapping[str, object], input_digest: bytes) -> Decision:
        """The memoised Decision for this (bundle, input), else the engine's, kept."""
        key = (self._engine.bundle_digest, bytes(input_digest))
        with self._lock:
            decision = self._decisions.get(key)
            if decision is not None:
                self._decisions.move_to_end(key)
                self._hits += 1
                return decision
            self._misses += 1
        # Evaluated outside the lock so one slow evaluation (a remote engine waiting on
        # its timeout) does not hold up every other node.  Two threads may evaluate the
        # same key at once; the policy is pure, so either Decision is the Decision.
        decision = self._engine.evaluate(input)
        with self._lock:
            self._decisions[key] = decision
            self._decisions.move_to_end(key)
            while len(self._decisions) > self._entries:
                self._decisions.popitem(last=False)
        return decision

    def clear(self) -> None:
        with self._lock:
            self._decisions.clear()
