#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then runs the linters, the type checker and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"
ruff check src tests bench
ruff format --check src tests bench
echo "== mypy"
mypy
echo "== tsc (web/)"
(cd web && npx --no-install tsc --noEmit -p .)
echo "== pytest"
pytest "$@"
