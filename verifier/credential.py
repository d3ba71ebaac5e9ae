"""TPM2_MakeCredential in software, for RSA and ECC endorsement keys (pure, no I/O).

The verifier encrypts a random secret to the node's EK so that only a TPM holding
that EK can recover it, and binds it to the AK's name so that the TPM releases it
only while an object with that name is loaded beside the EK (TPM2_ActivateCredential
checks both).  Returning the secret proves the AK lives in the TPM whose EK was
certified.  TPM 2.0 Library Part 1, 24 (Credential Protection), 11.4.9 (KDFa/KDFe),
and Part 1 Annex B.10.3 / C.6.1 for the RSA and ECC secret sharing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 47 keeps CFB among the "decrepit" modes; the TPM still uses it
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from verifier.evidence.errors import TpmStructureMalformed
from verifier.evidence.keys import public_key
from verifier.evidence.tpm_public import PublicArea
from verifier.evidence.tpm_structures import Alg, HashAlg, tpm2b

_NAME_ALGS = (HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512)


class CredentialError(Exception):
    """The EK cannot receive a credential (unsupported algorithm or parameters)."""


@dataclass(frozen=True)
class Credential:
    """What the node's TPM needs for TPM2_ActivateCredential.

    `credential_blob` is the TPM2B_ID_OBJECT payload (integrityHMAC || encIdentity) and
    `encrypted_secret` the TPM2B_ENCRYPTED_SECRET payload; both without size prefix.
    """

    credential_blob: bytes
    encrypted_secret: bytes


def kdfa(
    hash_alg: HashAlg, key: bytes, label: str, context_u: bytes, context_v: bytes, bits: int
) -> bytes:
    """KDFa: SP 800-108 counter mode with HMAC (Part 1, 11.4.10.2)."""
    label_bytes = label.encode() + b"\0"
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        out += hmac.new(
            key,
            counter.to_bytes(4, "big")
            + label_bytes
            + context_u
            + context_v
            + bits.to_bytes(4, "big"),
            hash_alg.name.lower(),
        ).digest()
        counter += 1
    return _truncate(out, bits)


def kdfe(
    hash_alg: HashAlg, z: bytes, label: str, party_u: bytes, party_v: bytes, bits: int
) -> bytes:
    """KDFe: SP 800-56A concatenation KDF (Part 1, 11.4.10.3)."""
    label_bytes = label.encode() + b"\0"
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        out += hashlib.new(
            hash_alg.name.lower(), counter.to_bytes(4, "big") + z + label_bytes + party_u + party_v
        ).digest()
        counter += 1
    return _truncate(out, bits)


def _truncate(out: bytes, bits: int) -> bytes:
    truncated = bytearray(out[: (bits + 7) // 8])
    if bits % 8:
        truncated[0] &= (1 << (bits % 8)) - 1
    return bytes(truncated)


def make_credential(
    ek: PublicArea, ak_name: bytes, secret: bytes, *, seed: bytes | None = None
) -> Credential:
    """Protect `secret` for the TPM holding `ek`, bound to the object named `ak_name`.

    `seed` is for known-answer tests of RSA EKs only; leave it None so the seed is
    random.  (An ECC EK's seed comes from a fresh ephemeral key and cannot be chosen.)
    """
    if ek.name_alg not in _NAME_ALGS:
        raise CredentialError(f"EK nameAlg 0x{ek.name_alg:04x} is not SHA-1/256/384/512")
    name_alg = HashAlg(ek.name_alg)
    if ek.symmetric.algorithm != Alg.AES or ek.symmetric.mode != Alg.CFB:
        raise CredentialError("EK symmetric definition is not AES-CFB")
    if ek.symmetric.key_bits not in (128, 192, 256):
        raise CredentialError(f"EK AES key of {ek.symmetric.key_bits} bits")
    if len(secret) > name_alg.digest_size:
        raise CredentialError(f"credential of {len(secret)} bytes exceeds {name_alg.digest_size}")
    seed_bits = name_alg.digest_size * 8
    try:
        if ek.type == Alg.RSA:
            seed = seed if seed is not None else os.urandom(name_alg.digest_size)
            encrypted_secret = _rsa_share(ek, name_alg, seed)
        elif ek.type == Alg.ECC:
            if seed is not None:
                raise CredentialError("an ECC EK's seed comes from ECDH; it cannot be given")
            seed, encrypted_secret = _ecc_share(ek, name_alg, seed_bits)
        else:
            raise CredentialError(f"EK type 0x{ek.type:04x} is neither RSA nor ECC")
    except (ValueError, UnsupportedAlgorithm, TpmStructureMalformed) as exc:
        # e.g. an RSA key too small for OAEP with this hash, an off-curve point
        raise CredentialError(f"cannot seal a credential to this EK: {exc}") from None

    sym_key = kdfa(name_alg, seed, "STORAGE", ak_name, b"", ek.symmetric.key_bits)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(tpm2b(secret)) + encryptor.finalize()
    hmac_key = kdfa(name_alg, seed, "INTEGRITY", b"", b"", seed_bits)
    integrity = hmac.new(hmac_key, enc_identity + ak_name, name_alg.name.lower()).digest()
    return Credential(tpm2b(integrity) + enc_identity, encrypted_secret)


def _rsa_share(ek: PublicArea, name_alg: HashAlg, seed: bytes) -> bytes:
    """RSA-OAEP with label "IDENTITY" (NUL included) under the EK's nameAlg (Part 1, B.10.3)."""
    key = public_key(ek)
    assert isinstance(key, rsa.RSAPublicKey)
    digest = name_alg.crypto()
    return key.encrypt(
        seed, padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=b"IDENTITY\0")
    )


def _ecc_share(ek: PublicArea, name_alg: HashAlg, seed_bits: int) -> tuple[bytes, bytes]:
    """One-pass ECDH with an ephemeral key; seed = KDFe(Z, "IDENTITY", Qe.x, Qs.x)
    (Part 1, C.6.1)."""
    key = public_key(ek)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    ephemeral = ec.generate_private_key(key.curve)
    z = ephemeral.exchange(ec.ECDH(), key)
    size = (key.curve.key_size + 7) // 8
    point = ephemeral.public_key().public_numbers()
    qe_x, qe_y = point.x.to_bytes(size, "big"), point.y.to_bytes(size, "big")
    seed = kdfe(name_alg, z, "IDENTITY", qe_x, ek.x, seed_bits)
    return seed, tpm2b(qe_x) + tpm2b(qe_y)
