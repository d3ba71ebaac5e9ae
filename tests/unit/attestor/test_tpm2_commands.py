"""The agent's TPM command layer without a TPM: framing, response codes, templates and
TCTI strings, with tpm2-pytss (an independent TSS) as the reference where it has one."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tpm2_pytss.constants import TPMA_OBJECT
from tpm2_pytss.types import TPMT_PUBLIC
from tpm2_pytss.utils import create_ek_template

from attestor.tpm2 import commands as cmd
from attestor.tpm2.commands import CommandCode
from attestor.tpm2.tcti import TctiError, TctiSpec, check_response_header, parse_tcti
from verifier.evidence.errors import TpmStructureMalformed
from verifier.evidence.tpm_structures import Reader


def _absent(index: int) -> bytes:
    from tpm2_pytss.utils import NoSuchIndex

    raise NoSuchIndex(index)


@pytest.mark.parametrize(("kind", "name"), [("rsa", "EK-RSA2048"), ("ecc", "EK-ECC256")])
def test_default_ek_templates_are_tpm2_pytss_ones(kind: str, name: str) -> None:
    """The TCG default templates (EK Credential Profile B.3.3), byte for byte."""
    _, template = create_ek_template(name, _absent)
    assert cmd.ek_template(kind) == template.publicArea.marshal()


def test_ek_nonce_fills_the_start_of_the_rsa_unique_field() -> None:
    def nv(index: int) -> bytes:
        if index == 0x01C00003:
            return b"\x01" * 16
        return _absent(index)

    _, template = create_ek_template("EK-RSA2048", nv)
    assert cmd.ek_template("rsa", b"\x01" * 16) == template.publicArea.marshal()


def test_ek_nonce_fills_the_ecc_x_coordinate() -> None:
    template = cmd.ek_template("ecc", b"\x02" * 16)
    public = TPMT_PUBLIC.unmarshal(template)[0]
    assert bytes(public.unique.ecc.x) == b"\x02" * 16 + bytes(16)
    assert bytes(public.unique.ecc.y) == bytes(32)


@pytest.mark.parametrize(
    ("algorithm", "spec"),
    [("ecc", "ecc256:ecdsa-sha256:null"), ("rsa", "rsa2048:rsassa-sha256:null")],
)
def test_signing_key_templates_are_tpm2_pytss_ones(algorithm: str, spec: str) -> None:
    attributes = (
        TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.SIGN_ENCRYPT
        | TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
    )
    reference = TPMT_PUBLIC.parse(alg=spec, objectAttributes=attributes, nameAlg="sha256")
    assert cmd.signing_key_template(algorithm, int(attributes)) == reference.marshal()


def test_unknown_key_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="dsa"):
        cmd.ek_template("dsa")
    with pytest.raises(ValueError, match="dsa"):
        cmd.signing_key_template("dsa", 0)


def test_command_without_sessions_is_framed_per_part_1() -> None:
    command = cmd.build_command(CommandCode.FlushContext, (), cmd.u32(0x80000001))
    assert command == bytes.fromhex("80010000000e00000165") + bytes.fromhex("80000001")


def test_command_with_password_and_policy_sessions() -> None:
    policy = cmd.policy_auth(0x03000000, b"\xaa" * 32)
    command = cmd.build_command(
        CommandCode.ActivateCredential, (0x80000001, 0x80000000), b"P", (cmd.PASSWORD, policy)
    )
    tag, size, code = struct.unpack(">HII", command[:10])
    assert (tag, size, code) == (cmd.TPM_ST_SESSIONS, len(command), 0x147)
    reader = Reader(command, "command", 10)
    assert [reader.u32("h"), reader.u32("h")] == [0x80000001, 0x80000000]
    area = Reader(reader.take(reader.u32("authorizationSize"), "area"), "area")
    assert area.u32("handle") == cmd.TPM_RS_PW
    assert area.tpm2b("nonce") == b"" and area.u8("attributes") == 0 and area.tpm2b("hmac") == b""
    assert area.u32("handle") == 0x03000000
    assert area.tpm2b("nonce") == b"\xaa" * 32
    assert area.u8("attributes") == 0  # continueSession clear: the policy is used up
    assert area.tpm2b("hmac") == b""
    area.end()
    assert reader.take(1, "parameters") == b"P"
    reader.end()


def _response(code: int = 0, body: bytes = b"", tag: int = cmd.TPM_ST_NO_SESSIONS) -> bytes:
    return struct.pack(">HII", tag, 10 + len(body), code) + body


def test_response_with_sessions_drops_the_auth_area() -> None:
    body = cmd.u32(0x80000002) + cmd.u32(3) + b"abc" + b"\x00\x00\x01\x00\x00"
    response = cmd.parse_response(
        _response(body=body, tag=cmd.TPM_ST_SESSIONS), CommandCode.Load, 1
    )
    assert response == cmd.Response((0x80000002,), b"abc")


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0x18B, "TPM_RC_HANDLE (handle 1)"),
        (0x9A2, "TPM_RC_BAD_AUTH (session 1)"),
        (0x2C4, "TPM_RC_VALUE (parameter 2)"),
        (0x12F, "TPM_RC_AUTH_UNAVAILABLE"),
        (0x922, "TPM_RC_RETRY"),
        (0x1D5, "TPM_RC_SIZE (parameter 1)"),
        (0x101, "TPM_RC_FAILURE"),
        (0x47F, "TCG vendor code"),
    ],
)
def test_error_responses_name_the_code(code: int, text: str) -> None:
    with pytest.raises(cmd.TpmCommandFailed) as caught:
        cmd.parse_response(_response(code), CommandCode.Quote)
    assert str(caught.value).startswith(f"TPM2_Quote: {text}")
    assert caught.value.code == code


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x80\x01\x00\x00",
        _response()[:-1] + b"",  # size larger than what arrived
        struct.pack(">HII", 0x8001, 99, 0),
        _response(body=b"\x00\x00\x00\x09abc", tag=cmd.TPM_ST_SESSIONS),  # parameterSize
        struct.pack(">HII", 0x1234, 10, 0),  # neither tag
    ],
)
def test_malformed_responses_are_typed_errors(raw: bytes) -> None:
    with pytest.raises(TpmStructureMalformed):
        cmd.parse_response(raw, CommandCode.Load, 1 if len(raw) > 13 else 0)


@given(st.binary(max_size=64))
def test_any_bytes_give_a_response_or_a_typed_error(raw: bytes) -> None:
    with contextlib.suppress(TpmStructureMalformed, cmd.TpmCommandFailed):
        cmd.parse_response(raw, CommandCode.Create)


def test_signature_is_taken_whole_from_a_parameter_area() -> None:
    ecdsa = cmd.u16(0x18) + cmd.u16(0x0B) + b"\x00\x02rr" + b"\x00\x01s"
    reader = Reader(b"\x00\x01A" + ecdsa + b"tail", "quote")
    reader.tpm2b("attest")
    assert cmd.read_signature(reader) == ecdsa
    assert reader.take(4, "rest") == b"tail"
    with pytest.raises(TpmStructureMalformed, match="0x0005"):
        cmd.read_signature(Reader(cmd.u16(5), "hmac"))


def test_nv_public_is_parsed() -> None:
    inner = cmd.u32(0x01C00002) + cmd.u16(0x0B) + cmd.u32(0x620F0003) + b"\x00\x00" + cmd.u16(900)
    nv = cmd.parse_nv_public(cmd.u16(len(inner)) + inner + b"\x00\x22" + bytes(34))
    assert nv == cmd.NvPublic(0x01C00002, 0x0B, 0x620F0003, b"", 900)
    with pytest.raises(TpmStructureMalformed):
        cmd.parse_nv_public(cmd.u16(len(inner) + 1) + inner + b"x")


@pytest.mark.parametrize(
    ("tcti", "spec"),
    [
        ("device:/dev/tpmrm0", TctiSpec("device", path="/dev/tpmrm0")),
        ("device", TctiSpec("device", path="/dev/tpmrm0")),
        ("device:/dev/tpm0", TctiSpec("device", path="/dev/tpm0")),
        ("swtpm:host=127.0.0.1,port=2400", TctiSpec("swtpm", host="127.0.0.1", port=2400)),
        ("swtpm", TctiSpec("swtpm", host="localhost", port=2321)),
        ("swtpm:path=/run/swtpm.sock", TctiSpec("swtpm", path="/run/swtpm.sock")),
    ],
)
def test_tcti_strings(tcti: str, spec: TctiSpec) -> None:
    assert parse_tcti(tcti) == spec


@pytest.mark.parametrize(
    ("tcti", "needle"),
    [
        ("tabrmd:bus_type=system", "not supported"),
        ("mssim:host=x", "not supported"),
        ("swtpm:port=http", "not a TCP port"),
        ("swtpm:port=70000", "not a TCP port"),
        ("swtpm:hots=x", "host="),
        ("swtpm:path=/x,port=1", "excludes"),
        ("usb:/dev/x", "expected device"),
    ],
)
def test_bad_tcti_strings_say_why(tcti: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_tcti(tcti)


@pytest.mark.parametrize("size", [0, 9, 64 * 1024 + 1])
def test_response_headers_with_impossible_sizes_are_refused(size: int) -> None:
    with pytest.raises(TctiError, match="announces"):
        check_response_header(struct.pack(">HII", 0x8001, size, 0), "swtpm")


def test_stored_rsa_template_gets_the_nonce_as_tpm2_pytss_applies_it() -> None:
    """A manufacturer's template (here the default one, with padding after it in its NV
    index) and nonce, as `tpm2_createek -t` and tpm2-pytss combine them."""
    stored = cmd.ek_template("rsa") + b"\x00\x00\x00"
    nonce = bytes(range(1, 17))

    def nv(index: int) -> bytes:
        return {0x01C00003: nonce, 0x01C00004: stored}.get(index) or _absent(index)

    _, reference = create_ek_template("EK-RSA2048", nv)
    assert cmd.with_ek_nonce(stored, nonce) == reference.publicArea.marshal()
    assert cmd.with_ek_nonce(stored, b"") == cmd.ek_template("rsa")  # padding dropped


def test_stored_ecc_template_gets_the_nonce_in_x() -> None:
    template = cmd.with_ek_nonce(cmd.ek_template("ecc") + b"\xff", b"\x09" * 8)
    public = TPMT_PUBLIC.unmarshal(template)[0]
    assert bytes(public.unique.ecc.x) == b"\x09" * 8 + bytes(24)
    assert bytes(public.unique.ecc.y) == bytes(32)
    assert template[: len(template) - 68] == cmd.ek_template("ecc")[: len(template) - 68]


@pytest.mark.parametrize(
    "stored",
    [b"", b"\x00\x01\x00", cmd.ek_template("rsa")[:-10], b"\x00\x08" + bytes(40)],
)
def test_unusable_stored_templates_are_value_errors(stored: bytes) -> None:
    with pytest.raises(ValueError, match="EK template"):
        cmd.with_ek_nonce(stored, b"n")
