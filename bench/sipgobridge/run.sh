#!/usr/bin/env bash
# bench/sipgobridge/run.sh: the figures of docs/sipgo.md. Builds the
# benchmark twice — against sipgo as go.mod has it, and against a copy of
# that sipgo with sipgo-handlemessage.patch applied (one exported method,
# TransportLayer.HandleMessage) — and measures the modes sipws, sipgo,
# bridge and patched. Knobs: N (2000 idle connections), C (50), D (5s),
# ROUNDS (3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

N=${N:-2000} C=${C:-50} D=${D:-5s} ROUNDS=${ROUNDS:-3}
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT

dir=$(go list -m -f '{{.Dir}}' github.com/emiago/sipgo)
cp -r "$dir" "$tmp/sipgo"
chmod -R u+w "$tmp/sipgo"
patch -d "$tmp/sipgo" -p1 <bench/sipgobridge/sipgo-handlemessage.patch
cp go.mod "$tmp/go.mod"
cp go.sum "$tmp/go.sum"
go mod edit -modfile="$tmp/go.mod" -replace "github.com/emiago/sipgo=$tmp/sipgo"

go build -o "$tmp/bench" ./bench/sipgobridge
go build -modfile="$tmp/go.mod" -tags sipgopatched -o "$tmp/bench-patched" ./bench/sipgobridge

go list -m github.com/emiago/sipgo
for r in $(seq "$ROUNDS"); do
	echo "round $r"
	"$tmp/bench" -n "$N" -c "$C" -d "$D" -modes sipws,sipgo,bridge
	"$tmp/bench-patched" -n "$N" -c "$C" -d "$D" -modes patched | tail -n 1
done
