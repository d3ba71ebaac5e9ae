"""The UEFI variables an OVMF variable-store image holds (OVMF_VARS*.fd), read from the
file itself: the oracle for the Secure Boot keys (PK, KEK, db, dbx) a recorded boot must
show.  Pure: bytes in, variables out.

Layout (EDK2: MdePkg Pi/PiFirmwareVolume.h, MdeModulePkg Guid/VariableFormat.h): a
firmware volume header (`_FVH` at offset 40, its length at 48), then a variable store
header (the authenticated-variable GUID, size, format 0x5A, state 0xFE), then variables,
each an AUTHENTICATED_VARIABLE_HEADER (StartId 0x55AA, State, Attributes, MonotonicCount,
TimeStamp, PubKeyIndex, NameSize, DataSize, VendorGuid: 60 bytes), its UTF-16LE name and
its data, every header 4-byte aligned.  Only variables in state VAR_ADDED (0x3F) count.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping
from typing import Final

AUTHENTICATED_VARIABLE_GUID: Final = uuid.UUID("aaf32c78-947b-439a-a180-2e144ec37792")
EFI_GLOBAL_VARIABLE: Final = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE: Final = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
_START_ID: Final = 0x55AA
_VAR_ADDED: Final = 0x3F
_HEADER: Final = struct.Struct("<HBBIQ16sIII16s")  # 60 bytes
_STORE_HEADER_SIZE: Final = 28


class VariableStoreMalformed(ValueError):
    """Not an OVMF variable store this reader understands; says where."""


def read_variables(image: bytes) -> Mapping[tuple[str, uuid.UUID], bytes]:
    """Every live variable of the store, by (name, vendor GUID)."""
    if image[40:44] != b"_FVH":
        raise VariableStoreMalformed("no firmware volume header (_FVH) at offset 40")
    (fv_header_length,) = struct.unpack_from("<H", image, 48)
    store = fv_header_length
    if uuid.UUID(bytes_le=image[store : store + 16]) != AUTHENTICATED_VARIABLE_GUID:
        raise VariableStoreMalformed(f"no authenticated variable store at offset {store}")
    (store_size,) = struct.unpack_from("<I", image, store + 16)
    end = min(store + store_size, len(image))
    offset = store + _STORE_HEADER_SIZE
    variables: dict[tuple[str, uuid.UUID], bytes] = {}
    while offset + _HEADER.size <= end:
        fields = _HEADER.unpack_from(image, offset)
        start_id, state, name_size, data_size, vendor = (
            fields[0],
            fields[1],
            fields[7],
            fields[8],
            fields[9],
        )
        if start_id != _START_ID:
            break  # the free space after the last variable
        name_at = offset + _HEADER.size
        data_at = name_at + name_size
        if data_at + data_size > end:
            raise VariableStoreMalformed(f"variable at {offset} runs past the store")
        if state == _VAR_ADDED:
            name = image[name_at:data_at].decode("utf-16-le").rstrip("\0")
            variables[(name, uuid.UUID(bytes_le=vendor))] = image[data_at : data_at + data_size]
        offset = (data_at + data_size + 3) & ~3
    return variables


def secure_boot_keys(image: bytes) -> dict[str, bytes]:
    """PK, KEK, db and dbx as stored (EFI_SIGNATURE_LISTs), those the store has."""
    variables = read_variables(image)
    wanted = {
        "PK": EFI_GLOBAL_VARIABLE,
        "KEK": EFI_GLOBAL_VARIABLE,
        "db": EFI_IMAGE_SECURITY_DATABASE,
        "dbx": EFI_IMAGE_SECURITY_DATABASE,
    }
    return {
        name: variables[(name, guid)] for name, guid in wanted.items() if (name, guid) in variables
    }
