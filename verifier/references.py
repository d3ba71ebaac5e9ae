"""What operators set, as this verifier replica sees it: golden values, asset tags, the
appraisal policy and the result-signing keys.

Each is read from the store and re-read every few seconds, so a change made through
another replica arrives within that; a change made through this replica is seen at once
(`refresh`).  The policy engine is rebuilt only when the bundle in force changes, so
its decision memo survives refreshes.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from lightgate.config import PolicyConfig, VerifierConfig
from verifier.golden.values import GoldenValues, from_document
from verifier.keyring import KeyRing, SigningKeyExists, StoredSigningKey, ensure_key
from verifier.policy import (
    EmbeddedEngine,
    MemoisedEngine,
    PolicyBundle,
    PolicyEngine,
    RemoteEngine,
    default_policy_dir,
    load_bundle,
)
from verifier.policy.bundle import bundle_from_files
from verifier.store import AssetTagRecord, SigningKeyRecord, Store

log = logging.getLogger("lightgate.verifier")

REFRESH_SECONDS = 5.0


class StoreKeys:
    """The store as the key ring's KeyStore."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def signing_keys(self) -> list[StoredSigningKey]:
        return [
            StoredSigningKey(k.kid, k.private_pem, k.created_at, k.retired_at)
            for k in self._store.signing_keys()
        ]

    def add_signing_key(self, key: StoredSigningKey) -> None:
        record = SigningKeyRecord(key.kid, key.private_pem, key.created_at, key.retired_at)
        if not self._store.add_signing_key(record):
            raise SigningKeyExists(key.kid)

    def retire_signing_keys(self, except_kid: str, at: datetime) -> None:
        self._store.retire_signing_keys(except_kid, at)


@dataclass(frozen=True)
class Snapshot:
    """Everything operators set, as read at one moment: an attestation appraises
    against one snapshot, taken before its store transaction opens (reading, and on a
    fresh store creating the signing key, must not wait on that transaction's lock)."""

    golden: tuple[GoldenValues, ...]
    tags: dict[str, AssetTagRecord]
    keys: KeyRing
    policy: MemoisedEngine
    policy_source: str

    def asset_tag(self, node_id: str) -> AssetTagRecord | None:
        return self.tags.get(node_id)


class References:
    """Golden values, asset tags, policy and keys; safe to share between threads."""

    def __init__(self, store: Store, config: VerifierConfig, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._config = config
        self._now = clock
        self._grace = timedelta(seconds=config.results.retired_key_grace_seconds)
        self._lock = threading.Lock()
        self._snapshot = self._load(None)
        # Read again at first use: what was imported between start and the first
        # attestation (a fresh verifier's first golden values) counts at once.
        self._read_at = float("-inf")

    @property
    def golden(self) -> tuple[GoldenValues, ...]:
        return self._current().golden

    def asset_tag(self, node_id: str) -> AssetTagRecord | None:
        return self._current().tags.get(node_id)

    @property
    def keys(self) -> KeyRing:
        return self._current().keys

    @property
    def policy(self) -> MemoisedEngine:
        return self._current().policy

    @property
    def policy_source(self) -> str:
        return self._current().policy_source

    def snapshot(self) -> Snapshot:
        """What is in force now (re-read first when the last read is stale)."""
        return self._current()

    def refresh(self) -> None:
        """Re-read everything now (after this replica's own change)."""
        with self._lock:
            self._snapshot = self._load(self._snapshot)
            self._read_at = time.monotonic()

    def _current(self) -> Snapshot:
        if time.monotonic() - self._read_at >= REFRESH_SECONDS:
            with self._lock:
                if time.monotonic() - self._read_at >= REFRESH_SECONDS:
                    self._snapshot = self._load(self._snapshot)
                    self._read_at = time.monotonic()
        return self._snapshot

    def _load(self, previous: Snapshot | None) -> Snapshot:
        store, now = self._store, self._now()
        golden = tuple(from_document(row.document) for row in store.golden_values())
        keys = ensure_key(StoreKeys(store), now, self._grace)
        policy, source = self._policy(previous)
        return Snapshot(golden, store.asset_tags(), keys, policy, source)

    def _policy(self, previous: Snapshot | None) -> tuple[MemoisedEngine, str]:
        config = self._config.policy
        if config.engine == "remote":
            if previous is not None:
                previous.policy.clear()
                return previous.policy, previous.policy_source
            return MemoisedEngine(remote_engine(config), entries=config.decision_cache_entries), (
                f"opa:{config.opa_url}"
            )
        bundle, source = bundle_in_force(config, self._store)
        if previous is not None and previous.policy.bundle_digest == bundle.digest:
            return previous.policy, source
        log.info("appraisal policy loaded", extra={"fields": {"policy": bundle.policy_id}})
        engine = EmbeddedEngine(bundle)
        return MemoisedEngine(engine, entries=config.decision_cache_entries), source


def bundle_in_force(config: PolicyConfig, store: Store) -> tuple[PolicyBundle, str]:
    """The embedded engine's bundle and where it is from: the folder the configuration
    pins, else the bundle an operator set last (`attest policy apply`), else policies/."""
    if config.bundle is not None:
        return load_bundle(config.bundle), f"file:{config.bundle}"
    stored = store.policy_bundle()
    if stored is not None:
        files = {path: text.encode() for path, text in stored.files.items()}
        return bundle_from_files(files), f"set by {stored.set_by} at {stored.set_at}"
    directory: Path = default_policy_dir()
    return load_bundle(directory), f"file:{directory}"


def policy_in_force(config: PolicyConfig, store: Store) -> tuple[PolicyEngine, str]:
    """The engine the verifier appraises with now (unmemoised), and its source."""
    if config.engine == "remote":
        return remote_engine(config), f"opa:{config.opa_url}"
    bundle, source = bundle_in_force(config, store)
    return EmbeddedEngine(bundle), source


def remote_engine(config: PolicyConfig) -> PolicyEngine:
    if not config.opa_url:
        raise ValueError("policy.engine is remote but policy.opa_url is not set")
    # The server's policy is not ours to digest: the URL names it, and the memo is
    # cleared at every refresh, so a policy changed on the server is seen within that.
    return RemoteEngine(
        config.opa_url,
        bundle_digest=hashlib.sha256(config.opa_url.encode()).hexdigest(),
        read_timeout=config.opa_timeout_seconds,
        token=config.opa_token,
    )
