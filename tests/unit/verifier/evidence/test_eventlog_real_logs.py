"""The parser and replay on real firmware logs: the shared firmware-log set.

The logs live in `<repo>/../shared/firmware-logs` (see its SOURCES.md for where each
came from); they are read in place, never copied here, and this module is skipped when
the folder is absent.  `index.json` there drives the parametrization: one test id per
log stem.  Three oracles, in order of authority:

1. `<stem>.expected.json`: PCR values the log's *source* ships (TPM quotes, PCR reads,
   the source's own test assertions).  A faithful replay must reproduce each, except
   where SOURCES.md ("Quoted PCRs that a faithful replay must NOT reproduce") says it
   must not; those exceptions are asserted as what they are, not skipped.
2. `index.json`: format, banks and event counts.
3. `<stem>.tpm2_eventlog.yaml`: tpm2-tools 5.4's output, compared event by event and for
   its final PCRs, except where SOURCES.md shows the tool is wrong.

How tpm2_eventlog 5.4 prints a log (what `tool_events` undoes):
- Crypto-agile logs: `events:` is a YAML list.  `EventNum` counts from 0 and includes
  the Spec ID header (as our `Event.number` does).  The header has a single `Digest`
  (its SHA-1 field); every other event has `Digests`, a list of {AlgorithmId, Digest}.
- Legacy SHA-1 logs: `events:` is ONE mapping whose keys (PCRIndex, EventType,
  DigestCount, Digests, EventSize, Event) repeat once per event, with no EventNum.
  `yaml.safe_load` keeps only the last value of a repeated key, so for these the YAML
  is composed with the safe loader and the key/value pairs are walked in order, a new
  event starting at each `PCRIndex`.
- Event types it does not know (ibmtss deb1's vendor type 0x0000040E) are printed as
  "Unknown event type"; we print `EV_0x0000040E` (TOOL_TYPE_NAMES).
- `pcrs:` maps bank -> PCR -> an unquoted 0x... number, which YAML reads as an int.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from verifier.evidence.errors import EventLogBankMissing, EventLogMalformed
from verifier.evidence.event_types import EventType
from verifier.evidence.eventlog import (
    NO_PCR,
    STARTUP_LOCALITY_SIGNATURE,
    EventLog,
    LogFormat,
    Replay,
    parse_event_log,
    replay,
)
from verifier.evidence.measured_boot import WORKAROUNDS, verify_event_log
from verifier.evidence.tpm_structures import HashAlg

REPO = Path(__file__).resolve().parents[4]
LOGS = (REPO / ".." / "shared" / "firmware-logs").resolve()

if not (LOGS / "index.json").is_file():
    pytest.skip(f"shared firmware logs not found at {LOGS}", allow_module_level=True)

INDEX: list[dict[str, Any]] = json.loads((LOGS / "index.json").read_text())["logs"]
ENTRIES: dict[str, dict[str, Any]] = {e["file"].removesuffix(".bin"): e for e in INDEX}
STEMS = sorted(ENTRIES)

# --- what SOURCES.md says about particular logs ------------------------------------------

BOGUS = "keylime__binary_bios_measurements-bogus"  # ASCII text, not a log
EBS = "goattest__ebs_event_missing_eventlog"
EBS_PLAIN_SHA1_PCR5 = "e5781a2fd49c23a33b16bf0ba5f10efa1aa5d43c"
SP800_155 = "gotpmtools__eventlogwithsp800155"
IDEAPAD = "ibmtss__ideapad1"
SHORT_NO_ACTION = "goattest__short_no_action_eventlog"

#: PCRs extended after boot that the sources' quotes and PCR reads include (SOURCES.md 7):
#: IMA's PCR 10 is never in these logs; shim's PCR 14 is in some (its MokList events).
IMA_PCR, SHIM_PCR = 10, 14

#: PCRs 17-22 (D-RTM) are set to all ones by TPM2_Startup on PC Client platforms and
#: only a locality-4 D-RTM sequence resets them (TCG PC Client PTP 2.0, PCR attributes
#: table); no firmware log extends them, so a quote of a boot without D-RTM shows 0xFF..
DRTM_PCRS = frozenset(range(17, 23))

#: Logs whose PCR0 tpm2_eventlog 5.4 gets wrong (SOURCES.md 1 and 3), with the reason.
#: Its actual rule, reproduced by `tool_pcr0` below: PCR0 starts at zero and every
#: EV_NO_ACTION event but the Spec ID header is extended.
TOOL_WRONG_PCR0 = {
    "goeventlog__glinux-alex": "ignores StartupLocality 3",
    "gotpmtools__gdc-host": "ignores StartupLocality 3",
    "keylime__binary_bios_measurements": "ignores StartupLocality 3",
    SP800_155: "extends the SP800-155 EV_NO_ACTION events",
}

#: Event type names that tpm2_eventlog prints differently (its name -> how ours reads).
TOOL_TYPE_NAMES = {"Unknown event type": "EV_0x"}


# --- loading (cached: each log is read and parsed once per session) ---------------------


@cache
def raw_log(stem: str) -> bytes:
    return (LOGS / ENTRIES[stem]["file"]).read_bytes()


@cache
def parsed(stem: str) -> EventLog:
    return parse_event_log(raw_log(stem))


@cache
def replayed(stem: str) -> Replay:
    return replay(parsed(stem))


def expected_values(stem: str) -> Iterator[tuple[str, HashAlg, int, bytes]]:
    """(source locator, bank, PCR, value) for every value in <stem>.expected.json."""
    document = json.loads((LOGS / f"{stem}.expected.json").read_text())
    for entry in document["expected"]:
        locator = f"{entry['source']['path']}: {entry['source']['locator']}"
        for bank_name, pcrs in entry["pcrs"].items():
            for pcr, value in pcrs.items():
                yield locator, HashAlg.from_name(bank_name), int(pcr), bytes.fromhex(value)


def tool_ok(stem: str) -> bool:
    """Whether tpm2_eventlog parsed the whole log (index.json: ok or ok-with-warning)."""
    return str(ENTRIES[stem]["tpm2_eventlog"]["status"]).startswith("ok")


@cache
def tool_document(stem: str) -> dict[str, Any]:
    # Some of the tool's output is not valid UTF-8 (raw firmware strings; SOURCES.md 8).
    text = (LOGS / f"{stem}.tpm2_eventlog.yaml").read_bytes().decode(errors="replace")
    document: dict[str, Any] = yaml.safe_load(text)
    if not isinstance(document.get("events"), list):
        document["events"] = _legacy_tool_events(text)
    return document


def _legacy_tool_events(text: str) -> list[dict[str, Any]]:
    """The events of a legacy log's output, whose `events:` mapping repeats its keys."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        assert isinstance(root, yaml.MappingNode)
        node = next(v for k, v in root.value if k.value == "events")
        assert isinstance(node, yaml.MappingNode)
        events: list[dict[str, Any]] = []
        for key, value in node.value:
            if key.value == "PCRIndex":
                events.append({})
            events[-1][key.value] = loader.construct_object(value, deep=True)
        return events
    finally:
        loader.dispose()


def tool_digests(event: Mapping[str, Any]) -> dict[str, str]:
    if "Digests" in event:
        return {d["AlgorithmId"]: d["Digest"] for d in event["Digests"]}
    return {"sha1": event["Digest"]}  # the Spec ID header: its TCG_PCR_EVENT digest


def tool_pcrs(stem: str) -> dict[HashAlg, dict[int, bytes]]:
    out: dict[HashAlg, dict[int, bytes]] = {}
    for bank_name, values in tool_document(stem)["pcrs"].items():
        bank = HashAlg.from_name(bank_name)
        out[bank] = {
            int(pcr): int(value).to_bytes(bank.digest_size, "big") for pcr, value in values.items()
        }
    return out


def tool_pcr0(log: EventLog, bank: HashAlg) -> bytes:
    """PCR0 as tpm2_eventlog 5.4 computes it: from zero, with EV_NO_ACTION extended."""
    value = bytes(bank.digest_size)
    for event in log.events[1:] if log.format is LogFormat.CRYPTO_AGILE else log.events:
        digest = event.digest(bank)
        if event.pcr == 0 and digest is not None:
            value = bank.digest(value + digest)
    return value


def stems_where(predicate: Any) -> list[str]:
    return [stem for stem in STEMS if predicate(stem)]


WITH_EXPECTED = stems_where(lambda s: (LOGS / f"{s}.expected.json").is_file())
PARSEABLE = stems_where(lambda s: s != BOGUS)
TOOL_PARSED = stems_where(tool_ok)


# --- index.json --------------------------------------------------------------------------


def test_index_covers_every_log_in_the_folder() -> None:
    assert {p.stem for p in LOGS.glob("*.bin")} == set(STEMS)
    assert len(STEMS) >= 20


@pytest.mark.parametrize("stem", STEMS)
def test_format_banks_and_event_count_match_the_index(stem: str) -> None:
    entry = ENTRIES[stem]
    assert hashlib.sha256(raw_log(stem)).hexdigest() == entry["sha256"]
    if stem == BOGUS:
        assert entry["format"].startswith("invalid") and entry["events"] == 0
        with pytest.raises(EventLogMalformed):
            parsed(stem)
        return
    log = parsed(stem)
    # "legacy-sha1 (fragment: ...)" for the one-event fragment: the format is the first word.
    assert log.format == LogFormat(entry["format"].split()[0])
    assert [bank.bank_name for bank in log.banks] == entry["banks"]
    assert len(log.events) == entry["events"]
    assert log.size == entry["size"]
    assert count_by(e.type_name for e in log.events) == index_event_types(entry)
    # events_per_pcr leaves out the Spec ID header.
    records = log.events[1:] if log.format is LogFormat.CRYPTO_AGILE else log.events
    assert count_by(str(e.pcr) for e in records) == entry["events_per_pcr"]


def count_by(keys: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return counts


def index_event_types(entry: Mapping[str, Any]) -> dict[str, int]:
    """index.json's event-type counts under our names: it splits EV_NO_ACTION by the
    data's signature ("EV_NO_ACTION(SpecID)") and names vendor types "0x40e"."""
    counts: dict[str, int] = {}
    for index_name, count in entry["event_types"].items():
        name = index_name
        if index_name.startswith("EV_NO_ACTION("):
            name = "EV_NO_ACTION"
        elif index_name.startswith("0x"):
            name = f"EV_0x{int(index_name, 16):08X}"
        counts[name] = counts.get(name, 0) + count
    return counts


# --- the sources' PCR values ----------------------------------------------------------


@pytest.mark.parametrize("stem", WITH_EXPECTED)
def test_replay_reproduces_the_sources_pcr_values(stem: str) -> None:
    """Each value the source ships, by this rule:

    - PCR 10 (IMA): the log does not extend it, and its value is not checked.
    - PCR 14 (shim's MOK variables) not extended by the log: not checked, as shim
      extends it at run time.  Where the log does extend it (gdc-host, the SP800-155
      log: shim logs MokList, MokListX and MokListTrusted as EV_IPL events), the
      replayed value must equal the source's, like any other extended PCR.
    - A bank the log has no digests for (the sha256 bank of a SHA-1-only legacy log):
      the log is legacy SHA-1 and replay has no such bank.
    - goattest ebs_event_missing sha1 PCR5: plain replay gives e5781a2f...: the firmware
      did not log the ExitBootServices events (test_ebs_quirk_on_its_real_log).
    - A PCR the log extends: the replayed value equals the source's.
    - A PCR the log does not extend: the source's value is that PCR's reset value,
      which replay would start from: `EventLog.initial_value` (all zeros, or 00..0L for
      PCR0 after StartupLocality L) for PCRs 0-16 and 23, all ones for PCRs 17-22.
    """
    log, result = parsed(stem), replayed(stem)
    values_seen = 0
    for locator, bank, pcr, value in expected_values(stem):
        values_seen += 1
        where = f"{stem} {bank.bank_name} PCR{pcr} ({locator})"
        extended = any(e.pcr == pcr for e in log.events if e.extends)
        if pcr == IMA_PCR:
            assert not extended, where
            continue
        if pcr == SHIM_PCR and not extended:
            continue
        if bank not in log.banks:
            assert log.format is LogFormat.LEGACY_SHA1 and bank is not HashAlg.SHA1, where
            assert bank not in result.pcrs, where
            continue
        values = result.pcrs[bank]
        if (stem, bank, pcr) == (EBS, HashAlg.SHA1, 5):
            assert values[pcr].hex() == EBS_PLAIN_SHA1_PCR5, where
            continue
        if pcr in values:
            assert values[pcr].hex() == value.hex(), where
        elif pcr in DRTM_PCRS:
            assert value == b"\xff" * bank.digest_size, where
        else:
            assert value == log.initial_value(bank, pcr), where
    assert values_seen > 0


def test_ebs_quirk_on_its_real_log() -> None:
    """go-attestation's ebs_event_missing_eventlog: the quoted sha1 PCR5 is reached only
    with the two ExitBootServices EV_EFI_ACTION events the firmware did not log."""
    log = parsed(EBS)
    plain = replayed(EBS).pcrs[HashAlg.SHA1][5]
    assert plain.hex() == EBS_PLAIN_SHA1_PCR5
    quoted_sha1 = {pcr: v for _, bank, pcr, v in expected_values(EBS) if bank is HashAlg.SHA1}
    quoted = {HashAlg.SHA1: quoted_sha1}
    assert quoted[HashAlg.SHA1][5].hex() == "31245808d6d35849bc394f6343f2b3ff908ed5e3"
    verified = verify_event_log(log, quoted, node_id="ebs-machine")
    assert verified.workarounds == ("ebs-events-missing",)
    assert verified.replay.pcrs[HashAlg.SHA1][5] == quoted[HashAlg.SHA1][5]
    assert 5 in verified.claims_pcrs
    assert {w.name: w.pcr for w in WORKAROUNDS}["ebs-events-missing"] == 5
    # With both banks quoted, the SHA-1 log cannot check the sha256 bank: refused.
    both = {bank: {pcr: v} for _, bank, pcr, v in expected_values(EBS)}
    with pytest.raises(EventLogBankMissing):
        verify_event_log(log, both)


# --- SOURCES.md facts, one named test each -----------------------------------------------


@pytest.mark.parametrize(
    ("stem", "bank", "pcr0"),
    [
        ("goeventlog__glinux-alex", HashAlg.SHA1, "29d236609a5f9cc6912af44ba5f57b13a17c8a84"),
        (
            "goeventlog__glinux-alex",
            HashAlg.SHA256,
            "0e5ea849d7647a1ac1becc096fee4df98f00f8015f934afadaab0b8aa20b38a5",
        ),
        (
            "gotpmtools__gdc-host",
            HashAlg.SHA256,
            "dab77c454bd12c27ff6b6ce1f9adca90b7a330c1cef0b5cd01cb89fb3bd0dffa",
        ),
        (
            "keylime__binary_bios_measurements",
            HashAlg.SHA1,
            "78f3e576d5da8873860e557535d181f4a37e2963",
        ),
        (
            "keylime__binary_bios_measurements",
            HashAlg.SHA256,
            "0ee9a7feba8f4172f1a7451594aa5731665a4d353ac61814042ce107a00742f2",
        ),
    ],
)
def test_startup_locality_3_gives_the_sources_pcr0(stem: str, bank: HashAlg, pcr0: str) -> None:
    log = parsed(stem)
    assert log.startup_locality == 3
    assert log.initial_value(bank, 0) == bytes(bank.digest_size - 1) + b"\x03"
    locality_events = [e for e in log.events if e.data.startswith(STARTUP_LOCALITY_SIGNATURE)]
    assert len(locality_events) == 1 and not locality_events[0].extends
    assert replayed(stem).pcrs[bank][0].hex() == pcr0


def test_sp800_155_ev_no_action_events_are_not_extended() -> None:
    log = parsed(SP800_155)
    sp800 = [e for e in log.events if e.event_type == EventType.EV_NO_ACTION and e.number > 0]
    assert len(sp800) == 2
    assert all(e.pcr == 0 and e.data.startswith(b"SP800-155 Event3") for e in sp800)
    assert not any(e.extends for e in sp800)
    pcrs = replayed(SP800_155).pcrs
    assert pcrs[HashAlg.SHA256][0].hex() == (
        "d0c70a9310cd0b55767084333022ce53f42befbb69c059ee6c0a32766f160783"
    )
    assert pcrs[HashAlg.SHA1][0].hex() == "d0a51b47f9a0dfef1bc16d318d0b5bc5687fd602"


def test_ideapad_parses_with_its_pcr_minus_one_record_not_extended() -> None:
    log = parsed(IDEAPAD)
    trust_points = [e for e in log.events if e.pcr == NO_PCR]
    assert [e.number for e in trust_points] == [len(log.events) - 1]
    assert trust_points[0].event_type == EventType.EV_NO_ACTION
    assert not trust_points[0].extends
    result = replayed(IDEAPAD)
    assert NO_PCR not in result.pcrs[HashAlg.SHA256]
    # The same replay as the log without that record.
    without = replay(parse_event_log(raw_log(IDEAPAD)[: trust_points[0].offset]))
    assert dict(without.pcrs[HashAlg.SHA256]) == dict(result.pcrs[HashAlg.SHA256])


def test_keylime_bogus_log_is_malformed() -> None:
    with pytest.raises(EventLogMalformed) as caught:
        parse_event_log(raw_log(BOGUS))
    assert caught.value.offset == 0 and caught.value.event == 0
    assert caught.value.check == "event-log-malformed"
    assert "event 0 at byte 0" in str(caught.value)


def test_short_no_action_fragment_parses_as_legacy_with_locality_3() -> None:
    log = parsed(SHORT_NO_ACTION)
    assert log.format is LogFormat.LEGACY_SHA1 and log.spec_id is None
    assert len(log.events) == 1 and log.size == 49
    (event,) = log.events
    assert event.event_type == EventType.EV_NO_ACTION and not event.extends
    assert log.startup_locality == 3
    assert dict(replayed(SHORT_NO_ACTION).pcrs[HashAlg.SHA1]) == {}


@pytest.mark.parametrize(
    ("stem", "number"), [("gotpmtools__gdc-host", 3), ("goeventlog__arch-linux-workstation", 24)]
)
def test_logged_digest_not_matching_its_data_is_extended_as_logged(stem: str, number: int) -> None:
    # tpm2_eventlog warns "Event N's digest does not match its payload": firmware did this.
    event = parsed(stem).events[number]
    assert event.extends
    assert all(HashAlg(alg).digest(event.data) != d for alg, d in event.digests)


# --- tpm2_eventlog, event by event and its final PCRs ----------------------------------


@pytest.mark.parametrize("stem", STEMS)
def test_events_match_tpm2_eventlog(stem: str) -> None:
    if not tool_ok(stem):
        pytest.skip(f"tpm2_eventlog 5.4 failed: {ENTRIES[stem]['tpm2_eventlog']['status']}")
    log = parsed(stem)
    tool_events = tool_document(stem)["events"]
    assert len(tool_events) == len(log.events)
    for event, theirs in zip(log.events, tool_events, strict=True):
        where = f"{stem} event {event.number}"
        if log.format is LogFormat.CRYPTO_AGILE:
            assert theirs["EventNum"] == event.number, where
        else:
            assert "EventNum" not in theirs, where
        assert theirs["PCRIndex"] == event.pcr, where
        name = theirs["EventType"]
        if name in TOOL_TYPE_NAMES:
            assert event.type_name.startswith(TOOL_TYPE_NAMES[name]), where
            assert event.event_type not in set(EventType), where
        else:
            assert name == event.type_name, where
        ours = {HashAlg(alg).bank_name: digest.hex() for alg, digest in event.digests}
        assert tool_digests(theirs) == ours, where


@pytest.mark.parametrize("stem", TOOL_PARSED)
def test_final_pcrs_match_tpm2_eventlog(stem: str) -> None:
    log, ours = parsed(stem), replayed(stem).pcrs
    theirs = tool_pcrs(stem)
    assert set(theirs) == set(ours)
    for bank, values in theirs.items():
        assert set(values) == set(ours[bank]), bank
        for pcr, value in values.items():
            if pcr == 0 and stem in TOOL_WRONG_PCR0:
                # SOURCES.md: the tool is wrong here.  Its value is exactly its rule's.
                assert ours[bank][0] != value, (stem, bank.bank_name)
                assert tool_pcr0(log, bank) == value, (stem, bank.bank_name)
                continue
            assert ours[bank][pcr] == value, (stem, bank.bank_name, pcr)


def test_tool_wrong_list_is_exactly_the_disagreements() -> None:
    # Every log where our PCR0 differs from the tool's has a StartupLocality or a
    # non-header EV_NO_ACTION in PCR0, and is in TOOL_WRONG_PCR0; no other log differs.
    differing = set()
    for stem in TOOL_PARSED:
        ours, theirs = replayed(stem).pcrs, tool_pcrs(stem)
        if any(ours[b][p] != v for b, values in theirs.items() for p, v in values.items()):
            differing.add(stem)
    assert differing == set(TOOL_WRONG_PCR0)


# --- every record boundary of every real log ---------------------------------------------


@pytest.mark.parametrize("stem", PARSEABLE)
def test_real_log_truncated_at_and_beside_record_boundaries(stem: str) -> None:
    raw, full = raw_log(stem), parsed(stem)
    ends = [e.offset for e in full.events[1:]] + [len(raw)]
    for count, end in enumerate(ends, start=1):
        assert parse_event_log(raw[:end]).events == full.events[:count], end
        for cut in (end - 1, end + 1):
            if cut > len(raw) or cut in ends:
                continue
            with pytest.raises(EventLogMalformed):
                parse_event_log(raw[:cut])
