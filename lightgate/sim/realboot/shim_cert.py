"""The vendor certificate a shim binary carries (its `.vendor_cert` section), read from
the file: the oracle for the `shim.vendor-certificates` claim of a boot through it.

shim's build embeds `struct cert_table { UINT32 vendor_authorized_size, vendor_deny_size,
vendor_authorized_offset, vendor_deny_offset; }` at the start of `.vendor_cert`; the
offsets are from the start of that structure, and the authorized part is a DER X.509
certificate (shim's VENDOR_CERT_FILE build) or an EFI_SIGNATURE_LIST (VENDOR_DB_FILE).
"""

from __future__ import annotations

import hashlib
import struct

from verifier.evidence.pe import PeImageMalformed, pe_layout


def vendor_certificate(shim: bytes) -> bytes:
    """The DER of the certificate shim trusts for what it loads next."""
    section = pe_layout(shim).section(".vendor_cert")
    if section is None:
        raise PeImageMalformed("no .vendor_cert section: not a shim")
    offset, size = section
    authorized_size, _, authorized_offset, _ = struct.unpack_from("<IIII", shim, offset)
    if authorized_offset + authorized_size > size or authorized_size == 0:
        raise PeImageMalformed(".vendor_cert's authorized certificate lies outside the section")
    start = offset + authorized_offset
    return shim[start : start + authorized_size]


def vendor_certificate_fingerprint(shim: bytes) -> str:
    return hashlib.sha256(vendor_certificate(shim)).hexdigest()
