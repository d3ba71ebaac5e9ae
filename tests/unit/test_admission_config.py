"""AdmissionConfig: lifetimes and intervals that are finite and sane, a minimum credential
life every lifetime can reach, and token audiences that are closed by default."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lightgate.config import AdmissionConfig, ConfigError, VerifierConfig, load_config

#: field -> (its largest accepted value, the first refused one)
BOUNDED = {
    "certificate_lifetime_seconds": (90 * 86400.0, 90 * 86400.0 + 1),
    "token_lifetime_seconds": (86400.0, 86400.0 + 1),
    "challenge_ttl_seconds": (3600.0, 3600.5),
    "sync_seconds": (60.0, 60.5),
}
TIMES = [*BOUNDED, "min_credential_seconds"]


def _refused_field(error: ValidationError) -> tuple[str, str]:
    [detail] = error.errors()
    return ".".join(str(part) for part in detail["loc"]), detail["msg"]


@pytest.mark.parametrize("field", TIMES)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "nan", "inf"])
def test_times_must_be_finite(field: str, value: object) -> None:
    """NaN compares false with every bound, so without this check a NaN lifetime would
    pass `gt=0` checks elsewhere, and an infinite one would never end."""
    with pytest.raises(ValidationError) as caught:
        AdmissionConfig(**{field: value})
    assert _refused_field(caught.value) == (field, "Input should be a finite number")


@pytest.mark.parametrize("field", TIMES)
@pytest.mark.parametrize("value", [0, -1.0])
def test_times_must_be_positive(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as caught:
        AdmissionConfig(**{field: value})
    assert _refused_field(caught.value)[0] == field


@pytest.mark.parametrize("field", sorted(BOUNDED))
def test_times_have_an_upper_bound(field: str) -> None:
    largest, refused = BOUNDED[field]
    assert getattr(AdmissionConfig(**{field: largest}), field) == largest
    with pytest.raises(ValidationError) as caught:
        AdmissionConfig(**{field: refused})
    where, message = _refused_field(caught.value)
    assert where == field
    assert message.startswith("Input should be less than or equal to")


@pytest.mark.parametrize(
    ("settings", "lifetime"),
    [
        ({"min_credential_seconds": 600.0}, "token_lifetime_seconds"),  # equal: no room
        ({"min_credential_seconds": 700.0}, "token_lifetime_seconds"),
        (
            {"min_credential_seconds": 120.0, "certificate_lifetime_seconds": 60.0},
            "certificate_lifetime_seconds",
        ),
    ],
)
def test_min_credential_must_be_below_both_lifetimes(
    settings: dict[str, float], lifetime: str
) -> None:
    """Otherwise every certificate (or token) would be refused as too short to issue."""
    with pytest.raises(ValidationError, match=f"min_credential_seconds .* below {lifetime}"):
        AdmissionConfig(**settings)


def test_min_credential_just_below_the_lifetimes_is_accepted() -> None:
    config = AdmissionConfig(
        min_credential_seconds=59.0, certificate_lifetime_seconds=60.0, token_lifetime_seconds=60.0
    )
    assert config.min_credential_seconds == 59.0


def test_no_token_audience_unless_listed() -> None:
    """Closed by default: no audience is listed, so no token is issued; "*" is not a
    wildcard, just an audience."""
    assert AdmissionConfig().token_audiences == ()
    listed = AdmissionConfig(token_audiences=["payments", "*"])
    assert listed.token_audiences == ("payments", "*")


@pytest.mark.parametrize("audience", ["", "x" * 513])
def test_token_audiences_must_be_requestable(audience: str) -> None:
    with pytest.raises(ValidationError, match="must be 1-512 characters"):
        AdmissionConfig(token_audiences=["payments", audience])


def test_node_id_source_is_name_or_label() -> None:
    assert AdmissionConfig().node_id_source == "name"
    assert AdmissionConfig(node_id_source="label").node_id_source == "label"
    with pytest.raises(ValidationError):
        AdmissionConfig(node_id_source="annotation")  # type: ignore[arg-type] (refused)


def test_a_bad_value_in_the_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "verifier.yaml"
    path.write_text("admission:\n  token_lifetime_seconds: .nan\n")
    with pytest.raises(ConfigError, match=r"admission\.token_lifetime_seconds"):
        load_config(VerifierConfig, path)
