#!/usr/bin/env bash
# The main job. Until the lab lands: show this host's conntrack table.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/ctguard status --breakdown
