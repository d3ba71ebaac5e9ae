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
    applies: Callable[[EventLog], bool]  # the quirk's signature in the log
    events: Callable[[EventLog], Sequence[Event]]


#: PFP 1.05, 10.4.4: what firmware measures into PCR5 around ExitBootServices().
EXIT_BOOT_SERVICES_ACTIONS = (
    b"Exit Boot Services Invocation",
    b"Exit Boot Services Returned with Success",
)


def _exit_boot_services_missing(log: EventLog) -> bool:
    """Neither ExitBootServices event is in PCR5: the quirk, not some other PCR5 trouble."""
    return not any(
        e.pcr == 5
        and e.event_type == EventType.EV_EFI_ACTION
        and e.data in EXIT_BOOT_SERVICES_ACTIONS
        for e in log.events
    )


def _exit_boot_services_events(log: EventLog) -> Sequence[Event]:
    # PFP 1.05, 10.4.4 (EV_EFI_ACTION): firmware measures these two strings into PCR5 when
    # ExitBootServices() is invoked and returns.  Some firmware never logs them although
    # it extends them (go-attestation's testdata/ebs_event_missing_eventlog).
    strings = EXIT_BOOT_SERVICES_ACTIONS
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
        applies=_exit_boot_services_missing,
        events=_exit_boot_services_events,
    ),
)


#: The bank claims name components by: the one fleets quote by default (SHA-256), then the
#: stronger ones, SHA-1 last.  Learning from a file and appraising a quote pick alike.
PREFERRED_BANKS = (HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512, HashAlg.SM3_256, HashAlg.SHA1)


@dataclass(frozen=True, slots=True)
class VerifiedEventLog:
    """An event log whose replay equals the quoted PCRs in every quoted bank.

    `verified_pcrs` is per bank: a PCR's events are vouched for in a bank only when
    that bank of that PCR was quoted and matched.  Claims use one bank (`claims_bank`,
    the strongest verified) and only the PCRs verified in it.
    """

    log: EventLog
    replay: Replay
    verified_pcrs: Mapping[HashAlg, frozenset[int]]
    workarounds: tuple[str, ...]
    synthesized: tuple[Event, ...] = ()  # events a workaround added (the quote proves them)

    @property
    def verified_banks(self) -> tuple[HashAlg, ...]:
        return tuple(self.verified_pcrs)

    @property
    def claims_bank(self) -> HashAlg:
        return next(b for b in PREFERRED_BANKS if b in self.verified_pcrs)

    @property
    def claims_pcrs(self) -> frozenset[int]:
        return self.verified_pcrs[self.claims_bank]

    def events(self) -> tuple[Event, ...]:
        """The events of PCRs the claims bank verified, workaround events included."""
        pcrs = self.claims_pcrs
        return tuple(e for e in (*self.log.events, *self.synthesized) if e.pcr in pcrs)


def verify_event_log(
    log: EventLog,
    quoted: Mapping[HashAlg, Mapping[int, bytes]],
    *,
    log_pcrs: frozenset[int] = DEFAULT_LOG_PCRS,
    node_id: str | None = None,
    plain: Replay | None = None,
) -> VerifiedEventLog:
    """Replay `log` and compare with the quoted PCR values; raises EventLogBankMissing
    (a quoted bank the log has no digests for: it could not be checked) or
    EventLogReplayMismatch naming every PCR that differs.  `plain` is `replay(log)`
    when the caller has it already (a cache)."""
    missing = [bank for bank in quoted if bank not in log.banks]
    if missing or not quoted:
        have = ", ".join(b.bank_name for b in log.banks) or "none"
        want = ", ".join(b.bank_name for b in missing) or "no bank"
        hint = ""
        if log.banks == (HashAlg.SHA1,):
            hint = " (a legacy SHA-1 log: quote the sha1 bank to check it)"
        raise EventLogBankMissing(
            f"the quote covers {want}; the log has digests for {have} only{hint}",
            node_id=node_id,
        )
    banks = tuple(quoted)
    if plain is None:
        plain = replay(log)
    mismatches = compare(log, plain, quoted, banks, log_pcrs)
    result, applied = plain, []
    synthesized: tuple[Event, ...] = ()
    for workaround in WORKAROUNDS:
        if not any(m.pcr == workaround.pcr for m in mismatches) or not workaround.applies(log):
            continue
        extra = tuple(workaround.events(log))
        patched = replay(log, extra)
        still = compare(log, patched, quoted, banks, log_pcrs)
        if not any(m.pcr == workaround.pcr for m in still):
            result, mismatches, synthesized = patched, still, (*synthesized, *extra)
            applied.append(workaround.name)
    if mismatches:
        raise EventLogReplayMismatch("; ".join(m.describe() for m in mismatches), node_id=node_id)
    verified: dict[HashAlg, frozenset[int]] = {}
    for bank in banks:
        covered = set(log_pcrs) | set(result.pcrs.get(bank, {}))
        verified[bank] = frozenset(covered & set(quoted[bank]))
    return VerifiedEventLog(log, result, verified, tuple(applied), synthesized)


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
