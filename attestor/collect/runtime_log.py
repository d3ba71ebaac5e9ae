"""The agent's runtime event log: what it measured into the runtime PCR since boot.

The file `runtime.log` in the state directory is the log itself, in the format the
verifier replays (`verifier.evidence.runtime_log`: a crypto-agile TCG log of EV_EVENT_TAG
events), so what the agent keeps is byte for byte what it sends.

Write-ahead: a record is saved before its digest is extended.  A crash between the two
leaves one record too many, never a measurement without a record, and `resume` can tell
which happened by replaying with and without the last record.

At start (`resume`) the stored log is checked against the runtime PCR:
- it replays to the PCR: this boot's log, kept;
- it replays without its last record: that extend never happened, the record is dropped;
- the PCR is all zeros: the node rebooted (PCRs 0-15 are reset only by TPM2_Startup
  CLEAR), a new empty log begins;
- otherwise something extended the PCR without a record here.  The stored log is kept
  and a warning logged; the verifier refuses its replay, which is the right outcome
  (closed): no record of what was measured, no trust in it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from attestor.state_files import write_atomic
from attestor.tpm import Tpm, TpmError
from verifier.evidence.errors import EventLogMalformed, RuntimeLogMalformed
from verifier.evidence.event_types import EventType
from verifier.evidence.eventlog import REPLAYABLE_BANKS, Event, parse_event_log
from verifier.evidence.images import ImageRecord, encode_image_event, parse_image_event
from verifier.evidence.runtime_log import (
    TAGGED_EVENT_ASSET_TAG,
    TAGGED_EVENT_IMAGE,
    TaggedEvent,
    encode_runtime_log,
    expected_pcr,
    parse_image_data,
    parse_tagged_event_data,
)
from verifier.evidence.tpm_structures import HashAlg, PcrSelection

log = logging.getLogger("lightgate.agent")

RUNTIME_LOG_FILE: Final = "runtime.log"
#: A compact JWS of this verifier's asset tag is ~600 bytes; refuse to measure anything
#: that is not a plausible token (jose.MAX_TOKEN_BYTES).
MAX_TAG_BYTES: Final = 64 * 1024


class AssetTagUnusable(ValueError):
    """The verifier handed the agent something that is not a token it can measure."""


@dataclass
class RuntimeLog:
    """The records this agent extended into `pcr` since boot, in order."""

    path: Path
    pcr: int
    banks: tuple[HashAlg, ...] = ()
    events: list[TaggedEvent] = field(default_factory=list)

    @classmethod
    def load(cls, state_dir: Path, pcr: int) -> RuntimeLog:
        """The stored log, or an empty one when there is none or it cannot be used."""
        path = state_dir / RUNTIME_LOG_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(path, pcr)
        if not raw:
            return cls(path, pcr)
        try:
            parsed = parse_event_log(raw)
            events = [_stored_event(event) for event in parsed.events[1:]]
        except (EventLogMalformed, RuntimeLogMalformed) as exc:
            # resume() then decides: a reset PCR starts anew, any other value is refused
            # by the verifier, as it should be with no readable record of it.
            log.warning("stored runtime log unreadable", extra={"fields": {"detail": exc.reason}})
            return cls(path, pcr)
        if any(event.pcr != pcr for event in events):
            log.warning(
                "stored runtime log is for another PCR; starting anew",
                extra={"fields": {"runtime_pcr": pcr}},
            )
            return cls(path, pcr)
        return cls(path, pcr, parsed.banks, events)

    @classmethod
    def resume(cls, tpm: Tpm, state_dir: Path, pcr: int) -> RuntimeLog:
        """The stored log reconciled with the runtime PCR (see the module docstring)."""
        runtime = cls.load(state_dir, pcr)
        current = runtime.read_pcr(tpm)
        banks = tuple(current)
        if _replays_to(runtime.events, runtime.banks, current):
            outcome = "kept"
        elif runtime.events and _replays_to(runtime.events[:-1], runtime.banks, current):
            runtime.events.pop()
            outcome = "dropped a record never extended"
        elif not any(any(value) for value in current.values()):
            runtime.events.clear()
            runtime.banks = banks
            outcome = "new (the runtime PCR was reset: a reboot)"
        else:
            log.warning(
                "runtime PCR was extended without a record in the runtime log; the verifier "
                "will refuse its replay until the node reboots",
                extra={"fields": {"runtime_pcr": pcr, "records": len(runtime.events)}},
            )
            return runtime
        if not runtime.banks:
            runtime.banks = banks
        runtime.save()
        log.info(
            "runtime log resumed",
            extra={"fields": {"runtime_pcr": pcr, "records": len(runtime.events), "log": outcome}},
        )
        return runtime

    def read_pcr(self, tpm: Tpm) -> dict[HashAlg, bytes]:
        """The runtime PCR in every allocated bank this agent can hash."""
        banks = _runtime_banks(tpm, self.pcr)
        values = tpm.read_pcrs(PcrSelection.of({bank: [self.pcr] for bank in banks}))
        return {bank: values[bank][self.pcr] for bank in banks}

    def save(self) -> None:
        write_atomic(self.path, encode_runtime_log(self.events, self.banks) if self.banks else b"")

    def encoded(self) -> bytes:
        """The log as the verifier takes it (AttestRequest.runtime_log); empty when no
        event was measured this boot."""
        return encode_runtime_log(self.events, self.banks) if self.events else b""

    def last_asset_tag(self) -> str | None:
        for event in reversed(self.events):
            if event.tag_id == TAGGED_EVENT_ASSET_TAG:
                return event.data.decode("ascii")
        return None

    def measured_images(self) -> set[ImageRecord]:
        """The images this boot's log already records."""
        return {
            parse_image_event(event.data)
            for event in self.events
            if event.tag_id == TAGGED_EVENT_IMAGE
        }

    def append_image(self, tpm: Tpm, record: ImageRecord) -> None:
        self.append(tpm, TAGGED_EVENT_IMAGE, encode_image_event(record))

    def append_asset_tag(self, tpm: Tpm, token: str) -> None:
        self.append(tpm, TAGGED_EVENT_ASSET_TAG, asset_tag_bytes(token))

    def append(self, tpm: Tpm, tag_id: int, data: bytes) -> None:
        """Record, then extend H_bank(tagged event data) in every allocated bank.  After a
        TpmError the TPM may or may not have extended: `resume` again to find out."""
        if not self.banks:
            self.banks = tuple(_runtime_banks(tpm, self.pcr))
        event = TaggedEvent(self.pcr, tag_id, data)
        self.events.append(event)
        self.save()  # write-ahead, see the module docstring
        tpm.extend_pcr(self.pcr, {bank: event.digest(bank) for bank in self.banks})


def asset_tag_bytes(token: str) -> bytes:
    """The token as measured: printable ASCII (a compact JWS), bounded."""
    if not token or len(token) > MAX_TAG_BYTES or not (token.isascii() and token.isprintable()):
        raise AssetTagUnusable(f"asset tag of {len(token)} characters is not a compact JWS")
    return token.encode("ascii")


def _stored_event(event: Event) -> TaggedEvent:
    if event.event_type != EventType.EV_EVENT_TAG:
        raise RuntimeLogMalformed(event.offset, event.number, f"{event.type_name} stored")
    tagged = parse_tagged_event_data(event)
    if tagged.tag_id == TAGGED_EVENT_IMAGE:
        parse_image_data(event, tagged)  # measured_images() reads it later
    return tagged


def _runtime_banks(tpm: Tpm, pcr: int) -> list[HashAlg]:
    banks = [
        bank
        for bank, pcrs in tpm.allocated_banks().items()
        if pcr in pcrs and bank in REPLAYABLE_BANKS
    ]
    if not banks:
        raise TpmError(f"no PCR bank this agent can hash has PCR {pcr} allocated")
    return banks


def _replays_to(
    events: list[TaggedEvent], banks: tuple[HashAlg, ...], current: Mapping[HashAlg, bytes]
) -> bool:
    if events and set(banks) != set(current):
        return False
    return all(expected_pcr(events, bank) == value for bank, value in current.items())
