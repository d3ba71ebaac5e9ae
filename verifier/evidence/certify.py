"""Proof that a key lives in the node's TPM: pure functions over bytes, no I/O.

A credential (an X.509 certificate, a token) is issued for a node's key only when the
verifier believes all of these:

1. TPM2_Certify (TPM 2.0 Part 3, 18.2): the node's enrolled AK signed a TPMS_ATTEST of
   type TPM_ST_ATTEST_CERTIFY naming nameAlg || H_nameAlg(public area), so an object
   with exactly that public area is loaded in the AK's TPM;
2. TPM2_CertifyCreation (Part 3, 18.3): the same AK signed a TPM_ST_ATTEST_CREATION for
   the same name, whose creationHash is the hash of the TPMS_CREATION_DATA presented, so
   that TPM accepted the creation ticket TPM2_Create returned for the object: the TPM
   made the key itself.  Check 1 alone is not enough.  TPM2_LoadExternal loads any
   public area, fixedTPM and sensitiveDataOrigin claimed, and a TPM that lets such a
   public-only object be certified would vouch for a software key (the reference code,
   and so swtpm, refuses it any authorization with TPM_RC_AUTH_UNAVAILABLE; the
   verifier does not count on every TPM doing so).  A ticket is an HMAC under a proof
   value that never leaves the TPM (Part 1, "Tickets"), made only by TPM2_Create and
   TPM2_CreatePrimary, so no ticket exists for a loaded external object and
   TPM2_CertifyCreation fails for it with TPM_RC_TICKET;
3. both attestations carry magic TPM_GENERATED_VALUE (a restricted AK signs data that
   starts with it only when the TPM made the data) and, as extraData, the fresh nonce
   the verifier issued for this request;
4. the key cannot leave the TPM and was generated in it (fixedTPM, fixedParent,
   sensitiveDataOrigin), signs and only signs arbitrary data (sign set, decrypt and
   restricted clear), and is ECC NIST P-256 or RSA of at least 2048 bits, named with
   SHA-256 or stronger.

The signatures are checked first and alone: nothing in data the AK did not sign is
worth reporting.  The other checks all run and every failure is reported, as one
EvidenceError or as ChecksFailed.  `verify_csr` then ties a PKCS#10 request to the
certified key.  Each refusal is its own class in `verifier.evidence.errors`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization

from verifier.evidence.errors import (
    CertifiedNameMismatch,
    ChecksFailed,
    CreationHashMismatch,
    CreationNameMismatch,
    CsrKeyMismatch,
    CsrMalformed,
    CsrSignatureInvalid,
    EvidenceError,
    KeyAlgorithmUnsupported,
    KeyAttestationMagicInvalid,
    KeyAttestationNonceMismatch,
    KeyAttestationSignatureInvalid,
    KeyAttestationTypeInvalid,
    KeyAttributesInvalid,
    KeyCertificationMalformed,
    KeyCreationMissing,
    QuoteSignatureInvalid,
    TpmStructureMalformed,
)
from verifier.evidence.keys import AttestationKey, PublicKey, public_key, spki_der
from verifier.evidence.quote import check_signature
from verifier.evidence.tpm_public import EccCurve, ObjectAttributes, PublicArea, parse_public
from verifier.evidence.tpm_structures import (
    TPM_GENERATED_VALUE,
    Alg,
    Attest,
    AttestType,
    ClockInfo,
    HashAlg,
    PcrSelection,
    Reader,
    Signature,
    parse_attest,
    parse_signature,
    read_pcr_selection,
)

ATTEST_CREATION = 0x801A  # TPM_ST_ATTEST_CREATION (Part 2, 6.9)

KEY_REQUIRED = (
    ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
    | ObjectAttributes.SENSITIVE_DATA_ORIGIN
    | ObjectAttributes.SIGN_ENCRYPT
)
# A restricted key signs only TPM-made digests (no CSR); a decrypt key could be used to
# unwrap secrets meant for something else.  Part 1, 25.3 (key attributes).
KEY_FORBIDDEN = ObjectAttributes.RESTRICTED | ObjectAttributes.DECRYPT

# Names and creation hashes use the key's nameAlg; SHA-1 is not enough to bind them.
NAME_ALGS = (HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512)
ECC_CURVES = (EccCurve.NIST_P256,)
RSA_MIN_BITS = 2048
KEY_SCHEMES: dict[int, tuple[int, ...]] = {
    Alg.ECC: (Alg.NULL, Alg.ECDSA),
    Alg.RSA: (Alg.NULL, Alg.RSASSA, Alg.RSAPSS),
}
CSR_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)

MAX_NAME_BYTES = 2 + 64  # TPM2B_NAME: a TPMT_HA (or a 4-byte handle)
MAX_DIGEST_BYTES = 64
MAX_CREATION_DATA_BYTES = 1024

CERTIFY = "TPM2_Certify attestation"
CREATION = "TPM2_CertifyCreation attestation"


@dataclass(frozen=True)
class KeyCertification:
    """What a node sends to prove a key lives in its TPM.  All bytes as the TPM made
    them: TPM2B payloads without their size, TPMT structures as marshalled."""

    public_area: bytes  # TPMT_PUBLIC of the key
    certify_info: bytes  # TPMS_ATTEST from TPM2_Certify
    certify_signature: bytes  # TPMT_SIGNATURE by the AK
    creation_data: bytes  # TPMS_CREATION_DATA that TPM2_Create returned
    creation_info: bytes  # TPMS_ATTEST from TPM2_CertifyCreation
    creation_signature: bytes  # TPMT_SIGNATURE by the AK


@dataclass(frozen=True)
class CertifiedKey:
    """A key that passed every check: in the AK's TPM, made by it, never leaving it."""

    public: PublicArea
    name: bytes  # TPM Name: nameAlg || H_nameAlg(TPMT_PUBLIC)
    public_key: PublicKey
    clock_info: ClockInfo  # the TPM's clock when it signed TPM2_Certify


@dataclass(frozen=True)
class CreationInfo:
    """TPMS_CREATION_INFO, the attested part of a TPM_ST_ATTEST_CREATION."""

    object_name: bytes
    creation_hash: bytes


@dataclass(frozen=True)
class CreationData:
    """TPMS_CREATION_DATA (Part 2, 15.1): the TPM's record of the key's creation."""

    raw: bytes
    pcr_selection: PcrSelection
    pcr_digest: bytes
    locality: int
    parent_name_alg: int
    parent_name: bytes
    parent_qualified_name: bytes
    outside_info: bytes


def parse_creation_data(buf: bytes) -> CreationData:
    """Parse a TPMS_CREATION_DATA (without the TPM2B size); raises TpmStructureMalformed."""
    if len(buf) > MAX_CREATION_DATA_BYTES:
        raise TpmStructureMalformed("TPMS_CREATION_DATA", 0, f"{len(buf)} bytes is too long")
    reader = Reader(buf, "TPMS_CREATION_DATA")
    pcr_selection = read_pcr_selection(reader)
    pcr_digest = reader.tpm2b("pcrDigest", MAX_DIGEST_BYTES)
    locality = reader.u8("locality")
    parent_name_alg = reader.u16("parentNameAlg")
    parent_name = reader.tpm2b("parentName", MAX_NAME_BYTES)
    parent_qualified_name = reader.tpm2b("parentQualifiedName", MAX_NAME_BYTES)
    outside_info = reader.tpm2b("outsideInfo", MAX_DIGEST_BYTES + 2)
    reader.end()
    return CreationData(
        buf, pcr_selection, pcr_digest, locality, parent_name_alg, parent_name,
        parent_qualified_name, outside_info,
    )  # fmt: skip


def parse_creation_info(attest: Attest) -> CreationInfo:
    """The TPMS_CREATION_INFO of a TPM_ST_ATTEST_CREATION (parse_attest reads only the
    header of attestation types quotes do not need)."""
    # magic, type, qualifiedSigner, extraData, clockInfo (17 bytes), firmwareVersion
    offset = 4 + 2 + 2 + len(attest.qualified_signer) + 2 + len(attest.extra_data) + 17 + 8
    reader = Reader(attest.raw, "TPMS_ATTEST", offset)
    object_name = reader.tpm2b("creationInfo.objectName", MAX_NAME_BYTES)
    creation_hash = reader.tpm2b("creationInfo.creationHash", MAX_DIGEST_BYTES)
    reader.end()
    return CreationInfo(object_name, creation_hash)


@dataclass(frozen=True)
class _Parsed:
    public: PublicArea
    certify: Attest
    certify_signature: Signature
    creation: Attest
    creation_info: CreationInfo | None  # None when the type is not ATTEST_CREATION
    creation_signature: Signature
    creation_data: CreationData


def verify_key_certification(
    ak: AttestationKey, certification: KeyCertification, nonce: bytes, *, node_id: str = ""
) -> CertifiedKey:
    """Every check of the module docstring; the CertifiedKey, or the typed refusal(s)."""
    node = node_id or None
    parsed = _parse(certification, node)
    _check_signatures(ak, parsed, node)
    public = parsed.public
    checks: list[Callable[[], None]] = [
        lambda: _check_magic(CERTIFY, parsed.certify, node),
        lambda: _check_magic(CREATION, parsed.creation, node),
        lambda: _check_type(CERTIFY, parsed.certify, AttestType.CERTIFY, node),
        lambda: _check_type(CREATION, parsed.creation, ATTEST_CREATION, node),
        lambda: _check_nonce(nonce, parsed, node),
        lambda: _check_attributes(public, node),
        lambda: _check_algorithm(public, node),
    ]
    if public.name_alg in NAME_ALGS:  # otherwise the algorithm check refuses it
        checks += [
            lambda: _check_certified_name(public, parsed.certify, node),
            lambda: _check_creation(public, parsed.creation_info, parsed.creation_data, node),
        ]
    failures: list[EvidenceError] = []
    for check in checks:
        try:
            check()
        except EvidenceError as exc:
            failures.append(exc)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise ChecksFailed(failures, node_id=node)
    try:
        key = public_key(public)
    except TpmStructureMalformed as exc:  # a point off the curve, an empty modulus
        raise KeyCertificationMalformed("public_area", exc.message, node_id=node) from None
    return CertifiedKey(public, public.name, key, parsed.certify.clock_info)


def _parse(certification: KeyCertification, node: str | None) -> _Parsed:
    missing = [
        field
        for field in ("creation_data", "creation_info", "creation_signature")
        if not getattr(certification, field)
    ]
    if missing:
        raise KeyCreationMissing(
            f"no {', '.join(missing)}: without TPM2_CertifyCreation nothing shows the TPM "
            "created the key (a public area loaded with TPM2_LoadExternal can claim fixedTPM)",
            node_id=node,
        )
    field = "public_area"
    try:
        public = parse_public(certification.public_area)
        field = "certify_info"
        certify = parse_attest(certification.certify_info)
        field = "certify_signature"
        certify_signature = parse_signature(certification.certify_signature)
        field = "creation_info"
        creation = parse_attest(certification.creation_info)
        creation_info = parse_creation_info(creation) if creation.type == ATTEST_CREATION else None
        field = "creation_signature"
        creation_signature = parse_signature(certification.creation_signature)
        field = "creation_data"
        creation_data = parse_creation_data(certification.creation_data)
    except TpmStructureMalformed as exc:
        raise KeyCertificationMalformed(field, exc.message, node_id=node) from None
    return _Parsed(
        public, certify, certify_signature, creation, creation_info, creation_signature,
        creation_data,
    )  # fmt: skip


def _check_signatures(ak: AttestationKey, parsed: _Parsed, node: str | None) -> None:
    """Both attestations signed by the AK, with its scheme; both reported if both fail."""
    problems = []
    for label, attest, signature in (
        (CERTIFY, parsed.certify, parsed.certify_signature),
        (CREATION, parsed.creation, parsed.creation_signature),
    ):
        try:
            check_signature(ak, attest.raw, signature, node_id=node)
        except QuoteSignatureInvalid as exc:
            problems.append(f"{label}: {exc.message}")
    if problems:
        raise KeyAttestationSignatureInvalid("; ".join(problems), node_id=node)


def _check_magic(label: str, attest: Attest, node: str | None) -> None:
    if attest.magic != TPM_GENERATED_VALUE:
        raise KeyAttestationMagicInvalid(
            f"{label}: magic 0x{attest.magic:08x}, expected 0x{TPM_GENERATED_VALUE:08x}",
            node_id=node,
        )


def _check_type(label: str, attest: Attest, expected: int, node: str | None) -> None:
    if attest.type != expected:
        raise KeyAttestationTypeInvalid(
            f"{label}: type 0x{attest.type:04x}, expected 0x{expected:04x}", node_id=node
        )


def _check_nonce(nonce: bytes, parsed: _Parsed, node: str | None) -> None:
    if not nonce:
        # Closed default: with no nonce any old certification would pass.
        raise KeyAttestationNonceMismatch(
            "the verifier issued no nonce for this certification", node_id=node
        )
    problems = [
        f"{label}: extraData {attest.extra_data.hex() or '(empty)'}, expected {nonce.hex()}"
        for label, attest in ((CERTIFY, parsed.certify), (CREATION, parsed.creation))
        if not hmac.compare_digest(attest.extra_data, nonce)
    ]
    if problems:
        raise KeyAttestationNonceMismatch("; ".join(problems), node_id=node)


def _check_certified_name(public: PublicArea, certify: Attest, node: str | None) -> None:
    if certify.certify is None:
        return  # not a TPM_ST_ATTEST_CERTIFY: the type check refuses it
    expected = public.name
    if not hmac.compare_digest(certify.certify.name, expected):
        raise CertifiedNameMismatch(
            f"TPM2_Certify attested name {certify.certify.name.hex() or '(empty)'}, "
            f"the public area presented has name {expected.hex()}",
            node_id=node,
        )


def _check_creation(
    public: PublicArea, info: CreationInfo | None, data: CreationData, node: str | None
) -> None:
    if info is None:
        return  # not a TPM_ST_ATTEST_CREATION: the type check refuses it
    expected = public.name
    if not hmac.compare_digest(info.object_name, expected):
        raise CreationNameMismatch(
            f"TPM2_CertifyCreation attested the creation of {info.object_name.hex() or '(empty)'}"
            f", the public area presented has name {expected.hex()}",
            node_id=node,
        )
    # creationHash is H_nameAlg(TPMS_CREATION_DATA) with the object's nameAlg (Part 3, 12.1).
    actual = HashAlg(public.name_alg).digest(data.raw)
    if not hmac.compare_digest(info.creation_hash, actual):
        raise CreationHashMismatch(
            f"creation data hashes to {actual.hex()}, TPM2_CertifyCreation attested "
            f"creationHash {info.creation_hash.hex() or '(empty)'}",
            node_id=node,
        )


def _check_attributes(public: PublicArea, node: str | None) -> None:
    attributes = public.attributes
    problems = []
    missing = KEY_REQUIRED & ~attributes
    if missing:
        problems.append(f"missing {_flag_names(missing)}")
    present = attributes & KEY_FORBIDDEN
    if present:
        problems.append(f"has {_flag_names(present)}")
    if problems:
        raise KeyAttributesInvalid(
            f"objectAttributes 0x{public.object_attributes:08x} {' and '.join(problems)}: "
            "not a non-exportable, TPM-generated, signing-only key",
            node_id=node,
        )


def _check_algorithm(public: PublicArea, node: str | None) -> None:
    problems = []
    if public.name_alg not in NAME_ALGS:
        problems.append(f"nameAlg 0x{public.name_alg:04x} is weaker than SHA-256")
    if public.type == Alg.ECC and public.curve not in ECC_CURVES:
        problems.append(f"ECC curve 0x{public.curve:04x} is not NIST P-256")
    if public.type == Alg.RSA:
        bits = min(public.key_bits, len(public.modulus) * 8)
        if bits < RSA_MIN_BITS:
            problems.append(f"RSA key of {bits} bits (at least {RSA_MIN_BITS})")
    if public.scheme not in KEY_SCHEMES.get(public.type, ()):
        problems.append(f"scheme 0x{public.scheme:04x} is not a signing scheme for this key")
    elif public.scheme != Alg.NULL and public.scheme_hash not in NAME_ALGS:
        problems.append(f"scheme hash 0x{public.scheme_hash:04x} is weaker than SHA-256")
    if problems:
        raise KeyAlgorithmUnsupported("; ".join(problems), node_id=node)


def _flag_names(flags: ObjectAttributes) -> str:
    return ",".join(f.name.lower() for f in ObjectAttributes if f in flags and f.name)


def verify_csr(
    csr_der: bytes, key: CertifiedKey, *, node_id: str = ""
) -> x509.CertificateSigningRequest:
    """A PKCS#10 request whose key is exactly the certified key and whose self-signature
    verifies (with SHA-256 or stronger).  Its subject and extensions are the issuer's
    business: this only proves the request came from the key the TPM holds."""
    node = node_id or None
    try:
        csr = x509.load_der_x509_csr(csr_der)
        requested = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrMalformed(
            f"not a DER PKCS#10 request with a usable key: {exc}", node_id=node
        ) from None
    failures: list[EvidenceError] = []
    presented = requested.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    certified = spki_der(key.public_key)
    if not hmac.compare_digest(presented, certified):
        failures.append(
            CsrKeyMismatch(
                f"CSR key (SPKI SHA-256 {hashlib.sha256(presented).hexdigest()}) is not the "
                f"certified key (SPKI SHA-256 {hashlib.sha256(certified).hexdigest()}, "
                f"TPM name {key.name.hex()})",
                node_id=node,
            )
        )
    try:
        _check_csr_signature(csr, node)
    except EvidenceError as exc:
        failures.append(exc)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise ChecksFailed(failures, node_id=node)
    return csr


def _check_csr_signature(csr: x509.CertificateSigningRequest, node: str | None) -> None:
    try:
        hash_alg = csr.signature_hash_algorithm
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrSignatureInvalid(f"signature cannot be checked: {exc}", node_id=node) from None
    if not isinstance(hash_alg, CSR_HASHES):
        name = hash_alg.name if hash_alg is not None else "none"
        raise CsrSignatureInvalid(
            f"signed with hash {name}, not SHA-256, SHA-384 or SHA-512", node_id=node
        )
    if not valid:
        raise CsrSignatureInvalid("self-signature does not verify under its key", node_id=node)
