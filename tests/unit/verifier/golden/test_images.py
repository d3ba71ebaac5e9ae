"""The container-image allow-list in golden values, and the verdict on each image."""

from __future__ import annotations

import pytest

from verifier.evidence.images import ImageRecord
from verifier.golden.images import allow_list, appraise_images, judge_image
from verifier.golden.values import (
    GoldenValues,
    GoldenValuesInvalid,
    compare,
    from_document,
    from_yaml,
    to_yaml,
)

WEB_1 = "sha256:" + "a1" * 32
WEB_2 = "sha256:" + "a2" * 32
BASE = "sha256:" + "b0" * 32
MINER = "sha256:" + "cc" * 32
WEB_REPO = "registry.example/team/web"


def document(reference: dict[str, object], name: str = "prod-images") -> dict[str, object]:
    return {"kind": "lightgate/golden-values", "version": 1, "name": name, "reference": reference}


PROD = from_document(
    document(
        {
            "images.allowed": [BASE],
            f"images.repository.{WEB_REPO}": [WEB_1, WEB_2],
        }
    )
)


def record(name: str, digest: str | None) -> ImageRecord:
    return ImageRecord(name, digest, "containerd")


def test_a_pinned_repository_allows_its_digests_under_any_of_its_names() -> None:
    allowed = allow_list([PROD])
    for name in (f"{WEB_REPO}:1.4", f"{WEB_REPO}@{WEB_2}", f"{WEB_REPO}:latest"):
        assert judge_image(record(name, WEB_1), allowed).allowed


def test_a_pinned_repository_refuses_another_digest_and_says_so() -> None:
    verdict = judge_image(record(f"{WEB_REPO}:1.5", MINER), allow_list([PROD]))
    assert not verdict.allowed
    assert verdict.reason == (f"{WEB_REPO}:1.5@{MINER}: not an allowed digest of {WEB_REPO}")


def test_a_repository_pin_does_not_allow_its_digest_under_another_name() -> None:
    # The web image's digest re-tagged as something else is not the web image.
    verdict = judge_image(record("registry.example/other:1", WEB_1), allow_list([PROD]))
    assert not verdict.allowed
    assert "not on the image allow-list (prod-images)" in (verdict.reason or "")


def test_an_allowed_digest_is_allowed_under_any_name() -> None:
    assert judge_image(record("anything.example/base:9", BASE), allow_list([PROD])).allowed


def test_an_image_without_a_digest_is_never_allowed() -> None:
    verdict = judge_image(record(f"{WEB_REPO}:1.4", None), allow_list([PROD]))
    assert not verdict.allowed
    assert "could not resolve its digest" in (verdict.reason or "")


def test_no_allow_list_allows_nothing() -> None:
    verdict = judge_image(record(f"{WEB_REPO}:1.4", WEB_1), allow_list([]))
    assert not verdict.allowed
    assert "no golden values list allowed images" in (verdict.reason or "")


def test_the_allow_list_is_the_union_of_the_documents_in_force() -> None:
    more = from_document(document({f"images.repository.{WEB_REPO}": [MINER]}, "canary"))
    allowed = allow_list([PROD, more])
    assert allowed.documents == ("prod-images", "canary")
    assert judge_image(record(WEB_REPO, MINER), allowed).allowed


def test_one_verdict_per_distinct_image_in_measured_order() -> None:
    web = record(f"{WEB_REPO}:1", WEB_1)
    images = [web, record("x/miner", MINER), web]
    verdicts = appraise_images(images, allow_list([PROD]))
    assert [v.record.name for v in verdicts] == [f"{WEB_REPO}:1", "x/miner"]
    assert [v.allowed for v in verdicts] == [True, False]


@pytest.mark.parametrize(
    ("entry", "values", "why"),
    [
        ("images.allowed", ["sha256:abc"], "not a sha256"),
        ("images.allowed", [True], "not a sha256"),
        ("images.repository.busybox", [BASE], "docker.io/library/busybox"),
        (f"images.repository.{WEB_REPO}:1.4", [BASE], "normalised"),
        ("images.repository.", [BASE], "image entries are"),
        ("images.digests", [BASE], "image entries are"),
    ],
)
def test_malformed_image_entries_are_refused(entry: str, values: list[object], why: str) -> None:
    with pytest.raises(GoldenValuesInvalid, match=why):
        from_document(document({entry: values}))


def test_image_entries_round_trip_through_yaml() -> None:
    assert from_yaml(to_yaml(PROD)) == PROD


def test_boot_comparison_ignores_image_entries() -> None:
    boot = GoldenValues("boot", {"secure-boot.enabled": (True,), "images.allowed": (BASE,)})
    assert boot.judges_boot
    assert compare({"secure-boot.enabled": True}, boot) == ()


def test_an_images_only_document_judges_no_boot() -> None:
    # With no boot claims it would match every boot; it must match none.
    assert not PROD.judges_boot
