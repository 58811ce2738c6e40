#!/usr/bin/env bash
# Installs what xp2p needs on a fresh Debian/Ubuntu machine: FFmpeg's tools (ffprobe/ffplay,
# used by tests and to watch), coturn (the TURN relay the tests start), the network tools the
# NAT lab builds its routers with (iproute2, iptables, conntrack, ethtool; libnetfilter-queue
# for its user-space delay), Chromium and npm (the browser tests, the JS SDK in web/),
# PostgreSQL (the registry's tests start their own server) and a virtualenv in .venv with
# xp2p and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffprobe >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v turnserver >/dev/null 2>&1 || need_apt+=(coturn)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
command -v conntrack >/dev/null 2>&1 || need_apt+=(conntrack)
command -v ethtool >/dev/null 2>&1 || need_apt+=(ethtool)
[ -e /usr/include/libnetfilter_queue/libnetfilter_queue.h ] || need_apt+=(libnetfilter-queue-dev)
# Debian's Chromium for the browser tests (tests/browser); node/npm for the JS SDK in web/.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
# A real PostgreSQL server for the registry's tests (tests/support/postgres.py starts its own).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
if ((${#need_apt[@]})); then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    echo "setup: installing ${need_apt[*]} with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
# The JS SDK's tools (typescript, playwright-core, mpegts.js), pinned by web/package-lock.json.
# Playwright must never fetch a browser of its own: the tests drive Debian's /usr/bin/chromium.
lock_sum="$(sha256sum web/package-lock.json | cut -d' ' -f1)"
if [ "$(cat web/node_modules/.xp2p-lock 2>/dev/null)" != "$lock_sum" ]; then
    echo "setup: npm ci in web/"
    (cd web && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$lock_sum" >web/node_modules/.xp2p-lock
fi
echo "setup: done ($(.venv/bin/xp2p --version))"
