"""Golden values: named documents, stored and replaced whole."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest

from verifier.store import GoldenValuesRecord, Store

GOOD: dict[str, Any] = {
    "pcrs": {"sha256": {"0": ["00" * 32], "7": ["ab" * 32, "cd" * 32]}},
    "kernel_cmdline": ["ro quiet"],
    "secure_boot": True,
}


def _digest(document: dict[str, Any]) -> bytes:
    # The importer's canonical form; the store only keeps what it is given.
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).digest()


def _put(store: Store, name: str, document: dict[str, Any], now: datetime) -> GoldenValuesRecord:
    return store.put_golden_values(name, document, _digest(document), f"file:{name}.yaml", now)


def test_put_then_get_and_list(store: Store, now: datetime) -> None:
    put = _put(store, "good", GOOD, now)

    assert put == GoldenValuesRecord(
        name="good", document=GOOD, digest=_digest(GOOD), source="file:good.yaml", imported_at=now
    )
    fetched = store.get_golden_values("good")
    assert fetched == put
    assert fetched is not None
    assert type(fetched.digest) is bytes
    assert store.golden_values() == [put]


def test_list_is_ordered_by_name(store: Store, now: datetime) -> None:
    for name in ("rack-3", "good", "lab"):
        _put(store, name, {"name": name}, now)

    assert [record.name for record in store.golden_values()] == ["good", "lab", "rack-3"]


def test_put_replaces_everything_stored_under_the_name(store: Store, now: datetime) -> None:
    _put(store, "good", GOOD, now)
    _put(store, "other", {"kept": True}, now)
    newer = {**GOOD, "secure_boot": False}
    later = now + timedelta(hours=1)

    replaced = store.put_golden_values("good", newer, _digest(newer), "corim:" + "f0" * 32, later)

    assert store.get_golden_values("good") == replaced
    assert (replaced.document, replaced.digest, replaced.source, replaced.imported_at) == (
        newer,
        _digest(newer),
        "corim:" + "f0" * 32,
        later,
    )
    assert [record.name for record in store.golden_values()] == ["good", "other"]


def test_drop(store: Store, now: datetime) -> None:
    _put(store, "good", GOOD, now)

    assert store.drop_golden_values("good") is True
    assert store.drop_golden_values("good") is False
    assert store.get_golden_values("good") is None
    assert store.golden_values() == []


def test_unknown_names(store: Store) -> None:
    assert store.get_golden_values("never-imported") is None
    assert store.drop_golden_values("never-imported") is False
    assert store.golden_values() == []


@pytest.mark.parametrize("name", ["", "x" * 129])
def test_a_name_the_column_cannot_hold_is_refused(store: Store, now: datetime, name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        _put(store, name, GOOD, now)
    assert store.golden_values() == []


def test_concurrent_imports_of_one_name_leave_one_whole_document(
    store: Store, now: datetime
) -> None:
    documents = [{"version": i, "pcrs": {"7": [f"{i:02x}" * 32]}} for i in range(16)]

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda document: _put(store, "good", document, now), documents))

    (stored,) = store.golden_values()
    assert stored.document in documents
    assert stored.digest == _digest(stored.document)
