"""The decision memo: one evaluation per (bundle digest, input digest), bounded, shared
between threads, and never remembering a failure."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import pytest

from tests.unit.verifier.policy.conftest import good_input
from verifier.policy.bundle import PolicyBundle
from verifier.policy.embedded import EmbeddedEngine
from verifier.policy.engine import Decision, Status
from verifier.policy.errors import PolicyUnavailable
from verifier.policy.memo import MemoisedEngine, input_digest


class CountingEngine:
    """The real embedded engine, counting its evaluations; `fail_next` makes the next
    evaluations raise as an unreachable remote engine would."""

    def __init__(self, engine: EmbeddedEngine) -> None:
        self.inner = engine
        self.evaluations = 0
        self.fail_next = 0
        self.digest: str | None = None

    @property
    def bundle_digest(self) -> str:
        return self.digest or self.inner.bundle_digest

    @property
    def policy_id(self) -> str:
        return self.inner.policy_id

    def evaluate(self, input: Mapping[str, object]) -> Decision:
        self.evaluations += 1
        if self.fail_next:
            self.fail_next -= 1
            raise PolicyUnavailable("OPA at http://opa: connection refused")
        return self.inner.evaluate(input)


@pytest.fixture
def counting(bundle: PolicyBundle) -> CountingEngine:
    return CountingEngine(EmbeddedEngine(bundle))


def test_the_same_input_is_evaluated_once(counting: CountingEngine) -> None:
    memo = MemoisedEngine(counting)
    policy_input = good_input()
    first = memo.evaluate(policy_input, input_digest(policy_input))
    again = memo.evaluate(policy_input, input_digest(policy_input))
    assert again is first
    assert counting.evaluations == 1
    assert (memo.hits, memo.misses) == (1, 1)
    assert memo.policy_id == counting.policy_id


def test_the_key_is_the_callers_digest(counting: CountingEngine) -> None:
    memo = MemoisedEngine(counting)
    off = good_input(claims={"secure-boot.enabled": False})
    assert memo.evaluate(good_input(), b"a").affirming
    assert memo.evaluate(off, b"b").status is Status.CONTRAINDICATED
    assert counting.evaluations == 2


def test_a_new_policy_starts_with_no_memoised_decisions(counting: CountingEngine) -> None:
    memo = MemoisedEngine(counting)
    memo.evaluate(good_input(), b"a")
    counting.digest = "f" * 64  # the engine now runs another bundle
    memo.evaluate(good_input(), b"a")
    assert counting.evaluations == 2


def test_failures_are_not_memoised(counting: CountingEngine) -> None:
    memo = MemoisedEngine(counting)
    counting.fail_next = 1
    with pytest.raises(PolicyUnavailable):
        memo.evaluate(good_input(), b"a")
    assert memo.evaluate(good_input(), b"a").affirming
    assert counting.evaluations == 2
    assert len(memo) == 1


def test_the_memo_is_bounded_least_recently_used_first(counting: CountingEngine) -> None:
    memo = MemoisedEngine(counting, entries=2)
    memo.evaluate(good_input(), b"a")
    memo.evaluate(good_input(), b"b")
    memo.evaluate(good_input(), b"a")  # a is now the most recent
    memo.evaluate(good_input(), b"c")  # evicts b
    assert len(memo) == 2
    memo.evaluate(good_input(), b"a")
    assert counting.evaluations == 3
    memo.evaluate(good_input(), b"b")
    assert counting.evaluations == 4


def test_a_memo_needs_room(counting: CountingEngine) -> None:
    with pytest.raises(ValueError, match="at least one entry"):
        MemoisedEngine(counting, entries=0)


def test_threads_share_the_memo(bundle: PolicyBundle) -> None:
    memo = MemoisedEngine(EmbeddedEngine(bundle))
    decisions: list[Decision] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(50):
            decision = memo.evaluate(good_input(), b"same")
            with lock:
                decisions.append(decision)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(decisions) == 200
    assert all(d == decisions[0] for d in decisions)
    assert memo.hits + memo.misses == 200
    assert 1 <= memo.misses <= 4  # at most one concurrent first evaluation per thread


def test_input_digest_is_canonical() -> None:
    assert input_digest({"a": 1, "b": [1, 2]}) == input_digest({"b": [1, 2], "a": 1})
    assert input_digest({"a": 1}) != input_digest({"a": 2})
    assert len(input_digest({})) == 32
