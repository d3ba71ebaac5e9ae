"""Golden values: the claims a known-good boot makes, and the comparison with them.

A golden-values document is readable YAML:

    kind: lightgate/golden-values
    version: 1
    name: debian12-ovmf
    provenance: {source: "eventlog:good.bin sha256:…", created: "…", author: "…",
                 valid-until: "2027-05-26T00:00:00+00:00"}      # optional
    reference:
      boot-chain.kernel: ["sha256:…"]          # allowed alternatives
      secure-boot.enabled: [true]
      secure-boot.db: [["<fingerprint>", …]]   # a set-valued claim: each alternative a list
      kernel.cmdline: ["root=/dev/vda2 ro quiet"]

Each reference name is a claim name of `verifier.evidence.claim_names.flatten`, and lists the
values that are acceptable.  A claim the document does not name is not judged (delete a
line to stop caring); a named claim the log does not make is a deviation (closed).  A
node matches a set of documents when one document has no deviation; otherwise the
deviations of the closest document are reported, each by claim name.  A document past
its `valid-until` (ISO 8601, in the provenance so that it travels inside a signed CoRIM)
is not used: an expired reference value vouches for nothing.

Names under `images.` are not boot claims but the container-image allow-list
(`verifier.golden.images`), kept in the same documents so that they import, export (as
CoRIM), expire and diff the same way:

      images.allowed: ["sha256:…"]                          # these manifests, any name
      images.repository.docker.io/library/busybox: ["sha256:…"]   # this repository: these

Boot comparison ignores them, and a document that names only images matches no boot.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import yaml

from lightgate.errors import Refusal
from verifier.evidence.claim_names import ClaimValue, flatten
from verifier.evidence.claim_types import BootClaims
from verifier.evidence.images import DIGEST, repository_of

KIND: Final = "lightgate/golden-values"
VALID_UNTIL: Final = "valid-until"
VERSION: Final = 1
#: Reference names of the image allow-list (`verifier.golden.images`).
IMAGES_PREFIX: Final = "images."
IMAGES_ALLOWED: Final = "images.allowed"
IMAGES_REPOSITORY: Final = "images.repository."


class GoldenValuesInvalid(Refusal):
    """A golden-values document does not hold to the format."""

    check = "golden-values-invalid"


@dataclass(frozen=True, slots=True)
class GoldenValues:
    name: str
    reference: Mapping[str, tuple[ClaimValue, ...]]
    provenance: Mapping[str, str] = field(default_factory=dict)
    # Computed once when made: every attestation compares against them.
    _digest: bytes = field(default=b"", init=False, repr=False, compare=False)
    _valid_until: datetime | None = field(default=None, init=False, repr=False, compare=False)
    _judges_boot: bool = field(default=False, init=False, repr=False, compare=False)

    def to_document(self) -> dict[str, object]:
        return {
            "kind": KIND,
            "version": VERSION,
            "name": self.name,
            "provenance": dict(self.provenance),
            "reference": {
                claim: [_plain(value) for value in alternatives]
                for claim, alternatives in sorted(self.reference.items())
            },
        }

    def __post_init__(self) -> None:
        # A bad date is refused when the values are made.
        text = self.provenance.get(VALID_UNTIL)
        object.__setattr__(self, "_valid_until", None if text is None else _instant(text))
        reference = self.to_document()["reference"]
        canonical = json.dumps(reference, sort_keys=True, separators=(",", ":"))
        object.__setattr__(self, "_digest", hashlib.sha256(canonical.encode()).digest())
        judges_boot = any(not is_image_name(claim) for claim in self.reference)
        object.__setattr__(self, "_judges_boot", judges_boot)

    @property
    def valid_until(self) -> datetime | None:
        return self._valid_until

    def expired(self, now: datetime) -> bool:
        """Past `valid-until` at `now` (a naive `now` is taken as UTC)."""
        until = self.valid_until
        moment = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
        return until is not None and moment >= until

    @property
    def judges_boot(self) -> bool:
        """Names at least one boot claim (not only images)."""
        return self._judges_boot

    @property
    def digest(self) -> bytes:
        """SHA-256 of the canonical JSON of the reference (provenance excluded: the same
        values learned twice are the same golden values)."""
        return self._digest


@dataclass(frozen=True, slots=True)
class Deviation:
    """A claim that differs from every alternative the golden values allow."""

    claim: str
    actual: ClaimValue | None  # None: the log does not make this claim
    allowed: tuple[ClaimValue, ...]

    def describe(self) -> str:
        if self.actual is None:
            return f"{self.claim}: not measured (golden: {_short(self.allowed[0])})"
        if isinstance(self.actual, tuple):
            return f"{self.claim}: " + _set_difference(self.actual, self.allowed)
        allowed = ", ".join(_short(v) for v in self.allowed)
        return f"{self.claim}: {_short(self.actual)} is not among the golden values ({allowed})"


def _set_difference(actual: tuple[str, ...], allowed: tuple[ClaimValue, ...]) -> str:
    """What a list-valued claim lacks and adds, against its closest allowed list."""
    lists = [a for a in allowed if isinstance(a, tuple)]
    closest = min(lists, key=lambda a: len(set(a) ^ set(actual)), default=())
    missing = [v for v in closest if v not in actual]
    extra = [v for v in actual if v not in closest]
    parts = []
    if missing:
        parts.append("missing " + ", ".join(_short(v) for v in missing))
    if extra:
        parts.append("unexpected " + ", ".join(_short(v) for v in extra))
    return "; ".join(parts) or "the same entries in another order"


@dataclass(frozen=True, slots=True)
class GoldenOutcome:
    """The result of comparing claims with a set of golden-values documents."""

    matched: str | None  # the name of the document the claims match
    closest: str | None
    deviations: tuple[Deviation, ...]


def learn(
    claims: Iterable[BootClaims], name: str, provenance: Mapping[str, str] | None = None
) -> GoldenValues:
    """Golden values that accept every given boot: one alternative per distinct value."""
    reference: dict[str, list[ClaimValue]] = {}
    for boot in claims:
        for claim, value in flatten(boot).items():
            alternatives = reference.setdefault(claim, [])
            if value not in alternatives:
                alternatives.append(value)
    if not reference:
        raise GoldenValuesInvalid("no claims to learn from")
    return GoldenValues(name, {k: tuple(v) for k, v in reference.items()}, dict(provenance or {}))


def compare(claims: Mapping[str, ClaimValue], golden: GoldenValues) -> tuple[Deviation, ...]:
    """Every claim the golden values name whose value is not an allowed alternative."""
    deviations = []
    for claim, allowed in sorted(golden.reference.items()):
        if is_image_name(claim):
            continue  # the image allow-list is appraised on its own (golden.images)
        actual = claims.get(claim)
        if actual is None or actual not in allowed:
            deviations.append(Deviation(claim, actual, allowed))
    return tuple(deviations)


def appraise(claims: BootClaims, documents: Sequence[GoldenValues]) -> GoldenOutcome:
    """Match `claims` against the documents that judge boots; closed: no document, no
    match."""
    documents = [g for g in documents if g.judges_boot]
    if not documents:
        return GoldenOutcome(None, None, ())
    flat = flatten(claims)
    results = [(compare(flat, g), g.name) for g in documents]
    deviations, closest = min(results, key=lambda r: (len(r[0]), r[1]))
    return GoldenOutcome(closest if not deviations else None, closest, deviations)


@dataclass(frozen=True, slots=True)
class DiffLine:
    claim: str
    removed: tuple[ClaimValue, ...]  # alternatives in A, not in B
    added: tuple[ClaimValue, ...]  # alternatives in B, not in A

    def describe(self) -> str:
        lines = [f"{self.claim}:"]
        lines += [f"  - {_short(v, 200)}" for v in self.removed]
        lines += [f"  + {_short(v, 200)}" for v in self.added]
        return "\n".join(lines)


def diff(a: GoldenValues, b: GoldenValues) -> tuple[DiffLine, ...]:
    """What changed from A to B, claim by claim (claims only one side names included)."""
    lines = []
    for claim in sorted(set(a.reference) | set(b.reference)):
        old, new = a.reference.get(claim, ()), b.reference.get(claim, ())
        removed = tuple(v for v in old if v not in new)
        added = tuple(v for v in new if v not in old)
        if removed or added:
            lines.append(DiffLine(claim, removed, added))
    return tuple(lines)


# Documents: YAML text in and out (the caller reads and writes files).


def to_yaml(golden: GoldenValues) -> str:
    return yaml.safe_dump(golden.to_document(), sort_keys=False, width=100, allow_unicode=True)


def from_yaml(text: str) -> GoldenValues:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GoldenValuesInvalid(f"not YAML: {exc}") from None
    return from_document(document)


def from_document(document: object) -> GoldenValues:
    """Validate and read a document; raises GoldenValuesInvalid naming what is wrong."""
    if not isinstance(document, dict):
        raise GoldenValuesInvalid("a golden-values document is a mapping")
    if document.get("kind") != KIND:
        raise GoldenValuesInvalid(f"kind must be {KIND!r}, not {document.get('kind')!r}")
    if document.get("version") != VERSION:
        raise GoldenValuesInvalid(f"version {document.get('version')!r} is not {VERSION}")
    name = document.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 128:
        raise GoldenValuesInvalid("name must be a string of 1-128 characters")
    provenance = document.get("provenance") or {}
    if not isinstance(provenance, dict):
        raise GoldenValuesInvalid("provenance must be a mapping")
    reference = document.get("reference")
    if not isinstance(reference, dict) or not reference:
        raise GoldenValuesInvalid("reference must be a non-empty mapping of claim names")
    checked = {}
    for claim, values in reference.items():
        alternatives = _alternatives(str(claim), values)
        if is_image_name(str(claim)):
            _check_image_entry(str(claim), alternatives)
        checked[str(claim)] = alternatives
    return GoldenValues(name, checked, {str(k): str(v) for k, v in provenance.items()})


def is_image_name(claim: str) -> bool:
    return claim.startswith(IMAGES_PREFIX)


def _check_image_entry(claim: str, alternatives: tuple[ClaimValue, ...]) -> None:
    """An allow-list entry: `images.allowed` or `images.repository.<normalised
    repository>`, each listing manifest digests."""
    if claim != IMAGES_ALLOWED:
        repository = claim.removeprefix(IMAGES_REPOSITORY)
        if not claim.startswith(IMAGES_REPOSITORY) or not repository:
            raise GoldenValuesInvalid(
                f"{claim}: image entries are {IMAGES_ALLOWED} or {IMAGES_REPOSITORY}<repository>"
            )
        if repository_of(repository) != repository or "@" in repository:
            raise GoldenValuesInvalid(
                f"{claim}: write the repository as {repository_of(repository)!r} (normalised, "
                "without tag or digest)"
            )
    for value in alternatives:
        if not isinstance(value, str) or not DIGEST.fullmatch(value):
            raise GoldenValuesInvalid(f"{claim}: {value!r} is not a sha256:<64 hex> digest")


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise GoldenValuesInvalid(f"{VALID_UNTIL} {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise GoldenValuesInvalid(f"{VALID_UNTIL} {text!r} needs a time zone")
    return moment


def _alternatives(claim: str, values: object) -> tuple[ClaimValue, ...]:
    if not isinstance(values, list) or not values:
        raise GoldenValuesInvalid(f"{claim}: a non-empty list of allowed values is needed")
    return tuple(_value(claim, v) for v in values)


def _value(claim: str, value: object) -> ClaimValue:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise GoldenValuesInvalid(f"{claim}: {value!r} is not a string, boolean or list of strings")


def _plain(value: ClaimValue) -> object:
    return list(value) if isinstance(value, tuple) else value


def _short(value: ClaimValue, limit: int = 80) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_short(v, 24) for v in value) + "]"
    text = json.dumps(value) if isinstance(value, bool) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
