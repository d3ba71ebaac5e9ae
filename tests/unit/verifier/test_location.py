"""Location evidence: signed asset tags, the observed peer address, the CIDR site table,
and the `location` object of the policy input."""

from __future__ import annotations

import base64
import ipaddress
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lightgate.config import SiteRule
from lightgate.errors import Refusal
from verifier.jose import SigningKey, b64url, sign_jws
from verifier.location import (
    ASSET_TAG_TYP,
    AssetTagInvalid,
    ObservedAddressInvalid,
    ObservedLocation,
    Site,
    SiteTable,
    SiteTableInvalid,
    issue_asset_tag,
    join_metadata,
    location_input,
    observe,
    parse_networks,
    peer_address,
    validate_attributes,
    verify_asset_tag,
)

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
ATTRIBUTES = {"region": "eu-west", "dc": "ams1", "rack": "r12"}
KEY = SigningKey.generate()
KEYS = {KEY.kid: KEY.public_key}
ip = ipaddress.ip_address


# --- asset tags ----------------------------------------------------------------------


def test_issued_tag_verifies_for_its_node() -> None:
    token = issue_asset_tag("node-1", ATTRIBUTES, KEY, NOW, serial=3)
    tag = verify_asset_tag(token, KEYS, "node-1")
    assert tag.node_id == "node-1"
    assert tag.attributes == ATTRIBUTES
    assert tag.issued_at == NOW and tag.serial == 3 and tag.token == token
    assert tag.to_json() == {"attributes": ATTRIBUTES, "issued_at": "2026-11-26T12:00:00Z"}


def test_same_assignment_gives_the_same_payload() -> None:
    """What the agent measures depends on the attributes, not on dict order."""
    reordered = dict(reversed(ATTRIBUTES.items()))
    first = issue_asset_tag("node-1", ATTRIBUTES, KEY, NOW, 1).split(".")[1]
    second = issue_asset_tag("node-1", reordered, KEY, NOW, 1).split(".")[1]
    assert first == second


def test_tag_for_another_node_is_refused() -> None:
    """A tag copied from another node's state directory verifies but names that node."""
    token = issue_asset_tag("node-2", ATTRIBUTES, KEY, NOW, 1)
    with pytest.raises(AssetTagInvalid, match="node-2") as refused:
        verify_asset_tag(token, KEYS, "node-1")
    assert refused.value.check == "asset-tag" and refused.value.node_id == "node-1"
    assert isinstance(refused.value, Refusal)


def test_tag_signed_by_an_unknown_key_is_refused() -> None:
    token = issue_asset_tag("node-1", ATTRIBUTES, SigningKey.generate(), NOW, 1)
    with pytest.raises(AssetTagInvalid, match="not trusted"):
        verify_asset_tag(token, KEYS, "node-1")


def test_tag_verifies_under_a_retired_key_still_held() -> None:
    retired = SigningKey.generate()
    token = issue_asset_tag("node-1", ATTRIBUTES, retired, NOW, 1)
    keys = {**KEYS, retired.kid: retired.public_key}
    assert verify_asset_tag(token, keys, "node-1").attributes == ATTRIBUTES


def _tampered(token: str, **changes: object) -> str:
    header, payload, signature = token.split(".")
    document = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    document.update(changes)
    forged = b64url(json.dumps(document, separators=(",", ":")).encode())
    return f"{header}.{forged}.{signature}"


def test_tampered_attributes_are_refused() -> None:
    """The attack: move a node on paper by editing the tag it holds."""
    token = issue_asset_tag("node-1", ATTRIBUTES, KEY, NOW, 1)
    forged = _tampered(token, attributes={**ATTRIBUTES, "region": "us-east"})
    with pytest.raises(AssetTagInvalid, match="does not verify"):
        verify_asset_tag(forged, KEYS, "node-1")


def test_tampered_subject_is_refused() -> None:
    token = issue_asset_tag("node-2", ATTRIBUTES, KEY, NOW, 1)
    with pytest.raises(AssetTagInvalid, match="does not verify"):
        verify_asset_tag(_tampered(token, sub="node-1"), KEYS, "node-1")


def test_unsigned_tag_is_refused() -> None:
    header = b64url(json.dumps({"alg": "none", "typ": ASSET_TAG_TYP}).encode())
    payload = b64url(
        json.dumps({"sub": "node-1", "attributes": {}, "iat": 0, "serial": 0}).encode()
    )
    with pytest.raises(AssetTagInvalid, match="alg"):
        verify_asset_tag(f"{header}.{payload}.", KEYS, "node-1")


def test_other_token_type_signed_by_the_same_key_is_refused() -> None:
    """A signed attestation result is not an asset tag, though the same key signs both."""
    payload = json.dumps({"sub": "node-1", "attributes": {}, "iat": 0, "serial": 0}).encode()
    token = sign_jws(payload, KEY, "JWT")
    with pytest.raises(AssetTagInvalid, match="typ"):
        verify_asset_tag(token, KEYS, "node-1")


@pytest.mark.parametrize(
    "payload",
    [
        {"sub": "node-1", "attributes": {}, "iat": 0},
        {"sub": "node-1", "attributes": {}, "iat": 0, "serial": 0, "exp": 1},
        {"sub": "node-1", "attributes": {}, "iat": -1, "serial": 0},
        {"sub": "node-1", "attributes": {}, "iat": True, "serial": 0},
        {"sub": "node-1", "attributes": {}, "iat": 0, "serial": 1.5},
        {"sub": "node-1", "attributes": {"Region": "x"}, "iat": 0, "serial": 0},
        {"sub": "node-1", "attributes": ["region"], "iat": 0, "serial": 0},
        {"sub": "node-1", "attributes": {}, "iat": 10**20, "serial": 0},
        ["not", "an", "object"],
    ],
)
def test_signed_but_malformed_payload_is_refused(payload: object) -> None:
    token = sign_jws(json.dumps(payload).encode(), KEY, ASSET_TAG_TYP)
    with pytest.raises(AssetTagInvalid):
        verify_asset_tag(token, KEYS, "node-1")


@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_asset_tag_invalid(token: str) -> None:
    with pytest.raises(AssetTagInvalid):
        verify_asset_tag(token, KEYS, "node-1")


def test_attributes_within_limits_are_kept() -> None:
    attributes = {f"k{i}": "v" * 128 for i in range(32)} | {}
    assert validate_attributes(attributes) == attributes
    assert validate_attributes({"a" * 63: "x", "0.b_c-d": "Zürich 1"}) == {
        "a" * 63: "x",
        "0.b_c-d": "Zürich 1",
    }


@pytest.mark.parametrize(
    ("attributes", "detail"),
    [
        ({f"k{i}": "v" for i in range(33)}, "at most 32"),
        ({"Region": "x"}, "name"),
        ({"-region": "x"}, "name"),
        ({"a" * 64: "x"}, "name"),
        ({"re gion": "x"}, "name"),
        ({"": "x"}, "name"),
        ({"region": ""}, "printable"),
        ({"region": "eu\nwest"}, "printable"),
        ({"region": "eu\x00"}, "printable"),
        ({"region": "x" * 129}, "over 128"),
    ],
)
def test_attributes_out_of_bounds_are_refused(attributes: dict[str, str], detail: str) -> None:
    with pytest.raises(AssetTagInvalid, match=detail):
        validate_attributes(attributes)


def test_issuing_refuses_bad_attributes_and_naive_time() -> None:
    with pytest.raises(AssetTagInvalid):
        issue_asset_tag("node-1", {"Bad": "x"}, KEY, NOW, 1)
    with pytest.raises(ValueError, match="naive"):
        issue_asset_tag("node-1", ATTRIBUTES, KEY, datetime(2026, 1, 1), 1)


# --- observed address ----------------------------------------------------------------

PROXIES = parse_networks(["10.9.0.0/24", "fd00:9::/64"])


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:127.0.0.5:40000", "127.0.0.5"),
        ("ipv6:[::1]:5000", "::1"),
        ("ipv6:%5B::1%5D:5000", "::1"),  # how gRPC 1.85 spells it
        ("ipv6:%5Bfe80::1%25eth0%5D:5000", "fe80::1"),
        ("ipv6:[::ffff:127.0.0.5]:5000", "127.0.0.5"),  # dual-stack listener
    ],
)
def test_grpc_peer_strings_are_parsed(peer: str, address: str) -> None:
    assert peer_address(peer, {}, ()) == ip(address)


def test_unix_socket_peer_has_no_network_address() -> None:
    assert peer_address("unix:/run/lightgate.sock", {}, ()) is None


@pytest.mark.parametrize(
    "peer", ["", "ipv4:127.0.0.5", "ipv4:host:40000", "ipv6:::1:5000", "tcp:1.2.3.4:5", "ipv4:"]
)
def test_unreadable_peer_is_refused(peer: str) -> None:
    with pytest.raises(ObservedAddressInvalid):
        peer_address(peer, {}, ())


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    """The attack: a node claims to be elsewhere by sending the header itself."""
    metadata = {"x-forwarded-for": "192.0.2.10"}
    assert peer_address("ipv4:198.51.100.7:4000", metadata, PROXIES) == ip("198.51.100.7")


def test_forwarded_for_from_a_trusted_proxy_is_honoured() -> None:
    metadata = {"x-forwarded-for": "192.0.2.10"}
    assert peer_address("ipv4:10.9.0.2:4000", metadata, PROXIES) == ip("192.0.2.10")


def test_rightmost_untrusted_hop_is_the_client() -> None:
    """Everything left of the last untrusted hop may have been written by the client."""
    metadata = {"x-forwarded-for": "203.0.113.66, 192.0.2.10, 10.9.0.3"}
    assert peer_address("ipv4:10.9.0.2:4000", metadata, PROXIES) == ip("192.0.2.10")


def test_chain_of_only_proxies_gives_the_first() -> None:
    metadata = {"x-forwarded-for": "10.9.0.4, 10.9.0.3"}
    assert peer_address("ipv4:10.9.0.2:4000", metadata, PROXIES) == ip("10.9.0.4")


def test_trusted_proxy_without_header_is_the_address() -> None:
    assert peer_address("ipv4:10.9.0.2:4000", {}, PROXIES) == ip("10.9.0.2")


def test_forwarded_ipv6_and_bracketed_hops() -> None:
    metadata = {"x-forwarded-for": "[2001:db8::7], fd00:9::5"}
    assert peer_address("ipv6:[fd00:9::1]:4000", metadata, PROXIES) == ip("2001:db8::7")


@pytest.mark.parametrize(
    "header",
    ["", "192.0.2.10,", "not-an-address", "192.0.2.10:5555", "unknown", ",".join(["1.2.3.4"] * 33)],
)
def test_malformed_forwarded_for_from_a_trusted_proxy_is_refused(header: str) -> None:
    with pytest.raises(ObservedAddressInvalid) as refused:
        peer_address("ipv4:10.9.0.2:4000", {"x-forwarded-for": header}, PROXIES)
    assert refused.value.check == "observed-address"


def test_repeated_metadata_is_joined_so_no_hop_hides() -> None:
    pairs = [
        ("x-forwarded-for", "203.0.113.66"),
        ("X-Forwarded-For", "192.0.2.10"),
        ("trace-bin", b"\x00"),
    ]
    metadata = join_metadata(pairs)
    assert metadata == {"x-forwarded-for": "203.0.113.66, 192.0.2.10"}
    assert peer_address("ipv4:10.9.0.2:4000", metadata, PROXIES) == ip("192.0.2.10")


def test_networks_with_host_bits_are_refused() -> None:
    with pytest.raises(SiteTableInvalid):
        parse_networks(["10.9.0.1/24"])


# --- site table ----------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    cidr: str
    site: str
    attributes: dict[str, str] = field(default_factory=dict)


def test_most_specific_network_wins() -> None:
    table = SiteTable.from_rules(
        [
            Rule("127.0.0.0/8", "loopback"),
            Rule("127.0.0.0/29", "ams1", {"region": "eu-west", "dc": "ams1"}),
            Rule("127.0.0.4/30", "fra1", {"region": "eu-central", "dc": "fra1"}),
            Rule("::/0", "anywhere-v6"),
        ]
    )
    assert table.site_of(ip("127.0.0.2")) == Site("ams1", {"region": "eu-west", "dc": "ams1"})
    assert table.site_of(ip("127.0.0.5")) == Site("fra1", {"region": "eu-central", "dc": "fra1"})
    assert table.site_of(ip("127.1.0.1")) == Site("loopback", {})
    assert table.site_of(ip("::1")) == Site("anywhere-v6", {})
    assert table.site_of(ip("192.0.2.1")) is None


def test_site_table_reads_configured_rules() -> None:
    rules = [SiteRule(cidr="10.1.0.0/16", site="ams1", attributes={"region": "eu-west"})]
    assert SiteTable.from_rules(rules).site_of(ip("10.1.2.3")) == Site(
        "ams1", {"region": "eu-west"}
    )


@pytest.mark.parametrize(
    "rules",
    [
        [Rule("10.0.0.0/8", "a"), Rule("10.0.0.0/8", "b")],
        [Rule("10.0.0.1/8", "a")],
        [Rule("banana", "a")],
        [Rule("10.0.0.0/8", "")],
        [Rule("10.0.0.0/8", "a", {"Bad Key": "x"})],
    ],
)
def test_inconsistent_site_tables_are_refused(rules: list[Rule]) -> None:
    with pytest.raises(SiteTableInvalid):
        SiteTable.from_rules(rules)


@given(st.ip_addresses(v=4))
def test_lookup_agrees_with_a_scan(address: ipaddress.IPv4Address) -> None:
    rules = [
        Rule("0.0.0.0/1", "low"),
        Rule("10.0.0.0/8", "ten"),
        Rule("10.64.0.0/10", "ten-64"),
        Rule("192.0.2.0/24", "doc"),
    ]
    table = SiteTable.from_rules(rules)
    matching = [r for r in rules if address in ipaddress.ip_network(r.cidr)]
    best = max(matching, key=lambda r: ipaddress.ip_network(r.cidr).prefixlen, default=None)
    site = table.site_of(address)
    assert (site.name if site else None) == (best.site if best else None)


# --- policy input --------------------------------------------------------------------


def test_location_input_has_the_contract_shape() -> None:
    table = SiteTable.from_rules([Rule("127.0.0.0/29", "ams1", {"region": "eu-west"})])
    observed = observe("ipv4:127.0.0.5:40000", {}, (), table)
    tag = verify_asset_tag(issue_asset_tag("node-1", ATTRIBUTES, KEY, NOW, 1), KEYS, "node-1")
    assert location_input(ATTRIBUTES, tag, None, observed) == {
        "assigned": ATTRIBUTES,
        "attested": {"attributes": ATTRIBUTES, "issued_at": "2026-11-26T12:00:00Z"},
        "attested_error": None,
        "observed": {"address": "127.0.0.5", "site": "ams1", "attributes": {"region": "eu-west"}},
    }


def test_location_input_without_tag_or_site() -> None:
    observed = ObservedLocation(ip("192.0.2.1"), None)
    assert location_input(None, None, "no asset tag in the runtime log", observed) == {
        "assigned": None,
        "attested": None,
        "attested_error": "no asset tag in the runtime log",
        "observed": {"address": "192.0.2.1", "site": None, "attributes": None},
    }
