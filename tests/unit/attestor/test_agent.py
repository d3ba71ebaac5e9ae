"""Agent pieces that need no TPM: backoff, persisted state."""

from __future__ import annotations

import random
import stat
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from attestor.agent import AgentState, StateDir, backoff_delay
from attestor.tpm import AkBlobs


@given(attempt=st.integers(0, 10_000), seed=st.integers(0, 2**32))
def test_backoff_stays_within_half_and_full_ceiling(attempt: int, seed: int) -> None:
    delay = backoff_delay(attempt, 1.0, 60.0, random.Random(seed))
    ceiling = min(60.0, 2.0 ** min(attempt, 32))
    assert ceiling / 2 <= delay <= ceiling


def test_backoff_grows_then_caps() -> None:
    rng = random.Random(7)
    ceilings = [backoff_delay(n, 1.0, 60.0, rng) for n in range(12)]
    assert ceilings[0] <= 1.0 and ceilings[-1] >= 30.0
    assert all(d <= 60.0 for d in ceilings)


def test_jitter_spreads_agents_apart() -> None:
    delays = {backoff_delay(5, 1.0, 60.0, random.Random(seed)) for seed in range(20)}
    assert len(delays) == 20


def test_state_dir_round_trip_and_permissions(tmp_path: Path) -> None:
    state_dir = StateDir(tmp_path / "state")
    assert state_dir.load_ak() is None
    assert state_dir.load_state("n1") == AgentState("n1", False)
    blobs = AkBlobs(b"\x00\x02pub", b"\x00\x03priv")
    state_dir.save_ak(blobs)
    state_dir.save_state(AgentState("n1", True))
    again = StateDir(tmp_path / "state")
    assert again.load_ak() == blobs
    assert again.load_state("other-default") == AgentState("n1", True)
    mode = stat.S_IMODE((tmp_path / "state" / "ak.priv").stat().st_mode)
    assert mode == 0o600
    assert not list((tmp_path / "state").glob("*.tmp"))


def test_a_challenge_for_a_pcr_no_tpm_has_is_malformed() -> None:
    """The verifier's selection reaches the TPM only if every index can exist: the agent
    reports a malformed challenge instead of failing inside the TPM layer."""
    import pytest

    from lightgate.wire import convert
    from lightgate.wire.v1 import attestation_pb2 as pb
    from verifier.evidence.errors import TpmStructureMalformed

    good = convert.selection_from_wire([pb.PcrBankSelection(hash="sha256", pcrs=[0, 7, 23])])
    assert good.banks[0].pcrs == (0, 7, 23)
    with pytest.raises(TpmStructureMalformed, match="PCR 40 is out of range"):
        convert.selection_from_wire([pb.PcrBankSelection(hash="sha256", pcrs=[0, 40])])
    with pytest.raises(TpmStructureMalformed, match="md5"):
        convert.selection_from_wire([pb.PcrBankSelection(hash="md5", pcrs=[0])])
