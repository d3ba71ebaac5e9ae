"""The agent's TPM command layer on a real swtpm, checked against tpm2-tss (through
tpm2-pytss), an independent TSS: the same EK, the same PCRs, the same banks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR, TPM2_CAP, TPMA_NV
from tpm2_pytss.types import TPM2B_NV_PUBLIC, TPML_PCR_SELECTION, TPMS_NV_PUBLIC
from tpm2_pytss.utils import NVReadEK, create_ek_template

from attestor.tpm import AkBlobs, Tpm, TpmError
from attestor.tpm2.commands import ek_template
from verifier.evidence.keys import AttestationKey
from verifier.evidence.quote import check_signature
from verifier.evidence.tpm_structures import HashAlg, PcrSelection, parse_attest, parse_signature

pytestmark = pytest.mark.swtpm

SwtpmFactory = Any


@contextmanager
def reference(tcti: str) -> Iterator[ESAPI]:
    """tpm2-tss on the same swtpm (which serves one connection at a time)."""
    ectx = ESAPI(tcti)
    try:
        yield ectx
    finally:
        ectx.close()


def reference_ek(ectx: ESAPI, name: str) -> tuple[bytes | None, bytes]:
    certificate, template = create_ek_template(name, NVReadEK(ectx))
    handle, public, _, _, _ = ectx.create_primary(None, template, ESYS_TR.ENDORSEMENT)
    ectx.flush_context(handle)
    return certificate, public.publicArea.marshal()


@pytest.mark.parametrize(("kind", "name"), [("rsa", "EK-RSA2048"), ("ecc", "EK-ECC256")])
def test_ek_and_certificate_are_tpm2_tss_ones(
    make_swtpm: SwtpmFactory, kind: str, name: str
) -> None:
    simulator = make_swtpm(boot=None)
    with Tpm(simulator.tcti, kind) as tpm:  # type: ignore[arg-type]
        ours = tpm.endorsement()
    with reference(simulator.tcti) as ectx:
        certificate, public = reference_ek(ectx, name)
    assert ours.public == public
    assert ours.certificate == (bytes(certificate) if certificate else None)
    if kind == "rsa":  # the simulator manufactures its TPMs with an RSA EK certificate
        assert ours.certificate is not None


def define_platform_index(ectx: ESAPI, index: int, data: bytes) -> None:
    """An NV index as a manufacturer provisions EK material (platform hierarchy)."""
    nv_public = TPM2B_NV_PUBLIC(
        nvPublic=TPMS_NV_PUBLIC(
            nvIndex=index,
            nameAlg=HashAlg.SHA256,
            attributes=TPMA_NV.PPWRITE
            | TPMA_NV.PPREAD
            | TPMA_NV.OWNERREAD
            | TPMA_NV.AUTHREAD
            | TPMA_NV.NO_DA
            | TPMA_NV.PLATFORMCREATE,
            dataSize=len(data),
        )
    )
    handle = ectx.nv_define_space(None, nv_public, ESYS_TR.PLATFORM)
    ectx.nv_write(handle, data, 0, ESYS_TR.PLATFORM)


def test_manufacturer_ek_nonce_is_used(make_swtpm: SwtpmFactory) -> None:
    """A TPM whose manufacturer stored an EK nonce (NV 0x01c00003): the EK is made from
    the template with the nonce in its unique field, as the certificate's key was."""
    simulator = make_swtpm(boot=None)
    nonce = bytes(range(1, 17))
    with reference(simulator.tcti) as ectx:
        define_platform_index(ectx, 0x01C00003, nonce)
        _, expected = reference_ek(ectx, "EK-RSA2048")
    with Tpm(simulator.tcti, "rsa") as tpm:
        ours = tpm.endorsement().public
    assert ours == expected
    with Tpm(simulator.tcti, "ecc") as tpm:
        assert tpm.nv_read(0x01C00003) == nonce
        assert tpm.nv_read(0x01C0000B) is None  # not defined


def test_manufacturer_ek_template_and_nonce_are_used(make_swtpm: SwtpmFactory) -> None:
    """A TPM whose manufacturer stored both an EK template (NV 0x01c00004, here with
    padding after the structure) and a nonce: the nonce goes into the stored template's
    unique field, as tpm2-tss does, so the EK is the certified key."""
    simulator = make_swtpm(boot=None)
    template = ek_template("rsa") + b"\x00\x00"
    with reference(simulator.tcti) as ectx:
        define_platform_index(ectx, 0x01C00003, b"\x42" * 16)
        define_platform_index(ectx, 0x01C00004, template)
        _, expected = reference_ek(ectx, "EK-RSA2048")
    with Tpm(simulator.tcti, "rsa") as tpm:
        assert tpm.endorsement().public == expected


def test_unusable_stored_ek_template_is_a_tpm_error(make_swtpm: SwtpmFactory) -> None:
    simulator = make_swtpm(boot=None)
    with reference(simulator.tcti) as ectx:
        define_platform_index(ectx, 0x01C00004, b"\x00\x08garbage")
    with (
        Tpm(simulator.tcti, "rsa") as tpm,
        pytest.raises(
            TpmError, match="creating the RSA EK failed: the EK template in NV 0x01c00004"
        ),
    ):
        tpm.endorsement()


def test_pcrs_banks_and_extends_agree_with_tpm2_tss(make_swtpm: SwtpmFactory) -> None:
    simulator = make_swtpm()  # a measured fixture boot
    digests = {HashAlg.SHA1: hashlib.sha1(b"x").digest(), HashAlg.SHA256: b"\x07" * 32}
    selection = PcrSelection.of({HashAlg.SHA1: list(range(24)), HashAlg.SHA256: list(range(24))})
    with Tpm(simulator.tcti) as tpm:
        tpm.extend_pcr(16, digests)
        ours = tpm.read_pcrs(selection)
        banks = tpm.allocated_banks()
    with reference(simulator.tcti) as ectx:
        for alg in (HashAlg.SHA1, HashAlg.SHA256):
            for start in range(0, 24, 8):
                spec = f"{alg.bank_name}:{','.join(str(i) for i in range(start, start + 8))}"
                _, _, values = ectx.pcr_read(TPML_PCR_SELECTION.parse(spec))
                assert [bytes(v) for v in values] == [ours[alg][i] for i in range(start, start + 8)]
        _, capability = ectx.get_capability(TPM2_CAP.PCRS, 0, 1)
    reference_banks = {
        int(s.hash)
        for s in capability.data.assignedPCR.pcrSelections[: capability.data.assignedPCR.count]
    }
    assert {int(alg) for alg in banks} <= reference_banks
    assert banks[HashAlg.SHA256] == frozenset(range(24))
    assert ours[HashAlg.SHA256][16] == hashlib.sha256(bytes(32) + b"\x07" * 32).digest()


@pytest.mark.parametrize("algorithm", ["ecc", "rsa"])
def test_quote_verifies_and_covers_the_pcrs_read(make_swtpm: SwtpmFactory, algorithm: str) -> None:
    simulator = make_swtpm()
    selection = PcrSelection.of({HashAlg.SHA256: [0, 1, 7, 13]})
    with Tpm(simulator.tcti) as tpm:
        ak = tpm.create_ak(algorithm)  # type: ignore[arg-type]
        message, signature, pcrs = tpm.quote_with_pcrs(ak, selection, b"nonce-1234")
    check_signature(AttestationKey.from_bytes(ak.tpmt_public), message, parse_signature(signature))
    attest = parse_attest(message)
    assert attest.extra_data == b"nonce-1234"
    assert attest.quote is not None
    assert (
        attest.quote.pcr_digest
        == hashlib.sha256(b"".join(pcrs[HashAlg.SHA256][i] for i in (0, 1, 7, 13))).digest()
    )


def test_tpm_refusals_are_tpm_errors_naming_the_code(make_swtpm: SwtpmFactory) -> None:
    simulator = make_swtpm(boot=None)
    with Tpm(simulator.tcti) as tpm:
        ak = tpm.create_ak("ecc")
        sha256_pcr0 = PcrSelection.of({HashAlg.SHA256: [0]})
        tampered = AkBlobs(ak.public, ak.private[:-1] + bytes([ak.private[-1] ^ 1]))
        with pytest.raises(TpmError, match=r"loading the AK under this TPM's EK failed: .*TPM_RC_"):
            tpm.quote(tampered, sha256_pcr0, b"n")
        with pytest.raises(TpmError, match="corrupt"):
            tpm.quote(AkBlobs(b"\x00\x09", ak.private), sha256_pcr0, b"n")
        with pytest.raises(
            TpmError, match="TPM2_PCR_Extend of PCR 99 failed: TPM2_PCR_Extend: TPM_RC_"
        ):
            tpm.extend_pcr(99, {HashAlg.SHA256: bytes(32)})
        # The session still works after refusals.
        tpm.quote(ak, sha256_pcr0, b"n")


def test_a_tpm_that_goes_away_is_a_tpm_error(make_swtpm: SwtpmFactory) -> None:
    simulator = make_swtpm(boot=None)
    tpm = Tpm(simulator.tcti)
    tpm.endorsement()
    simulator.stop()
    with pytest.raises(TpmError, match="TPM2_"):
        tpm.create_ak("ecc")
    tpm.close()
    with pytest.raises(TpmError, match="cannot open TPM"):
        Tpm(simulator.tcti)
