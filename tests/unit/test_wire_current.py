"""The committed gRPC stubs are exactly what the .proto files generate."""

from __future__ import annotations

from pathlib import Path

from lightgate.wire.generate import OUTPUT, generate


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    fresh = {p.name: p.read_text() for p in generate(tmp_path / "v1")}
    committed = {p.name: p.read_text() for p in OUTPUT.iterdir() if p.is_file()}
    assert sorted(fresh) == sorted(committed), "run `make proto` and commit lightgate/wire/v1"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files {stale}: run `make proto` and commit them"
