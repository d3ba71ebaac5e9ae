"""`attest node ...` and `attest admin ...`: nodes, their trust over time, and operator
actions through the authenticated Admin API.

Reading (list, history) opens the verifier's store with its configuration; changing
(tag, revoke, restore) goes through the Admin API, which authenticates the operator and
keeps the audit log.  Thin: parse, call, print.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from rich.table import Table

from lightgate.admin_client import (
    AdminClientError,
    AdminCredentials,
    admin_stub,
    call_metadata,
    new_token,
)
from lightgate.cli_common import CliError, ConfigOption, JsonOption, open_store, out
from lightgate.config import VerifierConfig, load_config
from lightgate.wire.v1 import admin_pb2 as pb
from lightgate.wire.v1 import admin_pb2_grpc as pb_grpc

node_app = typer.Typer(no_args_is_help=True, help="Enrolled nodes and their trust.")
admin_app = typer.Typer(no_args_is_help=True, help="Operator credentials and the audit log.")

AdminOption = Annotated[
    str | None,
    typer.Option(
        "--admin", help="Admin API address (default $LIGHTGATE_ADMIN or 127.0.0.1:50052)."
    ),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option("--token-file", help="Operator bearer token (default $LIGHTGATE_ADMIN_TOKEN)."),
]
CaOption = Annotated[
    Path | None, typer.Option("--ca", help="CA of the verifier's TLS certificate.")
]
CertOption = Annotated[Path | None, typer.Option("--cert", help="Operator client certificate.")]
KeyOption = Annotated[Path | None, typer.Option("--key", help="Operator client key.")]


@contextmanager
def admin_call(
    address: str | None,
    token_file: Path | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
) -> Iterator[tuple[pb_grpc.AdminStub, list[tuple[str, str]]]]:
    try:
        credentials = AdminCredentials.resolve(address, token_file, ca, cert, key)
        stub, channel = admin_stub(credentials)
    except AdminClientError as exc:
        raise CliError(str(exc)) from None
    try:
        yield stub, call_metadata(credentials)
    except grpc.RpcError as exc:
        code = exc.code()
        raise CliError(f"{code.name.lower() if code else 'error'}: {exc.details()}") from None
    finally:
        channel.close()


# --- reading ----------------------------------------------------------------------------


@node_app.command("join-token")
def node_join_token(
    config: ConfigOption = None,
    ttl_hours: Annotated[float, typer.Option(help="Hours the token stays valid.")] = 24.0,
    note: Annotated[str, typer.Option(help="Who or what the token is for.")] = "",
) -> None:
    """Create a one-time join token (enrollment mode `join-token`)."""
    from verifier.server import load_trust_store
    from verifier.service import Verifier

    settings = load_config(VerifierConfig, config)
    store = open_store(settings, create=True)
    try:
        token = Verifier(store, settings, load_trust_store(settings)).create_join_token(
            timedelta(hours=ttl_hours), note
        )
    finally:
        store.close()
    out.print(token, highlight=False)


@node_app.command("list")
def node_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Nodes the verifier knows: trust now, until when, why, where, last attestation."""
    settings = load_config(VerifierConfig, config)
    store = open_store(settings)
    try:
        nodes = store.list_nodes()
        tags = store.asset_tags()
    finally:
        store.close()
    now = datetime.now(UTC)
    rows = [
        {
            "node": n.node_id,
            "state": n.state,
            "trust": n.trust_at(now) if n.state == "enrolled" else n.state,
            "since": _iso(n.trust_since),
            "expires_at": _iso(n.trust_expires_at),
            "reason": n.trust_reason_at(now),
            "tag": dict(tags[n.node_id].attributes) if n.node_id in tags else None,
            "site": n.last_site,
            "ek": n.ek_fingerprint,
            "last_status": n.last_status,
            "last_attested_at": _iso(n.last_attested_at),
            "reboots": n.reboots,
        }
        for n in nodes
    ]
    if as_json:
        out.print_json(json.dumps({"nodes": rows}))
        return
    table = Table("node", "trust", "since", "expires", "tag", "site", "last attested", "reason")
    for row in rows:
        tag = row["tag"]
        table.add_row(
            str(row["node"]),
            _styled(str(row["trust"])),
            _short_time(row["since"]),
            _short_time(row["expires_at"]),
            " ".join(f"{k}={v}" for k, v in sorted(tag.items())) if isinstance(tag, dict) else "-",
            str(row["site"] or "-"),
            _short_time(row["last_attested_at"]),
            _clip(str(row["reason"] or "")),
        )
    out.print(table)


@node_app.command("history")
def node_history(
    node: str,
    config: ConfigOption = None,
    since: Annotated[str | None, typer.Option(help="Only since then: 24h, 7d or a time.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (the newest).")] = 1000,
    as_json: JsonOption = False,
) -> None:
    """Every change of a node's trust: when, from what to what, why, by whom."""
    from verifier.store import UnknownNode

    settings = load_config(VerifierConfig, config)
    store = open_store(settings)
    try:
        transitions = store.transitions(node, parse_since(since), limit)
    except UnknownNode:
        raise CliError(f"unknown node {node!r}") from None
    finally:
        store.close()
    rows = [
        {
            "at": t.at.isoformat(),
            "from": t.from_state,
            "to": t.to_state,
            "reason": t.reason,
            "actor": t.actor,
            "evidence_digest": t.evidence_digest.hex() if t.evidence_digest else None,
            "result_id": t.result_id,
        }
        for t in transitions
    ]
    if as_json:
        out.print_json(json.dumps({"node": node, "transitions": rows}))
        return
    table = Table("at", "from", "to", "by", "evidence", "reason", title=f"trust of {node}")
    for row in rows:
        table.add_row(
            _short_time(row["at"]),
            str(row["from"]),
            _styled(str(row["to"])),
            str(row["actor"]),
            str(row["evidence_digest"] or "-")[:16],
            _clip(str(row["reason"])),
        )
    out.print(table)


# --- operator actions -------------------------------------------------------------------


@node_app.command("tag")
def node_tag(
    node: str,
    attributes: Annotated[list[str], typer.Argument(help="KEY=VALUE ... (region=eu-west dc=ams1)")],
    admin: AdminOption = None,
    token_file: TokenFileOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Set a node's asset tag; the verifier signs it and the node measures it."""
    pairs: dict[str, str] = {}
    for item in attributes:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"{item!r} is not KEY=VALUE")
        pairs[name] = value
    with admin_call(admin, token_file, ca, cert, key) as (stub, metadata):
        reply = stub.TagNode(pb.TagNodeRequest(node_id=node, attributes=pairs), metadata=metadata)
    listed = " ".join(f"{k}={v}" for k, v in sorted(pairs.items()))
    out.print(f"tagged {reply.node_id}: {listed}", highlight=False)


@node_app.command("revoke")
def node_revoke(
    node: str,
    reason: Annotated[str, typer.Option(help="Why (kept in the history and the audit log).")],
    admin: AdminOption = None,
    token_file: TokenFileOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Withdraw a node's trust until an operator restores it."""
    with admin_call(admin, token_file, ca, cert, key) as (stub, metadata):
        state = stub.RevokeNode(
            pb.RevokeNodeRequest(node_id=node, reason=reason), metadata=metadata
        )
    out.print(f"{state.node_id}: {state.state} ({state.reason})", highlight=False)


@node_app.command("restore")
def node_restore(
    node: str,
    reason: Annotated[str, typer.Option(help="Why the revocation is lifted.")] = "restored",
    admin: AdminOption = None,
    token_file: TokenFileOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Lift a revocation: the node is trusted again once it attests."""
    with admin_call(admin, token_file, ca, cert, key) as (stub, metadata):
        state = stub.RestoreNode(
            pb.RestoreNodeRequest(node_id=node, reason=reason), metadata=metadata
        )
    out.print(f"{state.node_id}: {state.state}", highlight=False)


@admin_app.command("token")
def admin_token(operator: str) -> None:
    """A new operator bearer token, and the entry for the verifier's admin.tokens."""
    token, digest = new_token()
    out.print(token, highlight=False)
    entry = f"{{operator: {operator}, sha256: {digest}}}"
    out.print(f"# verifier config:\n# admin:\n#   tokens:\n#     - {entry}", highlight=False)


@admin_app.command("rotate-key")
def admin_rotate_key(
    admin: AdminOption = None,
    token_file: TokenFileOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Sign results with a new key from now; the old one stays published for a while."""
    with admin_call(admin, token_file, ca, cert, key) as (stub, metadata):
        reply = stub.RotateSigningKey(pb.RotateSigningKeyRequest(), metadata=metadata)
    out.print(f"signing with {reply.kid}; published: {', '.join(reply.published)}")


@admin_app.command("audit")
def admin_audit(
    admin: AdminOption = None,
    token_file: TokenFileOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    since: Annotated[str | None, typer.Option(help="Only since then: 24h, 7d or a time.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Operator actions: who, when, what."""
    request = pb.AuditLogRequest()
    moment = parse_since(since)
    if moment is not None:
        request.since.FromDatetime(moment)
    with admin_call(admin, token_file, ca, cert, key) as (stub, metadata):
        reply = stub.AuditLog(request, metadata=metadata)
    rows = [
        {
            "at": e.at.ToDatetime(tzinfo=UTC).isoformat(),
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "detail": e.detail,
        }
        for e in reply.entries
    ]
    if as_json:
        out.print_json(json.dumps({"entries": rows}))
        return
    table = Table("at", "actor", "action", "target", "detail", title="audit log")
    for row in rows:
        table.add_row(*(str(row[k]) for k in ("at", "actor", "action", "target", "detail")))
    out.print(table)


# --- helpers ------------------------------------------------------------------------------


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """`24h`, `30m`, `7d` before now, or an ISO 8601 time (UTC when it names no zone)."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip()
    if value and value[-1] in units and value[:-1].replace(".", "", 1).isdigit():
        return (now or datetime.now(UTC)) - timedelta(seconds=float(value[:-1]) * units[value[-1]])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CliError(f"{text!r} is neither a duration (24h, 7d) nor an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _short_time(value: Any) -> str:
    return "-" if not value else str(value)[:19].replace("T", " ")


def _clip(text: str, most: int = 60) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


_COLOURS = {
    "affirming": "green",
    "warning": "yellow",
    "contraindicated": "red",
    "expired": "magenta",
    "revoked": "red",
}


def _styled(state: str) -> str:
    colour = _COLOURS.get(state)
    return f"[{colour}]{state}[/{colour}]" if colour else state
