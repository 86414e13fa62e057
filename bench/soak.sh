#!/usr/bin/env bash
# The long soak: TestSoak with SOAK (default 60s) of traffic and CONNS
# (default 3000) healthy connections, plus faulty clients (clean closes,
# resets, slow consumers, garbage) all along. Loopback only; bounded.
#   SOAK=60s CONNS=3000 RACE=0 bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 20000
race=()
[ "${RACE:-0}" = 1 ] && race=(-race)
SIPWS_SOAK=${SOAK:-60s} SIPWS_SOAK_CONNS=${CONNS:-3000} \
	go test "${race[@]}" -run '^TestSoak$' -count=1 -timeout 15m -v . 2>&1 | grep -E '^(=== RUN|--- |\s+soak_test.go|PASS|FAIL|ok)'
