#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs `xp2p demo`; extra arguments go to it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/xp2p demo "$@"
