"""Container image records: the runtime log's image event codec and repository names."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier.evidence.images import (
    ImageEventInvalid,
    ImageRecord,
    encode_image_event,
    parse_image_event,
    reported_name,
    repository_of,
)

DIGEST = "sha256:" + "0f" * 32


def test_the_event_data_is_canonical_json() -> None:
    record = ImageRecord("docker.io/library/busybox:1.36", DIGEST, "containerd")
    assert encode_image_event(record) == (
        b'{"digest":"' + DIGEST.encode() + b'","name":"docker.io/library/busybox:1.36",'
        b'"runtime":"containerd"}'
    )


names = st.text(st.characters(categories=("L", "N", "P", "S"), max_codepoint=0x2FF), max_size=40)


@given(
    names,
    st.one_of(st.none(), st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())),
    st.sampled_from(["containerd", "docker", "podman"]),
)
def test_any_record_round_trips(name: str, digest: str | None, runtime: str) -> None:
    record = ImageRecord(name, digest, runtime)
    assert parse_image_event(encode_image_event(record)) == record


@pytest.mark.parametrize(
    ("name", "digest", "runtime"),
    [
        ("web", "sha256:AB" + "ab" * 31, "containerd"),  # upper-case hex
        ("web", "sha512:" + "ab" * 64, "containerd"),
        ("web", None, "crio"),
        ("web\n", None, "docker"),
        ("w" * 513, None, "docker"),
    ],
)
def test_records_outside_the_format_are_refused(
    name: str, digest: str | None, runtime: str
) -> None:
    with pytest.raises(ImageEventInvalid):
        ImageRecord(name, digest, runtime)


@pytest.mark.parametrize(
    ("reference", "repository"),
    [
        ("busybox", "docker.io/library/busybox"),
        ("busybox:1.36", "docker.io/library/busybox"),
        ("docker.io/busybox:1.36", "docker.io/library/busybox"),
        ("library/busybox@sha256:" + "ab" * 32, "docker.io/library/busybox"),
        ("team/app:2", "docker.io/team/app"),
        ("registry.example/team/web:1.4", "registry.example/team/web"),
        ("registry.example:5000/web", "registry.example:5000/web"),
        ("localhost:5000/web:dev@sha256:" + "ab" * 32, "localhost:5000/web"),
        ("localhost/web", "localhost/web"),
    ],
)
def test_repository_is_normalised_as_docker_and_containerd_name_images(
    reference: str, repository: str
) -> None:
    assert repository_of(reference) == repository
    assert ImageRecord(reference, None, "docker").repository == repository


@given(st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=60).filter(str.isprintable))
def test_the_encoding_is_what_json_dumps_writes(name: str) -> None:
    # The encoder is built by hand for speed; json.dumps is the definition it must meet.
    record = ImageRecord(name, DIGEST, "podman")
    expected = json.dumps(
        record.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert encode_image_event(record) == expected


@pytest.mark.parametrize(
    ("reference", "repository"),
    [
        ("index.docker.io/team/app:1", "docker.io/team/app"),
        ("index.docker.io/busybox", "docker.io/library/busybox"),
        ("Registry.Example/team/web:2", "registry.example/team/web"),
        ("LOCALHOST/web", "localhost/web"),
    ],
)
def test_registry_hosts_are_compared_as_docker_compares_them(
    reference: str, repository: str
) -> None:
    assert repository_of(reference) == repository


def test_a_name_a_record_cannot_hold_is_escaped_not_refused() -> None:
    # One strange container must not stop the agent measuring the others.
    assert reported_name("registry.example/web:1") == "registry.example/web:1"
    odd = reported_name("web\n\x00" + "x" * 600)
    assert odd.startswith("web\\n\\x00") and len(odd) == 512
    ImageRecord(odd, None, "docker")  # a valid record
