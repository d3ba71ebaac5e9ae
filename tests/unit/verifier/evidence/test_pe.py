"""The Authenticode (PE/COFF image) digest, on images built here byte by byte and, when
the real-boot cache holds them, on Debian's signed shim, grub and kernel against pesign."""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from verifier.evidence.pe import PeImageMalformed, authenticode_digest, pe_layout

CACHE = Path(__file__).resolve().parents[4] / ".cache" / "realboot" / "unpacked"
REAL = sorted(
    p
    for pattern in (
        "shim*/**/shimx64.efi.signed",
        "grub*/**/grubx64.efi.signed",
        "linux-image*/boot/vmlinuz-*",
    )
    for p in CACHE.glob(pattern)
)


def build_pe(sections: list[bytes], trailer: bytes = b"", certificate: bytes = b"") -> bytes:
    """A PE32+ image: DOS stub, PE header, optional header with 16 data directories,
    the sections (file-aligned to 0x200), `trailer` after them, then `certificate` as
    the attribute certificate table (what signing appends)."""
    optional_size = 112 + 16 * 8
    header_end = 0x80 + 4 + 20 + optional_size + 40 * len(sections)
    size_of_headers = -(-header_end // 0x200) * 0x200
    offsets, body, cursor = [], b"", size_of_headers
    for data in sections:
        padded = data + bytes(-len(data) % 0x200)
        offsets.append((cursor, len(padded)))
        body += padded
        cursor += len(padded)
    body += trailer
    cert_offset = size_of_headers + len(body) if certificate else 0
    dos = b"MZ" + bytes(0x3A) + struct.pack("<I", 0x80) + bytes(0x80 - 0x40)
    coff = struct.pack("<HHIIIHH", 0x8664, len(sections), 0, 0, 0, optional_size, 0x22)
    optional = bytearray(optional_size)
    struct.pack_into("<H", optional, 0, 0x20B)
    struct.pack_into("<I", optional, 60, size_of_headers)
    struct.pack_into("<I", optional, 64, 0x1234ABCD)  # CheckSum: not hashed
    struct.pack_into("<I", optional, 108, 16)
    struct.pack_into("<II", optional, 112 + 8 * 4, cert_offset, len(certificate))
    table = b"".join(
        struct.pack(
            "<8sIIIIIIHHI", f".s{i}".encode(), size, 0x1000 * (i + 1), size, offset, 0, 0, 0, 0, 0
        )
        for i, (offset, size) in enumerate(offsets)
    )
    headers = dos + b"PE\0\0" + coff + bytes(optional) + table
    return headers + bytes(size_of_headers - len(headers)) + body + certificate


def reference_digest(image: bytes) -> bytes:
    """The definition, spelled out for the images `build_pe` makes."""
    layout = pe_layout(image)
    checksum = layout.checksum_offset
    entry = layout.certificate_entry_offset
    assert entry is not None
    hashed = (
        image[:checksum] + image[checksum + 4 : entry] + image[entry + 8 : layout.size_of_headers]
    )
    hashed += b"".join(image[o : o + s] for o, s in layout.sections)
    end = len(image) - layout.certificate_size
    hashed += image[layout.size_of_headers + sum(s for _, s in layout.sections) : end]
    return hashlib.sha256(hashed).digest()


def test_the_digest_covers_headers_sections_and_trailing_data() -> None:
    image = build_pe([b"\x90" * 700, b"data" * 50], trailer=b"appended")
    assert authenticode_digest(image) == reference_digest(image)


def test_signing_does_not_change_the_digest() -> None:
    # The certificate table, its directory entry and the CheckSum are what signing
    # writes; none is hashed, so the signed and the unsigned image have one digest.
    unsigned = build_pe([b"\x90" * 700])
    signed = bytearray(build_pe([b"\x90" * 700], certificate=b"\x30\x82" + bytes(510)))
    struct.pack_into("<I", signed, pe_layout(bytes(signed)).checksum_offset, 0xDEADBEEF)
    assert authenticode_digest(bytes(signed)) == authenticode_digest(unsigned)


def test_any_byte_of_code_changes_the_digest() -> None:
    image = bytearray(build_pe([b"\x90" * 700, b"data" * 50]))
    before = authenticode_digest(bytes(image))
    offset, _ = pe_layout(bytes(image)).sections[1]
    image[offset + 3] ^= 1
    assert authenticode_digest(bytes(image)) != before


def test_sections_are_hashed_in_file_order_whatever_the_table_order() -> None:
    image = bytearray(build_pe([b"A" * 512, b"B" * 512]))
    layout = pe_layout(bytes(image))
    table = layout.checksum_offset - 64 + 112 + 16 * 8
    first, second = image[table : table + 40], image[table + 40 : table + 80]
    image[table : table + 80] = second + first  # the table lists B's section first
    entry = layout.certificate_entry_offset
    assert entry is not None
    headers = bytes(image[: layout.size_of_headers])
    checksum = layout.checksum_offset
    expected = hashlib.sha256(
        headers[:checksum]
        + headers[checksum + 4 : entry]
        + headers[entry + 8 :]
        + b"A" * 512  # the section at the lower file offset first
        + b"B" * 512
    ).digest()
    assert authenticode_digest(bytes(image)) == expected


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda b: b"ZM" + b[2:], "no MZ header"),
        (lambda b: b[:0x80] + b"PX\0\0" + b[0x84:], "no PE signature"),
        (lambda b: b[:0x98] + b"\x0b\x02"[::-1] + b[0x9A:], "neither PE32 nor PE32"),
        (lambda b: b[:0x200], "past the end"),
        (lambda b: b[:0x30], "no MZ header"),
    ],
)
def test_what_is_not_a_pe_image_is_refused(mutate: object, why: str) -> None:
    image = build_pe([b"\x90" * 700])
    with pytest.raises(PeImageMalformed, match=why):
        authenticode_digest(mutate(image))  # type: ignore[operator]


@pytest.mark.skipif(
    not REAL or shutil.which("pesign") is None, reason="no real-boot cache or pesign"
)
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_debian_boot_binaries_hash_as_pesign_hashes_them(path: Path) -> None:
    done = subprocess.run(
        ["pesign", "-h", "-i", str(path)], capture_output=True, text=True, check=True
    )
    expected = done.stdout.split("hash:")[1].split()[0]
    assert authenticode_digest(path.read_bytes()).hex() == expected


def test_headers_ending_inside_the_skipped_fields_are_refused() -> None:
    image = bytearray(build_pe([b"\x90" * 700]))
    layout = pe_layout(bytes(image))
    optional = layout.checksum_offset - 64
    struct.pack_into("<I", image, optional + 60, layout.checksum_offset)  # SizeOfHeaders
    with pytest.raises(PeImageMalformed, match="SizeOfHeaders"):
        authenticode_digest(bytes(image))
