"""The node's bound key: a signing key that lives in this TPM, for credentials.

Credentials (an X.509 certificate, a token) are issued only for a key the node's AK
certifies to be non-exportable and made by the AK's own TPM
(`verifier.evidence.certify`).  This module keeps that key in the agent's state
directory, answers a verifier's nonce with a KeyCertification, and builds a PKCS#10
request signed in the TPM.

State: `bound-key.json` holds, hex-encoded, the five blobs TPM2_Create returned
(`attestor.tpm.BoundKeyBlobs`), in one file written atomically (mode 0600) so that a
crash never pairs a public part with another key's private part or ticket.  The
private part is wrapped by this TPM's EK and useless elsewhere.  The key is made once
and reused across restarts (a certificate names a key; a new key needs a new one).  A
file that is not what `save_bound_key` wrote is replaced by a new key, with a warning;
a key the TPM refuses to load (the TPM was cleared or replaced) raises TpmError, and
`create_bound_key` then makes a new one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from attestor.csr import build_csr
from attestor.state_files import write_atomic
from attestor.tpm import AkBlobs, BoundKeyBlobs, Tpm, TpmError
from verifier.evidence.errors import TpmStructureMalformed
from verifier.evidence.tpm_public import parse_public
from verifier.evidence.tpm_structures import Alg, parse_signature

if TYPE_CHECKING:
    from cryptography import x509

    from verifier.evidence.certify import KeyCertification

log = logging.getLogger("lightgate.agent")

BOUND_KEY_FILE = "bound-key.json"
_FORMAT = 1
_FIELDS = ("public", "private", "creation_data", "creation_hash", "creation_ticket")
NODE_URI_PREFIX = "urn:lightgate:node:"
MAX_COMMON_NAME = 64  # RFC 5280, ub-common-name


class BoundKey:
    """The bound key in one TPM session: certify it, sign a CSR with it."""

    def __init__(self, tpm: Tpm, blobs: BoundKeyBlobs) -> None:
        self.tpm = tpm
        self.blobs = blobs

    @property
    def public_area(self) -> bytes:
        """TPMT_PUBLIC, as the TPM made it."""
        return self.blobs.tpmt_public

    def certification(self, ak: AkBlobs, nonce: bytes) -> KeyCertification:
        """TPM2_Certify and TPM2_CertifyCreation by `ak` over the verifier's `nonce`."""
        return self.tpm.certify_bound_key(ak, self.blobs, nonce)

    def csr(self, node_id: str) -> bytes:
        """A DER PKCS#10 request for this key naming the node (`csr_builder`'s subject
        and name), signed in the TPM with ECDSA-SHA256 (`attestor.csr`)."""
        check_common_name(node_id)
        try:
            public = parse_public(self.blobs.tpmt_public)
        except TpmStructureMalformed as exc:
            raise TpmError(f"the persisted bound key is corrupt: {exc}") from None
        return build_csr(node_id, node_uri(node_id), public, self._sign_digest)

    def _sign_digest(self, digest: bytes) -> tuple[bytes, bytes]:
        try:
            signature = parse_signature(self.tpm.sign(self.blobs, digest))
        except TpmStructureMalformed as exc:
            raise TpmError(f"TPM2_Sign with the bound key: {exc}") from None
        if signature.sig_alg != Alg.ECDSA:
            raise TpmError("TPM2_Sign with the bound key did not return an ECDSA signature")
        return signature.ecdsa_r, signature.ecdsa_s


def node_uri(node_id: str) -> str:
    """The node's URI SAN, `urn:lightgate:node:<node id>`.  Node ids the verifier
    accepts ([A-Za-z0-9._:@-]) are all valid in a URN; anything else is escaped."""
    return NODE_URI_PREFIX + quote(node_id, safe=":@!$&'()*+,;=-._~")


def check_common_name(node_id: str) -> None:
    """ValueError for a node id that cannot be a common name (empty, over 64 characters)."""
    if not 0 < len(node_id) <= MAX_COMMON_NAME:
        raise ValueError(
            f"node id {node_id!r} cannot be a certificate's common name "
            f"(1 to {MAX_COMMON_NAME} characters)"
        )


def csr_builder(node_id: str) -> x509.CertificateSigningRequestBuilder:
    """The request `BoundKey.csr` writes, as a cryptography builder (for software keys):
    subject CN = node id, SAN URI = node_uri(node id).  A DNS SAN is not requested: node
    ids may hold ':' and '@', and naming a host is the issuer's decision."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    check_common_name(node_id)
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(node_uri(node_id))]),
            critical=False,
        )
    )


def load_bound_key_blobs(state_dir: Path) -> BoundKeyBlobs | None:
    """The stored key; None when there is none or the file is not one save wrote."""
    path = state_dir / BOUND_KEY_FILE
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        _log_unreadable(path, str(exc))
        return None
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        _log_unreadable(path, "not a bound key record of format 1")
        return None
    values = [document.get(field) for field in _FIELDS]
    if not all(isinstance(value, str) and value for value in values):
        _log_unreadable(path, f"needs non-empty hex fields {', '.join(_FIELDS)}")
        return None
    try:
        return BoundKeyBlobs(*(bytes.fromhex(str(value)) for value in values))
    except ValueError as exc:
        _log_unreadable(path, str(exc))
        return None


def _log_unreadable(path: Path, detail: str) -> None:
    log.warning(
        "stored bound key unreadable; a new one will be created",
        extra={"fields": {"path": str(path), "detail": detail}},
    )


def save_bound_key(state_dir: Path, blobs: BoundKeyBlobs) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # as StateDir makes it
    document: dict[str, object] = {"format": _FORMAT}
    document.update({field: getattr(blobs, field).hex() for field in _FIELDS})
    write_atomic(state_dir / BOUND_KEY_FILE, json.dumps(document, indent=2).encode())


def create_bound_key(tpm: Tpm, state_dir: Path, *, node_id: str = "") -> BoundKey:
    """A new bound key, made in the TPM and stored (replacing any stored one)."""
    blobs = tpm.create_bound_key()
    save_bound_key(state_dir, blobs)
    log.info("created bound key", extra={"fields": {"node": node_id, "state_dir": str(state_dir)}})
    return BoundKey(tpm, blobs)


def load_or_create_bound_key(tpm: Tpm, state_dir: Path, *, node_id: str = "") -> BoundKey:
    """The stored bound key, or a new one made and stored on first use."""
    blobs = load_bound_key_blobs(state_dir)
    if blobs is None:
        return create_bound_key(tpm, state_dir, node_id=node_id)
    return BoundKey(tpm, blobs)
