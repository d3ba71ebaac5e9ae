"""The Authenticode digest of a PE/COFF image: what UEFI firmware and shim measure for
each EFI application they load (EV_EFI_BOOT_SERVICES_APPLICATION, TCG PC Client PFP
10.4.1: "the PE/COFF image hash"), so a boot chain's reference values can be computed
from the binaries themselves.  Pure: bytes in, digest out.

The image hash is defined by Microsoft's "Windows Authenticode Portable Executable
Signature Format" (and implemented the same way by EDK2's image verification and shim):
the headers without the CheckSum field and without the Certificate Table directory entry,
then each section's raw data in ascending order of its file offset, then whatever lies
after the last section up to the attribute certificate table (the signature itself is
never hashed, so a signed and an unsigned build of one image have one digest).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

_MZ: Final = b"MZ"
_PE: Final = b"PE\0\0"
_PE32: Final = 0x10B
_PE32_PLUS: Final = 0x20B
_COFF_HEADER: Final = struct.Struct("<HHIIIHH")  # Machine .. Characteristics, 20 bytes
_SECTION: Final = struct.Struct("<8sIIIIIIHHI")  # 40 bytes
#: Offsets within the optional header (PE/COFF spec, "Optional Header Windows-Specific
#: Fields" and "Optional Header Data Directories").
_CHECKSUM_OFFSET: Final = 64
_SIZE_OF_HEADERS_OFFSET: Final = 60
_NUMBER_OF_RVA_OFFSET: Final = {_PE32: 92, _PE32_PLUS: 108}
_DATA_DIRECTORIES_OFFSET: Final = {_PE32: 96, _PE32_PLUS: 112}
_CERTIFICATE_TABLE: Final = 4  # IMAGE_DIRECTORY_ENTRY_SECURITY


class PeImageMalformed(ValueError):
    """Bytes that are not a PE/COFF image this module can hash; says where and why."""


@dataclass(frozen=True, slots=True)
class PeLayout:
    """Where the parts the image hash skips or walks are."""

    checksum_offset: int
    certificate_entry_offset: int | None  # None: the image has no such directory entry
    size_of_headers: int
    sections: tuple[tuple[int, int], ...]  # (file offset, size) of raw data, by offset
    certificate_offset: int  # 0 when unsigned
    certificate_size: int
    names: tuple[tuple[str, int, int], ...] = ()  # (name, file offset, size), table order

    def section(self, name: str) -> tuple[int, int] | None:
        """(file offset, size) of the raw data of the first section called `name`."""
        return next(((o, s) for n, o, s in self.names if n == name), None)


def pe_layout(image: bytes) -> PeLayout:
    """The layout of a PE/COFF image; raises PeImageMalformed."""
    if len(image) < 0x40 or image[:2] != _MZ:
        raise PeImageMalformed("no MZ header")
    (pe_offset,) = struct.unpack_from("<I", image, 0x3C)
    if pe_offset + 24 > len(image) or image[pe_offset : pe_offset + 4] != _PE:
        raise PeImageMalformed(f"no PE signature at offset {pe_offset}")
    coff = pe_offset + 4
    _, sections, _, symbols_at, symbols, optional_size, _ = _COFF_HEADER.unpack_from(image, coff)
    optional = coff + _COFF_HEADER.size
    if optional + optional_size > len(image) or optional_size < 2:
        raise PeImageMalformed("optional header runs past the end of the image")
    (magic,) = struct.unpack_from("<H", image, optional)
    if magic not in _DATA_DIRECTORIES_OFFSET:
        raise PeImageMalformed(f"optional header magic 0x{magic:x} is neither PE32 nor PE32+")
    if optional_size < _DATA_DIRECTORIES_OFFSET[magic]:
        raise PeImageMalformed(f"optional header of {optional_size} bytes is too short")
    (size_of_headers,) = struct.unpack_from("<I", image, optional + _SIZE_OF_HEADERS_OFFSET)
    (directories,) = struct.unpack_from("<I", image, optional + _NUMBER_OF_RVA_OFFSET[magic])
    entry: int | None = None
    cert_offset = cert_size = 0
    first_directory = optional + _DATA_DIRECTORIES_OFFSET[magic]
    if directories > _CERTIFICATE_TABLE:
        entry = first_directory + 8 * _CERTIFICATE_TABLE
        if entry + 8 > optional + optional_size:
            raise PeImageMalformed("the certificate table entry lies outside the optional header")
        cert_offset, cert_size = struct.unpack_from("<II", image, entry)
        if cert_size and (cert_offset < size_of_headers or cert_offset + cert_size > len(image)):
            raise PeImageMalformed(
                f"certificate table at {cert_offset} (+{cert_size}) is outside the file"
            )
    skipped_end = (entry + 8) if entry is not None else optional + _CHECKSUM_OFFSET + 4
    if size_of_headers < skipped_end:
        raise PeImageMalformed(
            f"SizeOfHeaders {size_of_headers} ends inside the fields the image hash skips"
        )
    table = optional + optional_size
    if table + sections * _SECTION.size > len(image) or size_of_headers > len(image):
        raise PeImageMalformed("section table or headers run past the end of the image")
    raw, names = [], []
    for index in range(sections):
        fields = _SECTION.unpack_from(image, table + index * _SECTION.size)
        size, offset = fields[3], fields[4]
        if size == 0:
            continue
        if offset + size > len(image):
            raise PeImageMalformed(f"section {index} runs past the end of the image")
        raw.append((offset, size))
        name = _section_name(image, fields[0], symbols_at + 18 * symbols if symbols_at else 0)
        names.append((name, offset, size))
    return PeLayout(
        checksum_offset=optional + _CHECKSUM_OFFSET,
        certificate_entry_offset=entry,
        size_of_headers=size_of_headers,
        sections=tuple(sorted(raw)),
        certificate_offset=cert_offset,
        certificate_size=cert_size,
        names=tuple(names),
    )


def authenticode_digest(image: bytes, algorithm: str = "sha256") -> bytes:
    """The Authenticode (PE/COFF image) hash of `image` with `algorithm` (a hashlib name)."""
    layout = pe_layout(image)
    hasher = hashlib.new(algorithm)
    view = memoryview(image)
    skip_checksum = layout.checksum_offset
    hasher.update(view[:skip_checksum])
    if layout.certificate_entry_offset is None:
        hasher.update(view[skip_checksum + 4 : layout.size_of_headers])
    else:
        hasher.update(view[skip_checksum + 4 : layout.certificate_entry_offset])
        hasher.update(view[layout.certificate_entry_offset + 8 : layout.size_of_headers])
    hashed = layout.size_of_headers
    for offset, size in layout.sections:
        hasher.update(view[offset : offset + size])
        hashed += size
    end = len(image) - layout.certificate_size
    if end > hashed:
        hasher.update(view[hashed:end])
    return hasher.digest()


def _section_name(image: bytes, raw: bytes, strings_at: int) -> str:
    """A section's name; "/N" names the string at offset N of the COFF string table
    (how GNU ld writes names longer than eight bytes, such as shim's `.vendor_cert`)."""
    name = raw.rstrip(b"\0").decode("ascii", "replace")
    if name.startswith("/") and name[1:].isdigit() and strings_at:
        start = strings_at + int(name[1:])
        end = image.find(b"\0", start, start + 256)
        if start < len(image) and end != -1:
            return image[start:end].decode("ascii", "replace")
    return name
