#!/usr/bin/env bash
# scripts/fuzz.sh: runs every fuzz target for FUZZTIME each (default 15s) and
# fails on the first crash. Seed corpora live in testdata/fuzz/; a crash
# leaves its input there, ready to become a regression seed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FUZZTIME=${FUZZTIME:-15s}
# package:target
targets=(
	.:FuzzHandshake
	.:FuzzReadFrames
	.:FuzzCheckSIP
	.:FuzzCheckMSRP
	.:FuzzFlowParse
	.:FuzzTokenFromURI
	.:FuzzRPCRequest
)
for t in "${targets[@]}"; do
	pkg=${t%%:*} name=${t##*:}
	printf '+ go test -run ^$ -fuzz ^%s$ -fuzztime %s %s\n' "$name" "$FUZZTIME" "$pkg"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1 | grep -v '^fuzz: elapsed' || {
		echo "fuzz target $name failed" >&2
		exit 1
	}
done
