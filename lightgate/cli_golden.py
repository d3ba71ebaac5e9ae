"""`attest golden`: golden values for boot claims and container images, for people.

Thin like the rest of the CLI: read files, call the pure modules, print.
"""

from __future__ import annotations

import getpass
import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from lightgate.cli_boot import parse_log_file
from lightgate.cli_common import ConfigOption, JsonOption, err, fail, open_store, out, read_file
from lightgate.cli_node import (
    AdminOption,
    CaOption,
    CertOption,
    KeyOption,
    TokenFileOption,
    admin_call,
)
from lightgate.config import VerifierConfig, load_config
from verifier.store.records import AuditRecord

if TYPE_CHECKING:  # the modules load lazily so `attest --help` stays fast
    from verifier.evidence.claim_types import BootClaims
    from verifier.golden.values import GoldenValues

golden_app = typer.Typer(
    no_args_is_help=True, help="Golden values for boot claims and container images."
)

CORIM_TAG_BYTE = 0xD2  # CBOR tag 18 (COSE_Sign1): what a signed CoRIM starts with


# --- golden ---------------------------------------------------------------------------


@golden_app.command("learn")
def golden_learn(
    name: Annotated[str, typer.Option(help="Name of the golden values.")],
    log: Annotated[
        list[Path] | None, typer.Option("--log", help="A known-good event log (repeatable).")
    ] = None,
    node: Annotated[
        str | None, typer.Option(help="Learn from this node's last affirming evidence.")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here.")] = None,
    author: Annotated[str | None, typer.Option(help="Who vouches for them.")] = None,
    valid_days: Annotated[
        float | None, typer.Option(min=0, help="Days the values stay valid (default: no end).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Golden values from known-good boots, as a readable YAML document.

    A log file is read as the verifier reads it from a quote over its configured PCR
    selection (`-c`; the default selection otherwise).  Several boots learned together
    make one document whose claims each accept any of the boots' values: any mix of
    them passes.  To accept only whole boots, learn each into its own document."""
    from verifier.evidence.claims import extract_claims
    from verifier.evidence.measured_boot import WORKAROUNDS
    from verifier.evidence.tpm_structures import HashAlg
    from verifier.golden.values import learn, to_yaml

    if not log and not node:
        fail("give --log FILE (repeatable) or --node NODE")
    settings = load_config(VerifierConfig, config)
    selection = {
        HashAlg.from_name(bank): pcrs for bank, pcrs in settings.attestation.pcr_selection.items()
    }
    log_pcrs = frozenset(settings.measured_boot.log_pcrs)
    claims: list[BootClaims] = []
    sources: list[str] = []
    for path in log or []:
        parsed = parse_log_file(path)
        claims.append(extract_claims(parsed, selection, log_pcrs))
        sources.append(f"eventlog:{path.name} sha256:{parsed.sha256.hex()}")
        for quirk in (w for w in WORKAROUNDS if w.applies(parsed)):
            err.print(
                f"warning: {path.name} shows the firmware quirk {quirk.name!r} "
                f"({quirk.description}); a quote of this machine needs the workaround, so "
                "learn from the node (--node) to include what the quote proves",
                highlight=False,
            )
    if len(claims) > 1:
        err.print(
            f"warning: {len(claims)} boots learned into one document: any mix of their "
            "claims passes; learn each boot into its own document to accept only whole boots",
            highlight=False,
        )
    if node:
        parsed_claims, source = _node_claims(node, config)
        claims.append(parsed_claims)
        sources.append(source)
    provenance = _provenance("; ".join(sources), "attest golden learn", author, valid_days)
    _write_document(to_yaml(learn(claims, name, provenance)), output)


def _provenance(
    source: str, tool: str, author: str | None, valid_days: float | None
) -> dict[str, str]:
    """Where a new document comes from, who vouches for it, and (optionally) until when."""
    created = datetime.now(UTC).replace(microsecond=0)
    provenance = {
        "source": source,
        "created": created.isoformat(),
        "author": author or f"{getpass.getuser()}@{socket.gethostname()}",
        "tool": tool,
    }
    if valid_days is not None:
        provenance["valid-until"] = (created + timedelta(days=valid_days)).isoformat()
    return provenance


def _write_document(document: str, output: Path | None) -> None:
    """The YAML on stdout, or into `output` with one line saying so."""
    if output is None:
        out.print(document, end="", highlight=False, markup=False, soft_wrap=True)
        return
    output.write_text(document)
    out.print(f"wrote {output}", highlight=False, soft_wrap=True)


def _node_claims(node: str, config: Path | None) -> tuple[BootClaims, str]:
    """Claims of the node's last affirming evidence, whose log its quote vouched for."""
    from verifier.evidence.claims import claims_of
    from verifier.evidence.eventlog import parse_event_log
    from verifier.evidence.measured_boot import verify_event_log
    from verifier.evidence.pcr_values import PcrValues

    settings = load_config(VerifierConfig, config)
    store = open_store(settings)
    try:
        evidence = store.last_evidence(node)
    finally:
        store.close()
    if evidence is None:
        fail(f"node {node} has no affirming attestation to learn from")
    if not evidence.event_log:
        fail(f"node {node}'s last affirming attestation carried no event log")
    log = parse_event_log(evidence.event_log)
    verified = verify_event_log(
        log,
        PcrValues.from_json(evidence.pcr_values).banks,
        log_pcrs=frozenset(settings.measured_boot.log_pcrs),
        node_id=node,
    )
    received = evidence.received_at.isoformat()
    return claims_of(verified), f"node:{node} evidence {evidence.evidence_id} ({received})"


@golden_app.command("images")
def golden_images(
    name: Annotated[str, typer.Option(help="Name of the allow-list document.")],
    image: Annotated[
        list[str] | None,
        typer.Option(
            "--image",
            help="REFERENCE@sha256:DIGEST: allow that manifest under the reference's "
            "repository (repeatable).",
        ),
    ] = None,
    digest: Annotated[
        list[str] | None,
        typer.Option("--digest", help="sha256:DIGEST allowed under any name (repeatable)."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here.")] = None,
    author: Annotated[str | None, typer.Option(help="Who vouches for them.")] = None,
    valid_days: Annotated[
        float | None, typer.Option(min=0, help="Days the values stay valid (default: no end).")
    ] = None,
) -> None:
    """A container-image allow-list, as a golden-values document to import.

    Nodes that start a container from an image it does not allow are not affirming
    (check `images`).  The allow-list in force is the union of every imported
    document's image entries; the entries can also be added to a boot's document."""
    from verifier.golden.images import allow_list_document
    from verifier.golden.values import GoldenValuesInvalid, to_yaml

    provenance = _provenance("attest golden images", "attest golden images", author, valid_days)
    try:
        golden = allow_list_document(name, image or [], digest or [], provenance)
    except GoldenValuesInvalid as exc:
        fail(exc.message)
    _write_document(to_yaml(golden), output)


@golden_app.command("export")
def golden_export(
    path: Annotated[Path, typer.Argument(help="Golden values (YAML).")],
    corim: Annotated[bool, typer.Option("--corim", help="Write a signed CoRIM.")] = False,
    key: Annotated[
        Path | None, typer.Option(help="Signing key (PEM: P-256, P-384 or Ed25519).")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
) -> None:
    """Golden values as a signed CoRIM (CBOR, COSE_Sign1) for other verifiers."""
    from verifier.golden.corim import export_corim, load_signing_key
    from verifier.golden.values import from_yaml

    if not corim:
        fail("only --corim export exists; the YAML is already the readable form")
    if key is None:
        fail("--corim needs --key KEY.pem to sign with")
    golden = from_yaml(read_file(path).decode("utf-8", errors="replace"))
    signed = export_corim(golden, load_signing_key(read_file(key)))
    target = output or path.with_suffix(".corim")
    target.write_bytes(signed)
    out.print(f"wrote {target} ({len(signed)} bytes, signed)", highlight=False)


def _local_operator() -> str:
    """Who acts on the store directly: the Unix account holding its credentials."""
    return f"local:{getpass.getuser()}@{socket.gethostname()}"


def _load_golden(path: Path, trust: list[Path]) -> tuple[GoldenValues, str]:
    """YAML as is, or a CoRIM whose signature verifies under one of `trust` first."""
    from verifier.golden.corim import import_corim, load_trusted_key
    from verifier.golden.values import from_yaml

    raw = read_file(path)
    if raw[:1] == bytes([CORIM_TAG_BYTE]):
        if not trust:
            fail(f"{path} is a signed CoRIM: give --trust KEY.pem (or measured_boot.corim_trust)")
        keys = [load_trusted_key(read_file(p)) for p in trust]
        return import_corim(raw, keys), f"corim:{path.name}"
    return from_yaml(raw.decode("utf-8", errors="replace")), f"file:{path.name}"


TrustOption = Annotated[
    list[Path] | None,
    typer.Option("--trust", help="Public key or certificate (PEM) a CoRIM must be signed by."),
]


@golden_app.command("import")
def golden_import(
    path: Annotated[Path, typer.Argument(help="Golden values: YAML, or a signed CoRIM.")],
    trust: TrustOption = None,
    config: ConfigOption = None,
    admin: AdminOption = None,
    token_file: TokenFileOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Make golden values active: through the Admin API with --admin (the verifier
    checks a CoRIM against its own measured_boot.corim_trust), else in the verifier's
    store directly (a CoRIM's signature first); audited either way."""
    if admin is not None:
        from lightgate.wire.v1 import admin_pb2 as pb

        raw = read_file(path)
        kind = "corim" if raw[:1] == bytes([CORIM_TAG_BYTE]) else "yaml"
        request = pb.ImportGoldenValuesRequest(
            document=raw, format=kind, source=f"{kind}:{path.name}"
        )
        with admin_call(admin, token_file, ca, cert, key) as (stub, metadata):
            reply = stub.ImportGoldenValues(request, metadata=metadata)
        out.print(f"imported golden values {reply.name!r} through {admin}", highlight=False)
        return
    settings = load_config(VerifierConfig, config)
    golden, source = _load_golden(path, list(trust or settings.measured_boot.corim_trust))
    store = open_store(settings, create=True)
    now = datetime.now(UTC)
    try:
        audit = AuditRecord(now, _local_operator(), "golden-import", golden.name, source)
        store.put_golden_values(
            golden.name, golden.to_document(), golden.digest, source, now, audit
        )
    finally:
        store.close()
    out.print(
        f"imported golden values {golden.name!r} ({len(golden.reference)} claims) from {source}",
        highlight=False,
    )


@golden_app.command("list")
def golden_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The active golden values."""

    settings = load_config(VerifierConfig, config)
    store = open_store(settings)
    try:
        rows = store.golden_values()
    finally:
        store.close()
    listed = [
        {
            "name": r.name,
            "claims": len(dict(r.document.get("reference") or {})),
            "digest": r.digest.hex(),
            "source": r.source,
            "imported_at": r.imported_at.isoformat(),
        }
        for r in rows
    ]
    if as_json:
        out.print_json(json.dumps({"golden_values": listed}))
        return
    table = Table("name", "claims", "digest", "source", "imported")
    for row in listed:
        table.add_row(
            str(row["name"]),
            str(row["claims"]),
            str(row["digest"])[:16] + "…",
            str(row["source"]),
            str(row["imported_at"]),
        )
    out.print(table)


@golden_app.command("remove")
def golden_remove(
    name: str,
    config: ConfigOption = None,
    admin: AdminOption = None,
    token_file: TokenFileOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Deactivate golden values by name (through the Admin API with --admin)."""
    if admin is not None:
        from lightgate.wire.v1 import admin_pb2 as pb

        with admin_call(admin, token_file, ca, cert, key) as (stub, metadata):
            request = pb.RemoveGoldenValuesRequest(name=name)
            removed = stub.RemoveGoldenValues(request, metadata=metadata).removed
    else:
        settings = load_config(VerifierConfig, config)
        store = open_store(settings)
        try:
            audit = AuditRecord(datetime.now(UTC), _local_operator(), "golden-remove", name, "")
            removed = store.drop_golden_values(name, audit)
        finally:
            store.close()
    if not removed:
        fail(f"no golden values named {name!r}")
    out.print(f"removed golden values {name!r}", highlight=False)


@golden_app.command("diff")
def golden_diff(
    a: Annotated[Path, typer.Argument(help="Golden values A (YAML or CoRIM).")],
    b: Annotated[Path, typer.Argument(help="Golden values B (YAML or CoRIM).")],
    trust: TrustOption = None,
    as_json: JsonOption = False,
) -> None:
    """What changed from A to B, claim by claim."""
    from verifier.golden.values import diff

    first, _ = _load_golden(a, list(trust or []))
    second, _ = _load_golden(b, list(trust or []))
    lines = diff(first, second)
    if as_json:
        changes = [
            {
                "claim": line.claim,
                "removed": [list(v) if isinstance(v, tuple) else v for v in line.removed],
                "added": [list(v) if isinstance(v, tuple) else v for v in line.added],
            }
            for line in lines
        ]
        out.print_json(json.dumps({"a": first.name, "b": second.name, "changes": changes}))
        return
    if not lines:
        out.print("no differences", highlight=False)
        return
    for line in lines:
        out.print(line.describe(), highlight=False, markup=False)
