"""The container-image allow-list and the appraisal of measured images against it.
Pure: no I/O.

The allow-list is the union of the `images.` entries of the golden-values documents in
force (`verifier.golden.values`): an image is allowed when its manifest digest is in
`images.allowed`, or its repository has an `images.repository.<repository>` entry that
lists its digest: a repository entry admits exactly the digests it names, under that
repository's names only, and `images.allowed` admits a digest under any name.  Closed
by default: an image whose digest the
runtime could not resolve, or any image when no document lists images, is not allowed,
and each refusal says which image and why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from verifier.evidence.images import DIGEST, ImageRecord, repository_of
from verifier.golden.values import (
    IMAGES_ALLOWED,
    IMAGES_REPOSITORY,
    KIND,
    VERSION,
    GoldenValues,
    GoldenValuesInvalid,
    from_document,
)


@dataclass(frozen=True, slots=True)
class ImageAllowList:
    """What the golden values in force allow, and which documents said so."""

    digests: frozenset[str] = frozenset()
    repositories: Mapping[str, frozenset[str]] = field(default_factory=dict)
    documents: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.digests and not self.repositories


@dataclass(frozen=True, slots=True)
class ImageVerdict:
    record: ImageRecord
    allowed: bool
    reason: str | None  # why not, naming the image; None when allowed

    def to_json(self) -> dict[str, object]:
        return {**self.record.to_json(), "allowed": self.allowed, "reason": self.reason}


def allow_list(documents: Iterable[GoldenValues]) -> ImageAllowList:
    """The union of the image entries of `documents` (those in force)."""
    digests: set[str] = set()
    repositories: dict[str, set[str]] = {}
    names: list[str] = []
    for golden in documents:
        named = False
        for claim, alternatives in golden.reference.items():
            values = {v for v in alternatives if isinstance(v, str)}
            if claim == IMAGES_ALLOWED:
                digests |= values
                named = True
            elif claim.startswith(IMAGES_REPOSITORY):
                repository = claim.removeprefix(IMAGES_REPOSITORY)
                repositories.setdefault(repository, set()).update(values)
                named = True
        if named:
            names.append(golden.name)
    return ImageAllowList(
        frozenset(digests),
        {repository: frozenset(values) for repository, values in repositories.items()},
        tuple(names),
    )


def judge_image(record: ImageRecord, allowed: ImageAllowList) -> ImageVerdict:
    """Whether the allow-list admits `record`, and if not, why."""
    image = record.describe()
    if record.digest is None:
        why = f"{image}: {record.runtime} could not resolve its digest, so its content is unknown"
        return ImageVerdict(record, False, why)
    if record.digest in allowed.digests:
        return ImageVerdict(record, True, None)
    pinned = allowed.repositories.get(record.repository)
    if pinned is not None and record.digest in pinned:
        return ImageVerdict(record, True, None)
    if allowed.empty:
        why = f"{image}: no golden values list allowed images"
    elif pinned is not None:
        why = f"{image}: not an allowed digest of {record.repository}"
    else:
        why = f"{image}: not on the image allow-list ({', '.join(allowed.documents)})"
    return ImageVerdict(record, False, why)


def appraise_images(
    records: Sequence[ImageRecord], allowed: ImageAllowList
) -> tuple[ImageVerdict, ...]:
    """A verdict per distinct measured image, in the order first measured."""
    return tuple(judge_image(record, allowed) for record in dict.fromkeys(records))


def allow_list_document(
    name: str,
    pins: Sequence[str],
    digests: Sequence[str],
    provenance: Mapping[str, str] | None = None,
) -> GoldenValues:
    """A golden-values document of images only: each pin `reference@sha256:…` allows
    that digest under the reference's repository; each digest is allowed under any name.
    Raises GoldenValuesInvalid naming the entry that is not one."""
    reference: dict[str, list[str]] = {}
    for pin in pins:
        name_part, at, digest = pin.rpartition("@")
        if not at or not name_part or not DIGEST.fullmatch(digest):
            raise GoldenValuesInvalid(f"{pin!r} is not <image reference>@sha256:<64 hex digits>")
        entry = reference.setdefault(IMAGES_REPOSITORY + repository_of(name_part), [])
        if digest not in entry:
            entry.append(digest)
    for digest in digests:
        allowed = reference.setdefault(IMAGES_ALLOWED, [])
        if digest not in allowed:
            allowed.append(digest)
    if not reference:
        raise GoldenValuesInvalid("give at least one image (reference@digest) or digest")
    document = {
        "kind": KIND,
        "version": VERSION,
        "name": name,
        "provenance": dict(provenance or {}),
        "reference": reference,
    }
    return from_document(document)  # the same checks as an imported document
