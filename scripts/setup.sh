#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian 12 machine (as root): the Debian packages ctguard's tests and lab use,
# then a virtualenv with ctguard and its Python dependencies. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  nftables iptables conntrack iproute2 procps util-linux uuid-runtime iputils-ping tmux openssl
  ceph-mon ceph-mgr ceph-osd ceph-common
  prometheus
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: needs root to install: ${missing[*]}" >&2
    exit 3
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian prometheus package starts its own service where systemd runs; ctguard's tests start their own.
fi

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.ctguard-installed"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
