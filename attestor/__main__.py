"""`lightgate-agent` (or `python -m attestor`): the agent alone, as systemd runs it.

The `attest` CLI's other commands bring the verifier's store, policy engine and terminal
rendering into memory, which an agent on every node has no use for; `attest agent run`
execs this module.  What the agent itself loads is kept small too (about 28 MB resident
in all): gRPC over `lightgate.wire.channel` (h2) instead of grpcio, TPM commands over
`attestor.tpm2` instead of tpm2-tss, and `lightgate.agent_config` instead of pydantic.
`tests/unit/attestor/test_agent_footprint.py` keeps it that way.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from lightgate import logs
from lightgate.agent_config import ConfigError, load_agent_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lightgate-agent", description="Enroll this node's TPM, then attest it."
    )
    parser.add_argument("--config", "-c", type=Path, default=None, help="agent YAML file")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    args = parser.parse_args(argv)
    logs.configure(args.log_level, identifier="lightgate-attestor")
    try:
        settings = load_agent_config(args.config)
    except ConfigError as exc:
        print(f"lightgate-agent: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    from attestor.agent import run_agent

    run_agent(settings, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
