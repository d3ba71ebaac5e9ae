"""A policy bundle: the Rego modules, their tests and the data documents of one folder.

The layout is OPA's bundle layout, so the same folder serves `opa run --bundle` and the
embedded engine: every `*.rego` is a module (`*_test.rego` a test module), and a data
file named `data.json` / `data.yaml` is the document at its folder's path
(`lightgate/data.json` → `data.lightgate`).  Other files (READMEs, sample inputs) are
not part of the bundle.

The digest names what decides: SHA-256 over the sorted (relative path, content) pairs
of the modules and data files.  Tests are left out on purpose: adding a test does not
change any decision, so it must not change the policy id stamped on results nor empty
the decision memo.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import yaml

from verifier.policy.errors import PolicyInvalid

#: What a result's `ear.appraisal-policy-id` says: the package that decides, then the
#: bundle digest that pins its text and data.
POLICY_ID_PREFIX: Final = "policy:lightgate/appraisal@sha256:"
DATA_FILE_NAMES: Final = frozenset({"data.json", "data.yaml", "data.yml"})
TEST_SUFFIX: Final = "_test.rego"
#: Policies are text written by people; anything larger is a mistake or an attack.
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
MAX_FILES: Final = 1024


@dataclass(frozen=True, slots=True)
class RegoModule:
    """One Rego file: its path relative to the bundle root (POSIX) and its text."""

    path: str
    source: str


@dataclass(frozen=True, slots=True)
class PolicyBundle:
    """A loaded policy folder.  `data` is the merged data document; `data_json` is the
    same, canonical, as engines take it."""

    root: Path
    digest: str
    modules: tuple[RegoModule, ...]
    tests: tuple[RegoModule, ...]
    data: Mapping[str, object] = field(repr=False)
    data_json: str = field(repr=False)

    @property
    def policy_id(self) -> str:
        return policy_id_of(self.digest)


#: The root a bundle set through the admin API reports (it has no folder).
STORED_ROOT: Final = Path("<policy set by an operator>")


def policy_id_of(digest: str) -> str:
    """The appraisal-policy id for a bundle digest (hex)."""
    return POLICY_ID_PREFIX + digest[:16]


def default_policy_dir() -> Path:
    """The repository's `policies/`: beside the `verifier` package, which is the
    repository root in an editable install."""
    import verifier

    return Path(verifier.__file__).resolve().parent.parent / "policies"


def load_bundle(root: Path) -> PolicyBundle:
    """Read a policy folder, or raise PolicyInvalid naming the file and the problem.

    Closed by default: a folder without a single (non-test) module is refused, never an
    empty policy that decides nothing.
    """
    if not root.is_dir():
        raise PolicyInvalid(f"{root} is not a policy folder")
    files = {relative: _read(path) for path, relative in _bundle_files(root)}
    return bundle_from_files(files, root)


def read_bundle_files(root: Path) -> dict[str, bytes]:
    """A policy folder's files by relative path, as `attest policy apply` sends them."""
    if not root.is_dir():
        raise PolicyInvalid(f"{root} is not a policy folder")
    return {relative: _read(path) for path, relative in _bundle_files(root)}


def bundle_from_files(files: Mapping[str, bytes], root: Path = STORED_ROOT) -> PolicyBundle:
    """A bundle from its files by relative path (a folder read, or a bundle an operator
    set through the admin API); the digest is the same either way."""
    if len(files) > MAX_FILES:
        raise PolicyInvalid(f"{root} holds {len(files)} policy files (at most {MAX_FILES})")
    modules: list[RegoModule] = []
    tests: list[RegoModule] = []
    data: dict[str, object] = {}
    digest = hashlib.sha256()
    for relative in sorted(files):
        content = files[relative]
        parts = relative.split("/")
        if relative.startswith("/") or any(
            p in ("", ".", "..") or p.startswith(".") for p in parts
        ):
            raise PolicyInvalid(f"{relative!r} is not a relative path inside the bundle")
        if not (relative.endswith(".rego") or parts[-1] in DATA_FILE_NAMES):
            raise PolicyInvalid(f"{relative}: neither a Rego module nor a data document")
        if len(content) > MAX_FILE_BYTES:
            raise PolicyInvalid(f"{relative} is larger than {MAX_FILE_BYTES} bytes")
        if relative.endswith(TEST_SUFFIX):
            tests.append(RegoModule(relative, _text(content, relative)))
            continue
        if relative.endswith(".rego"):
            modules.append(RegoModule(relative, _text(content, relative)))
        else:
            _merge(data, _data_path(relative), _parse_data(content, relative), relative)
        # Length-prefixed, so no two different bundles hash the same byte stream.
        name = relative.encode()
        digest.update(len(name).to_bytes(4, "big") + name)
        digest.update(len(content).to_bytes(8, "big") + content)
    if not modules:
        raise PolicyInvalid(f"{root} holds no Rego modules (closed: no policy, no trust)")
    return PolicyBundle(
        root=root,
        digest=digest.hexdigest(),
        modules=tuple(modules),
        tests=tuple(tests),
        data=data,
        data_json=json.dumps(data, sort_keys=True, separators=(",", ":")),
    )


def _bundle_files(root: Path) -> Iterator[tuple[Path, str]]:
    """The bundle's files in sorted relative-path order; hidden entries are skipped."""
    found: list[tuple[str, Path]] = []
    for path in root.rglob("*"):
        relative = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in relative.split("/")) or not path.is_file():
            continue
        if path.suffix == ".rego" or path.name in DATA_FILE_NAMES:
            found.append((relative, path))
    if len(found) > MAX_FILES:
        raise PolicyInvalid(f"{root} holds {len(found)} policy files (at most {MAX_FILES})")
    for relative, path in sorted(found):
        yield path, relative


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as stream:
            content = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PolicyInvalid(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(content) > MAX_FILE_BYTES:
        raise PolicyInvalid(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    return content


def _text(content: bytes, relative: str) -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyInvalid(f"{relative}: not UTF-8 text ({exc.reason})") from exc


def _parse_data(content: bytes, relative: str) -> object:
    text = _text(content, relative)
    try:
        if relative.endswith(".json"):
            return json.loads(text, parse_constant=_refuse_constant)
        return yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())
        raise PolicyInvalid(f"{relative}: not valid data: {detail}") from exc


def _refuse_constant(name: str) -> object:
    # NaN and Infinity are not JSON; OPA would refuse the file, so we do too.
    raise ValueError(f"{name} is not a JSON value")


def _data_path(relative: str) -> tuple[str, ...]:
    return tuple(relative.split("/")[:-1])


def _merge(data: dict[str, object], at: tuple[str, ...], value: object, relative: str) -> None:
    """Put one data file's document at its folder's path, refusing any overlap: two
    files that set the same key would make the result depend on load order."""
    if not at:
        if not isinstance(value, dict):
            raise PolicyInvalid(f"{relative}: the root data document must be an object")
        for key, item in value.items():
            _merge(data, (str(key),), item, relative)
        return
    node = data
    for key in at[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise PolicyInvalid(f"{relative}: data.{'.'.join(at)} overlaps another data file")
        node = child
    last = at[-1]
    if last not in node:
        node[last] = value
        return
    existing = node[last]
    if not (isinstance(existing, dict) and isinstance(value, dict)):
        raise PolicyInvalid(f"{relative}: data.{'.'.join(at)} is set by another data file")
    for key, item in value.items():
        _merge(data, (*at, str(key)), item, relative)
