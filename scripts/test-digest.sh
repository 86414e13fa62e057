#!/usr/bin/env bash
# scripts/test-digest.sh LOG: the digest of a failed `go test` run, printed
# last so that a log cut to its tail still says what failed: the failing
# tests and packages, each panic, the tests a timeout caught running, and the
# goroutines of this module that were waiting (a hang's culprits), the
# longest waits first, at most 12 of them.
set -euo pipefail
log=$1

printf '\n==> digest of the failed go test run (full output above)\n'
echo '--- failures:'
grep -E '^(--- FAIL|FAIL)|^panic:|^\.?\.?/[^ ]+\.go:[0-9]+:[0-9]+: |^\s+[a-zA-Z0-9_.]+_test\.go:[0-9]+: ' "$log" | head -60 || true
if grep -q 'running tests:' "$log"; then
	echo '--- running when the test binary timed out:'
	grep -A8 'running tests:' "$log" | grep -E 'running tests:|^\s+(Test|Example|Fuzz|Benchmark)' | head -20 || true
fi
# Goroutine blocks are separated by blank lines. Keep those with a frame of
# this module's code (the testing package's own have none), the longest
# waits first ("[chan receive, 14 minutes]"), each cut to 30 lines.
echo '--- goroutines of github.com/sipws/sipws in the dump, longest waits first:'
awk -v RS='' '
	/^goroutine [0-9]+ \[/ && /\ngithub\.com\/sipws\/sipws/ {
		wait = 0
		if (match($0, /, [0-9]+ minutes\]/)) {
			wait = substr($0, RSTART + 2, RLENGTH - 2) + 0
		}
		n = split($0, lines, "\n")
		out = ""
		for (i = 1; i <= n && i <= 30; i++) out = out lines[i] "\n"
		gsub(/\n/, "\001", out)
		printf "%06d\t%s\n", wait, out
	}
' "$log" | sort -r -s -k1,1 | head -12 | cut -f2- | tr '\001' '\n' || true
