"""An event log checked against a verified quote: replay, comparison, workarounds.

`verify_event_log` is the only way to a `VerifiedEventLog`; claims that reach appraisal
come only from one (STYLE: verified before used).  Pure: no I/O.

Which PCRs are compared.  Every quoted PCR the log extends, and every quoted PCR of
`log_pcrs` (the PCRs the firmware and boot loader own, 0-9 by default) even when the
log does not extend it: a PCR the boot owns but the log never mentions must still hold
its initial value, or events are missing (a truncated log).  PCRs outside both (IMA's
PCR 10, Lightgate's runtime PCR) belong to other logs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from verifier.evidence.errors import EventLogBankMissing, EventLogReplayMismatch
from verifier.evidence.event_types import EventType
from verifier.evidence.eventlog import NO_PCR, Event, EventLog, Replay, replay
from verifier.evidence.tpm_structures import HashAlg

#: PCRs the platform firmware (0-7, PFP 3.3.4) and the boot loader (8-9: grub's
#: commands, kernel, initrd) own.
DEFAULT_LOG_PCRS = frozenset(range(10))


@dataclass(frozen=True, slots=True)
class PcrMismatch:
    bank: HashAlg
    pcr: int
    replayed: bytes
    quoted: bytes

    def describe(self) -> str:
        return (
            f"{self.bank.bank_name} PCR{self.pcr}: log replays to {self.replayed.hex()}, "
            f"quoted {self.quoted.hex()}"
        )


@dataclass(frozen=True, slots=True)
class Workaround:
    """A known firmware quirk that a faithful replay cannot reproduce (STYLE: one table).

    Tried only on a copy, only for the PCR it affects, only after plain replay of that
    PCR failed; the verified log names every workaround it needed.
    """

    name: str
    pcr: int
    description: str
    firmware: str
    events: Callable[[EventLog], Sequence[Event]]


def _exit_boot_services_events(log: EventLog) -> Sequence[Event]:
    # PFP 1.05, 10.4.4 (EV_EFI_ACTION): firmware measures these two strings into PCR5 when
    # ExitBootServices() is invoked and returns.  Some firmware never logs them although
    # it extends them (go-attestation's testdata/ebs_event_missing_eventlog).
    strings = (b"Exit Boot Services Invocation", b"Exit Boot Services Returned with Success")
    number = len(log.events)
    return tuple(
        Event(
            number + i,
            log.size,
            5,
            EventType.EV_EFI_ACTION,
            tuple((int(bank), bank.digest(text)) for bank in log.banks),
            text,
        )
        for i, text in enumerate(strings)
    )


WORKAROUNDS: tuple[Workaround, ...] = (
    Workaround(
        name="ebs-events-missing",
        pcr=5,
        description="ExitBootServices EV_EFI_ACTION events extended into PCR5 but not logged",
        firmware="seen on physical machines with AMI-derived firmware (S-CRTM 'M60...')",
        events=_exit_boot_services_events,
    ),
)


@dataclass(frozen=True, slots=True)
class VerifiedEventLog:
    """An event log whose replay equals the quoted PCRs in every bank both cover."""

    log: EventLog
    replay: Replay
    verified_pcrs: frozenset[int]  # PCRs whose events the quote vouches for
    verified_banks: tuple[HashAlg, ...]
    unverified_banks: tuple[HashAlg, ...]  # quoted banks the log has no digests for
    workarounds: tuple[str, ...]

    def events(self) -> tuple[Event, ...]:
        """The log's events in PCRs the quote verified (what claims may use)."""
        return tuple(e for e in self.log.events if e.pcr in self.verified_pcrs)


def verify_event_log(
    log: EventLog,
    quoted: Mapping[HashAlg, Mapping[int, bytes]],
    *,
    log_pcrs: frozenset[int] = DEFAULT_LOG_PCRS,
    node_id: str | None = None,
    plain: Replay | None = None,
) -> VerifiedEventLog:
    """Replay `log` and compare with the quoted PCR values; raises EventLogBankMissing or
    EventLogReplayMismatch naming every PCR that differs.  `plain` is `replay(log)` when
    the caller has it already (a cache)."""
    banks = tuple(bank for bank in quoted if bank in log.banks)
    if not banks:
        have = ", ".join(b.bank_name for b in log.banks) or "none"
        want = ", ".join(b.bank_name for b in quoted) or "none"
        raise EventLogBankMissing(
            f"the quote covers {want}; the log has digests for {have}", node_id=node_id
        )
    if plain is None:
        plain = replay(log)
    mismatches = compare(log, plain, quoted, banks, log_pcrs)
    result, applied = plain, []
    for workaround in WORKAROUNDS:
        if not any(m.pcr == workaround.pcr for m in mismatches):
            continue
        patched = replay(log, workaround.events(log))
        still = compare(log, patched, quoted, banks, log_pcrs)
        if not any(m.pcr == workaround.pcr for m in still):
            result, mismatches = patched, still
            applied.append(workaround.name)
    if mismatches:
        raise EventLogReplayMismatch("; ".join(m.describe() for m in mismatches), node_id=node_id)
    covered = set(log_pcrs)
    for bank in banks:
        covered.update(result.pcrs.get(bank, {}))
    quoted_pcrs = set().union(*(set(quoted[bank]) for bank in banks))
    return VerifiedEventLog(
        log=log,
        replay=result,
        verified_pcrs=frozenset(covered & quoted_pcrs),
        verified_banks=banks,
        unverified_banks=tuple(bank for bank in quoted if bank not in log.banks),
        workarounds=tuple(applied),
    )


def compare(
    log: EventLog,
    replayed: Replay,
    quoted: Mapping[HashAlg, Mapping[int, bytes]],
    banks: Sequence[HashAlg],
    log_pcrs: frozenset[int],
) -> list[PcrMismatch]:
    """Every quoted PCR the log extends or owns whose value differs from the replay."""
    mismatches: list[PcrMismatch] = []
    for bank in banks:
        values = replayed.pcrs.get(bank, {})
        for pcr, quoted_value in sorted(quoted[bank].items()):
            if pcr == NO_PCR:
                continue
            expected = values.get(pcr)
            if expected is None:
                if pcr not in log_pcrs:
                    continue
                expected = log.initial_value(bank, pcr)
            if expected != quoted_value:
                mismatches.append(PcrMismatch(bank, pcr, expected, quoted_value))
    return mismatches
