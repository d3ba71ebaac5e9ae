"""Golden values: learn, compare (closed), diff, YAML round trip and validation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lightgate.sim.boot import fixture_path
from verifier.evidence.claims import extract_claims
from verifier.evidence.eventlog import parse_event_log
from verifier.golden.values import (
    GoldenValues,
    GoldenValuesInvalid,
    appraise,
    diff,
    from_document,
    from_yaml,
    learn,
    to_yaml,
)


def _claims(name: str):  # type: ignore[no-untyped-def]
    return extract_claims(parse_event_log(fixture_path(name).read_bytes()))


def test_learned_values_accept_their_boot_and_survive_yaml() -> None:
    golden = learn([_claims("good")], "fleet", {"author": "ops"})
    again = from_yaml(to_yaml(golden))
    assert again == golden and again.digest == golden.digest
    outcome = appraise(_claims("good"), [again])
    assert outcome.matched == "fleet" and outcome.deviations == ()


def test_each_deviation_is_named() -> None:
    golden = learn([_claims("good")], "fleet")
    outcome = appraise(_claims("cmdline-changed"), [golden])
    assert outcome.matched is None
    assert [d.claim for d in outcome.deviations] == ["kernel.cmdline", "kernel.commands"]
    assert "init=/bin/sh" in outcome.deviations[0].describe()


def test_two_boots_learned_accept_both() -> None:
    golden = learn([_claims("good"), _claims("tampered-kernel")], "two-kernels")
    assert len(golden.reference["boot-chain.kernel"]) == 2
    assert appraise(_claims("tampered-kernel"), [golden]).matched == "two-kernels"


def test_closest_document_is_reported() -> None:
    good = learn([_claims("good")], "a-good")
    off = learn([_claims("secure-boot-off")], "b-off")
    outcome = appraise(_claims("cmdline-changed"), [off, good])
    assert outcome.matched is None and outcome.closest == "a-good"


def test_no_documents_match_nothing() -> None:
    assert appraise(_claims("good"), []).matched is None


def test_claim_the_log_does_not_make_is_a_deviation() -> None:
    golden = learn([_claims("good")], "fleet")
    reference = dict(golden.reference)
    reference["kernel.initrd-never-measured"] = ("x",)
    outcome = appraise(_claims("good"), [GoldenValues("fleet", reference)])
    missing = [d for d in outcome.deviations if d.actual is None]
    assert [d.claim for d in missing] == ["kernel.initrd-never-measured"]
    assert "not measured" in missing[0].describe()


def test_an_emptied_family_is_a_deviation() -> None:
    """Secure Boot off: no authority verified anything; the empty list deviates."""
    golden = learn([_claims("good")], "fleet")
    outcome = appraise(_claims("secure-boot-off"), [golden])
    authorities = next(d for d in outcome.deviations if d.claim == "secure-boot.authorities")
    assert authorities.describe().startswith("secure-boot.authorities: missing")


def test_diff_shows_only_what_changed() -> None:
    a = learn([_claims("good")], "a")
    b = learn([_claims("tampered-kernel")], "b")
    lines = diff(a, b)
    assert {line.claim for line in lines} == {"boot-chain", "boot-chain.kernel", "kernel.files"}
    assert diff(a, a) == ()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "mapping"),
        ({"kind": "other", "version": 1}, "kind"),
        ({"kind": "lightgate/golden-values", "version": 2}, "version"),
        ({"kind": "lightgate/golden-values", "version": 1, "name": ""}, "name"),
        (
            {"kind": "lightgate/golden-values", "version": 1, "name": "x", "reference": {}},
            "reference",
        ),
        (
            {"kind": "lightgate/golden-values", "version": 1, "name": "x", "reference": {"a": []}},
            "non-empty list",
        ),
        (
            {"kind": "lightgate/golden-values", "version": 1, "name": "x", "reference": {"a": [1]}},
            "not a string",
        ),
    ],
)
def test_invalid_documents_are_refused(document: object, message: str) -> None:
    with pytest.raises(GoldenValuesInvalid, match=message):
        from_document(document)


def test_not_yaml_is_refused() -> None:
    with pytest.raises(GoldenValuesInvalid):
        from_yaml("reference: [unclosed")


def test_digest_ignores_provenance() -> None:
    reference = {"kernel.cmdline": ("quiet",)}
    assert (
        GoldenValues("a", reference, {"author": "x"}).digest
        == GoldenValues("a", reference, {"author": "y"}).digest
    )


def test_valid_until_is_read_and_checked() -> None:
    golden = learn([_claims("good")], "fleet", {"valid-until": "2027-01-01T00:00:00+00:00"})
    assert from_yaml(to_yaml(golden)).valid_until is not None
    assert not golden.expired(datetime(2026, 12, 31, tzinfo=UTC))
    assert golden.expired(datetime(2027, 1, 1, tzinfo=UTC))
    document = golden.to_document()
    for bad in ("next year", "2027-01-01T00:00:00"):  # not a time; no time zone
        document["provenance"] = {"valid-until": bad}
        with pytest.raises(GoldenValuesInvalid, match="valid-until"):
            from_document(document)


def test_naive_now_is_utc_and_bad_dates_refused_on_construction() -> None:
    dated = GoldenValues(
        "x", {"kernel.cmdline": ("quiet",)}, {"valid-until": "2027-01-01T00:00:00+00:00"}
    )
    assert dated.expired(datetime(2027, 1, 2))  # naive: taken as UTC, never a TypeError
    with pytest.raises(GoldenValuesInvalid):
        GoldenValues("x", {"kernel.cmdline": ("quiet",)}, {"valid-until": "soon"})
