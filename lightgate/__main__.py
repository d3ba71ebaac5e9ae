"""`python -m lightgate` is `attest`."""

from lightgate.cli import main

main()
