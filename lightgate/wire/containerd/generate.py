"""Generate the containerd gRPC stubs in lightgate/wire/containerd/ from proto/containerd/.

Run `.venv/bin/python -m lightgate.wire.containerd.generate`.  The generated files are
committed; tests/integration/test_containerd.py regenerates them into a temporary folder and
fails when they differ.

protoc names modules after the proto paths (`containerd.services.tasks.v1.tasks_pb2`); they
are flattened into `lightgate.wire.containerd` (the five file names are distinct) and their
imports rewritten.  gRPC method paths such as `/containerd.services.tasks.v1.Tasks/List` keep
containerd's package names, which is what makes the calls reach a real containerd.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from lightgate.wire.generate import PROTO_ROOT, run_protoc

OUTPUT = Path(__file__).resolve().parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")

# `containerd.services.tasks.v1.tasks_pb2` -> `lightgate.wire.containerd.tasks_pb2`, in both
# `from ... import` and dotted forms; only module paths end in `_pb2`, so proto package and
# gRPC method names are left alone.
_MODULE_PATH = re.compile(r"\bcontainerd(?:\.\w+)*?\.(\w+_pb2(?:_grpc)?)\b")
_FROM_IMPORT = re.compile(r"^from containerd(?:\.\w+)* import (\w+_pb2)", re.MULTILINE)

# pyproject.toml gives lightgate/wire/v1 `ignore_errors`; these stubs say it themselves: the
# grpc stubs' `type: ignore` comments go unused because grpc is untyped here.
_MYPY_HEADER = "# mypy: ignore-errors\n"


def is_generated(path: Path) -> bool:
    return path.name.endswith(GENERATED_SUFFIXES)


def _rewrite_imports(text: str) -> str:
    text = _FROM_IMPORT.sub(r"from lightgate.wire.containerd import \1", text)
    return _MYPY_HEADER + _MODULE_PATH.sub(r"lightgate.wire.containerd.\1", text)


def generate(output: Path = OUTPUT) -> list[Path]:
    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "containerd").rglob("*.proto")
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_protoc(protos, Path(tmp))
        output.mkdir(parents=True, exist_ok=True)
        written = []
        for source in sorted((Path(tmp) / "containerd").rglob("*")):
            if not source.is_file() or not is_generated(source):
                continue
            target = output / source.name
            target.write_text(_rewrite_imports(source.read_text()))
            written.append(target)
    return written


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT
    if target == OUTPUT:
        for stale in OUTPUT.iterdir():
            if is_generated(stale):
                stale.unlink()
    for path in generate(target):
        print(path)


if __name__ == "__main__":
    main()
