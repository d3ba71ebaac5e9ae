#!/usr/bin/env bash
# Installs what Lightgate needs on a Debian 12 machine, and only what is missing,
# so that a second run costs a second.  Run as root (CI and these machines are root).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config gcc python3-dev python3-venv
    containerd runc umoci busybox-static podman qemu-system-x86 mtools pesign socat debootstrap)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing apt packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
# Reinstall only when the project's declared dependencies changed.
stamp=.venv/.lightgate-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] \
    || [ requirements/policy-engine.txt -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    # The policy engine by hash first, so the editable install finds it satisfied.
    .venv/bin/pip install -q --no-deps --require-hashes -r requirements/policy-engine.txt
    .venv/bin/pip install -q -e '.[dev]'
    touch "$stamp"
fi
