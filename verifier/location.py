"""Where a node is: the asset tag it attests and the network it is observed from.

Two kinds of evidence, judged apart and compared by policy (issue 5, item 3):

- The *asset tag* is an attribute set (region, dc, rack...) an operator assigns to a node.
  The verifier signs it (a compact JWS, ES256, `typ` "lightgate-asset-tag+jwt") and hands
  it to the agent with each challenge; the agent measures it into the runtime PCR and
  records it in the runtime log (`verifier.evidence.runtime_log`).  Once the log replays
  to the quote, the tag's signature and subject are checked here: the TPM proves the
  node measured *this* tag, the signature proves the verifier issued it, the subject
  that it was issued to this node (a tag copied from another node is refused).
- The *observed* location is the network address an attestation came from, believed
  from a trusted proxy's `x-forwarded-for` only, mapped to a site through the
  configured CIDR table (most specific network wins).

Pure: no I/O.  `location_input` builds the `location` object of the policy input.
"""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from lightgate.errors import Refusal
from verifier.jose import JwsInvalid, SigningKey, sign_jws, verify_jws

ASSET_TAG_TYP: Final = "lightgate-asset-tag+jwt"
MAX_ATTRIBUTES: Final = 32
MAX_VALUE_CHARS: Final = 128
_ATTRIBUTE_KEY: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_PAYLOAD_MEMBERS: Final = frozenset({"sub", "attributes", "iat", "serial"})
#: More hops than any real proxy chain; a longer header is refused, not walked.
MAX_FORWARDED_HOPS: Final = 32
FORWARDED_FOR: Final = "x-forwarded-for"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class LocationError(Refusal):
    """Location evidence was refused."""

    check = "location"


class AssetTagInvalid(LocationError):
    """An asset tag (or the attributes for one) is malformed, not signed by a key this
    verifier trusts, or issued to another node."""

    check = "asset-tag"


class ObservedAddressInvalid(LocationError):
    """The peer address or a trusted proxy's x-forwarded-for cannot be read.  Refused
    rather than guessed: a wrong guess would place the node at a site it is not at."""

    check = "observed-address"


class SiteTableInvalid(LocationError):
    """The configured CIDR → site table is inconsistent."""

    check = "site-table"


# --- asset tags ----------------------------------------------------------------------


def validate_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """A copy of `attributes` once every key is `[a-z0-9][a-z0-9._-]{0,62}`, every value
    a non-empty printable string of at most 128 characters, and there are at most 32.
    Keys are names policy reads (`input.location.attested.attributes.region`), so they
    are kept to characters Rego and JSON Pointer need no escaping for."""
    if not isinstance(attributes, Mapping):
        raise AssetTagInvalid("attributes must be an object of strings")
    if len(attributes) > MAX_ATTRIBUTES:
        raise AssetTagInvalid(f"{len(attributes)} attributes; at most {MAX_ATTRIBUTES}")
    checked: dict[str, str] = {}
    for key, value in attributes.items():
        if not isinstance(key, str) or not _ATTRIBUTE_KEY.fullmatch(key):
            raise AssetTagInvalid(f"attribute name {key!r} is not [a-z0-9][a-z0-9._-]{{0,62}}")
        if not isinstance(value, str) or not value or not value.isprintable():
            raise AssetTagInvalid(f"attribute {key}: value {value!r} is not printable text")
        if len(value) > MAX_VALUE_CHARS:
            raise AssetTagInvalid(f"attribute {key}: value is {len(value)} characters, over 128")
        checked[key] = value
    return checked


@dataclass(frozen=True, slots=True)
class AssetTag:
    """A verified asset tag: issued by this verifier to `node_id`."""

    node_id: str
    attributes: Mapping[str, str]
    issued_at: datetime
    serial: int
    token: str

    def to_json(self) -> dict[str, object]:
        return {"attributes": dict(self.attributes), "issued_at": rfc3339(self.issued_at)}


def issue_asset_tag(
    node_id: str, attributes: Mapping[str, str], key: SigningKey, now: datetime, serial: int
) -> str:
    """The signed tag document for `node_id`; `serial` counts the node's tags, so a
    node's log shows which assignment it measured."""
    if not node_id:
        raise AssetTagInvalid("an asset tag needs a node id")
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now.isoformat()}; use UTC")
    if serial < 0:
        raise AssetTagInvalid(f"serial {serial} is negative")
    payload = {
        "sub": node_id,
        "attributes": validate_attributes(attributes),
        "iat": int(now.timestamp()),
        "serial": serial,
    }
    # Sorted and compact: the same assignment always gives the same bytes to measure.
    document = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return sign_jws(document.encode("ascii"), key, ASSET_TAG_TYP)


def verify_asset_tag(
    token: str, keys: Mapping[str, ec.EllipticCurvePublicKey], node_id: str
) -> AssetTag:
    """The tag, once its JWS verifies under one of `keys` (kid → key, current and
    retired signing keys) with typ lightgate-asset-tag+jwt, its payload is exactly
    {sub, attributes, iat, serial} and `sub` is `node_id`.  AssetTagInvalid otherwise."""
    try:
        verified = verify_jws(token, keys, typ=ASSET_TAG_TYP)
    except JwsInvalid as exc:
        raise AssetTagInvalid(f"asset tag: {exc.message}", node_id=node_id) from None
    try:
        payload = json.loads(verified.payload)
    except (ValueError, UnicodeDecodeError):
        raise AssetTagInvalid("asset tag payload is not JSON", node_id=node_id) from None
    if not isinstance(payload, dict) or set(payload) != _PAYLOAD_MEMBERS:
        members = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise AssetTagInvalid(
            f"asset tag payload has {members}, not {sorted(_PAYLOAD_MEMBERS)}", node_id=node_id
        )
    subject, iat, serial = payload["sub"], payload["iat"], payload["serial"]
    if subject != node_id:
        # A tag is as good as the node it names: one copied from another node's state
        # directory verifies, so the subject is what binds it here.
        raise AssetTagInvalid(f"asset tag was issued to node {subject!r}", node_id=node_id)
    if not _is_uint(iat) or not _is_uint(serial):
        raise AssetTagInvalid(
            f"asset tag iat {iat!r} / serial {serial!r} are not whole numbers", node_id=node_id
        )
    try:
        attributes = validate_attributes(payload["attributes"])
        issued_at = datetime.fromtimestamp(iat, UTC)
    except AssetTagInvalid as exc:
        raise AssetTagInvalid(exc.message, node_id=node_id) from None
    except (OverflowError, OSError, ValueError):
        raise AssetTagInvalid(f"asset tag iat {iat} is not a time", node_id=node_id) from None
    return AssetTag(node_id, attributes, issued_at, serial, token)


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- observed location ---------------------------------------------------------------


def join_metadata(pairs: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
    """gRPC invocation metadata as one string per key.  A key sent more than once is
    joined with ", " in order, as HTTP joins repeated header fields (RFC 9110, 5.3), so
    a second x-forwarded-for cannot hide behind the first.  Binary (-bin) values are
    left out."""
    joined: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(value, str):
            continue
        name = key.lower()
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined


def parse_networks(cidrs: Iterable[str]) -> tuple[IpNetwork, ...]:
    """Configured networks (trusted proxies); host bits set are refused, not masked."""
    networks: list[IpNetwork] = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=True))
        except ValueError as exc:
            raise SiteTableInvalid(f"network {cidr!r}: {exc}") from None
    return tuple(networks)


def peer_address(
    peer: str, metadata: Mapping[str, str], trusted_proxies: Sequence[IpNetwork]
) -> IpAddress | None:
    """The address an attestation came from.

    `peer` is gRPC's `context.peer()`: "ipv4:10.0.0.5:40000", "ipv6:[::1]:5000" (gRPC
    percent-encodes the brackets: "ipv6:%5B::1%5D:5000") or "unix:..." (no network
    address: None).  When the direct peer is one of `trusted_proxies`, the right-most
    x-forwarded-for address that is not itself a trusted proxy is the client (each
    proxy appends the address it saw, so everything left of the last untrusted hop may
    be forged by the client).  From any other peer the header is ignored.
    """
    direct = _parse_peer(peer)
    if direct is None or not _within(direct, trusted_proxies):
        return direct
    header = metadata.get(FORWARDED_FOR)
    if header is None:
        return direct  # the proxy itself connected, for no one else
    hops = [_parse_forwarded_hop(hop, header) for hop in header.split(",")]
    if len(hops) > MAX_FORWARDED_HOPS:
        raise ObservedAddressInvalid(f"x-forwarded-for has {len(hops)} hops; at most 32")
    for hop in reversed(hops):
        if not _within(hop, trusted_proxies):
            return hop
    return hops[0]  # every hop is a trusted proxy: the first one is where it began


def _parse_peer(peer: str) -> IpAddress | None:
    scheme, _, rest = peer.partition(":")
    if scheme in ("unix", "unix-abstract"):
        return None
    rest = urllib.parse.unquote(rest)
    if scheme == "ipv4":
        host, _, port = rest.rpartition(":")
    elif scheme == "ipv6" and rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port.removeprefix(":")
    else:
        raise ObservedAddressInvalid(f"gRPC peer {peer!r} is not ipv4:, ipv6: or unix:")
    if not port.isdigit():
        raise ObservedAddressInvalid(f"gRPC peer {peer!r} has no port")
    return _address(host.partition("%")[0], f"gRPC peer {peer!r}")


def _parse_forwarded_hop(hop: str, header: str) -> IpAddress:
    text = hop.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return _address(text, f"x-forwarded-for {header!r}")


def _address(text: str, where: str) -> IpAddress:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ObservedAddressInvalid(f"{where}: {text!r} is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; sites are IPv4 CIDRs.
        return address.ipv4_mapped
    return address


def _within(address: IpAddress, networks: Sequence[IpNetwork]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


class SiteRuleLike(Protocol):
    """`lightgate.config.SiteRule`, as this module reads it."""

    @property
    def cidr(self) -> str: ...
    @property
    def site(self) -> str: ...
    @property
    def attributes(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SiteTable:
    """CIDR → site, most specific network first.  A lookup tries each prefix length the
    table has, longest first: a dictionary probe per length, not a scan of every rule."""

    by_prefix: Mapping[tuple[int, int], Mapping[IpNetwork, Site]]  # (version, prefix)

    @classmethod
    def from_rules(cls, rules: Iterable[SiteRuleLike]) -> SiteTable:
        table: dict[tuple[int, int], dict[IpNetwork, Site]] = {}
        for rule in rules:
            (network,) = parse_networks([rule.cidr])
            if not rule.site:
                raise SiteTableInvalid(f"network {rule.cidr}: the site has no name")
            try:
                site = Site(rule.site, validate_attributes(rule.attributes))
            except AssetTagInvalid as exc:
                raise SiteTableInvalid(f"site {rule.site}: {exc.message}") from None
            slot = table.setdefault((network.version, network.prefixlen), {})
            if network in slot and slot[network] != site:
                raise SiteTableInvalid(
                    f"network {network} is mapped to both {slot[network].name} and {site.name}"
                )
            slot[network] = site
        ordered = dict(sorted(table.items(), key=lambda item: -item[0][1]))
        return cls(ordered)

    def site_of(self, address: IpAddress) -> Site | None:
        for (version, prefix), networks in self.by_prefix.items():
            if version != address.version:
                continue
            site = networks.get(ipaddress.ip_network((address, prefix), strict=False))
            if site is not None:
                return site
        return None


@dataclass(frozen=True, slots=True)
class ObservedLocation:
    """Where the verifier saw the attestation come from; None when it had no network
    address (a Unix socket) or the address is in no configured site."""

    address: IpAddress | None
    site: Site | None

    def to_json(self) -> dict[str, object]:
        return {
            "address": None if self.address is None else str(self.address),
            "site": None if self.site is None else self.site.name,
            "attributes": None if self.site is None else dict(self.site.attributes),
        }


def observe(
    peer: str,
    metadata: Mapping[str, str],
    trusted_proxies: Sequence[IpNetwork],
    sites: SiteTable,
) -> ObservedLocation:
    """peer_address, then site_of."""
    address = peer_address(peer, metadata, trusted_proxies)
    return ObservedLocation(address, None if address is None else sites.site_of(address))


def location_input(
    assigned: Mapping[str, str] | None,
    attested: AssetTag | None,
    attested_error: str | None,
    observed: ObservedLocation,
) -> dict[str, object]:
    """The `location` object of the policy input (contract: /tmp/spec5.md, "Policy input").

    `assigned` is the attribute set the operator has set now (None: none); `attested` the
    tag the runtime log proves and `verify_asset_tag` accepted, or None with
    `attested_error` saying why there is none to use (no tag measured, bad signature,
    another node's tag, runtime log refused)."""
    return {
        "assigned": None if assigned is None else dict(assigned),
        "attested": None if attested is None else attested.to_json(),
        "attested_error": attested_error,
        "observed": observed.to_json(),
    }
