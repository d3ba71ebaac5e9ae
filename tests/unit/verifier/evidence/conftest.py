"""Recorded swtpm quotes (tests/data/quotes, see tests/data/README.md), a software AK,
and a certificate for signature databases.

Tests take recorded data through fixtures:
- `recorded` is parametrized over every file in tests/data/quotes;
- `recorded_quotes` maps a case name (file stem without "swtpm-") to its RecordedQuote;
- `software_ak` is an ECC P-256 ECDSA-SHA256 key held in software, to sign TPMS_ATTEST
  messages no TPM would produce (wrong magic, wrong type) so that checks 2-6 can be
  reached behind a valid signature;
- `certificate` (and its DER, `der`) is a self-signed P-256 certificate generated for each
  run, for the db entries, authorities and shim certificates of event data.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from verifier.evidence.keys import AK_REQUIRED, AttestationKey
from verifier.evidence.pcr_values import PcrValues
from verifier.evidence.quote import NonceRecord, Quote, QuoteExpectations
from verifier.evidence.tpm_public import (
    EccCurve,
    ObjectAttributes,
    PublicArea,
    SymDef,
    marshal_public,
    parse_public,
)
from verifier.evidence.tpm_structures import (
    Alg,
    Attest,
    HashAlg,
    PcrSelection,
    Signature,
    marshal_attest,
    parse_attest,
)

QUOTES_DIR = Path(__file__).resolve().parents[3] / "data" / "quotes"
NODE = "node-a"
# A fixed clock for nonce lifetimes: tests never read the wall clock.
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class RecordedQuote:
    """One file of tests/data/quotes: a quote a swtpm made, with the PCR values it covers."""

    name: str
    ak_public: bytes
    message: bytes
    signature: bytes
    nonce: bytes
    pcrs: dict[str, dict[str, str]]
    selection: dict[str, list[int]]
    source: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> RecordedQuote:
        document = json.loads(path.read_text())
        return cls(
            name=path.stem.removeprefix("swtpm-"),
            ak_public=bytes.fromhex(document["ak_public"]),
            message=bytes.fromhex(document["message"]),
            signature=bytes.fromhex(document["signature"]),
            nonce=bytes.fromhex(document["nonce"]),
            pcrs=document["pcrs"],
            selection=document["selection"],
            source=document["source"],
        )

    def ak(self) -> AttestationKey:
        return AttestationKey.from_bytes(self.ak_public)

    def quote(self) -> Quote:
        return Quote.parse(self.message, self.signature)

    def pcr_values(self) -> PcrValues:
        return PcrValues.from_json(self.pcrs)

    def required_selection(self) -> PcrSelection:
        return PcrSelection.of({HashAlg.from_name(b): pcrs for b, pcrs in self.selection.items()})

    def nonce_record(self, **changes: object) -> NonceRecord:
        record = NonceRecord(self.nonce, NODE, NOW + timedelta(minutes=5), used=False)
        return dataclasses.replace(record, **changes)

    def expectations(self, **changes: object) -> QuoteExpectations:
        expect = QuoteExpectations(
            node_id=NODE,
            nonce=self.nonce_record(),
            required_selection=self.required_selection(),
            previous_clock=None,
            now=NOW,
        )
        return dataclasses.replace(expect, **changes)


def recorded_paths() -> list[Path]:
    paths = sorted(QUOTES_DIR.glob("*.json"))
    assert paths, f"no recorded quotes in {QUOTES_DIR}; run tests/data/record_quotes.py"
    return paths


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "recorded" in metafunc.fixturenames:
        paths = recorded_paths()
        metafunc.parametrize(
            "recorded", [RecordedQuote.load(p) for p in paths], ids=[p.stem for p in paths]
        )


@pytest.fixture(scope="session")
def recorded_quotes() -> dict[str, RecordedQuote]:
    quotes = (RecordedQuote.load(p) for p in recorded_paths())
    return {q.name: q for q in quotes}


@dataclass(frozen=True)
class SoftwareAk:
    """An ECDSA-SHA256 P-256 signing key in software, presented as a TPM AK."""

    private_key: ec.EllipticCurvePrivateKey
    ak: AttestationKey

    @classmethod
    def generate(
        cls, attributes: int = AK_REQUIRED | ObjectAttributes.USER_WITH_AUTH
    ) -> SoftwareAk:
        private_key = ec.generate_private_key(ec.SECP256R1())
        numbers = private_key.public_key().public_numbers()
        template = PublicArea(
            raw=b"",
            type=Alg.ECC,
            name_alg=HashAlg.SHA256,
            object_attributes=int(attributes),
            auth_policy=b"",
            symmetric=SymDef(Alg.NULL),
            scheme=Alg.ECDSA,
            scheme_hash=HashAlg.SHA256,
            curve=EccCurve.NIST_P256,
            kdf=Alg.NULL,
            x=numbers.x.to_bytes(32, "big"),
            y=numbers.y.to_bytes(32, "big"),
        )
        return cls(private_key, AttestationKey.from_public(parse_public(marshal_public(template))))

    def sign(self, message: bytes) -> Signature:
        from cryptography.hazmat.primitives import hashes

        r, s = decode_dss_signature(self.private_key.sign(message, ec.ECDSA(hashes.SHA256())))
        return Signature(Alg.ECDSA, HashAlg.SHA256, ecdsa_r=r.to_bytes(32, "big"),
                         ecdsa_s=s.to_bytes(32, "big"))  # fmt: skip

    def quote(self, attest: Attest, **changes: object) -> Quote:
        """Marshal `attest` with `changes` applied, sign it, and parse it back."""
        message = marshal_attest(dataclasses.replace(attest, **changes))
        return Quote(parse_attest(message), self.sign(message))


@pytest.fixture(scope="session")
def software_ak() -> SoftwareAk:
    return SoftwareAk.generate()


@pytest.fixture(scope="module")
def certificate() -> x509.Certificate:
    """A self-signed P-256 certificate with fixed validity (no wall clock involved)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Lightgate Test db"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lightgate, Test"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x1234)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)
