#!/usr/bin/env bash
# bench/profile.sh: where sipws spends more than bare gobwas/ws. Profiles
# bench/optionsd (sipws) and bench/bareopts (bare) under the same loads as
# bench/run.sh, server on CPU 0 and load generator on CPU 1:
#   cpu   a pprof CPU profile of SECS seconds in the middle of a
#         100-connection rps run (bench/loadgen -mode rps), with the requests
#         answered in the same window, to turn samples into µs per request;
#         the same for a 50-loop handshake run;
#   heap  a heap profile (after a GC) and the runtime's memory statistics with
#         N idle connections open, to turn bytes into bytes per connection.
# Profiles and the pprof tables go to OUT (bench/results/<date>-profile/).
#
#   bench/profile.sh                 # SECS=20 N=10000
#   SECS=10 N=2000 bench/profile.sh
#   SRC=HEAD bench/profile.sh       # sipws as committed, not the work tree
#
# Loopback only; every wait is bounded; every process started is stopped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECS=${SECS:-20}
N=${N:-10000}
OUT=${OUT:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)-profile}
declare -A PORT=([sipws]=18081 [bare]=18082)
declare -A ADMIN=([sipws]=127.0.0.1:16061 [bare]=127.0.0.1:16062)

log() { printf '%s %s\n' "$(date -u +%T)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

tmp=$(mktemp -d)
pids=()
stop_pid() {
	local pid=$1
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
cleanup() {
	local p
	for p in "${pids[@]}"; do stop_pid "$p"; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ulimit -n 20000 2>/dev/null || true
pin_server=() pin_client=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
	pin_server=(taskset -c 0) pin_client=(taskset -c 1)
fi
command -v curl >/dev/null || die "curl is needed to fetch profiles"

# The sipws to profile: the work tree (SRC=worktree, the default) or a
# commit (SRC=HEAD, SRC=<rev>), with this work tree's bench/.
SRC=${SRC:-worktree}
srcdir=.
if [ "$SRC" != worktree ]; then
	srcdir=$tmp/src
	mkdir -p "$srcdir"
	git archive "$SRC" | tar -x -C "$srcdir"
	rm -rf "$srcdir/bench"
	tar -c --exclude=bench/results bench | tar -x -C "$srcdir"
fi
commit=$(git rev-parse --short "$([ "$SRC" = worktree ] && echo HEAD || echo "$SRC")")
[ "$SRC" = worktree ] && [ -n "$(git status --porcelain --untracked-files=no -- ':!bench')" ] && commit="$commit + uncommitted changes"

log "building sipws at $commit"
bin=$tmp/bin
mkdir -p "$bin" "$OUT"
(cd "$srcdir" && go build -o "$bin/" ./bench/optionsd ./bench/bareopts ./bench/loadgen)

SPID=
start_server() { # NAME [MEMPROFILERATE]
	local name=$1 port=${PORT[$1]} admin=${ADMIN[$1]} rate=${2:-0}
	case $name in
	sipws) "${pin_server[@]}" "$bin/optionsd" -addr "127.0.0.1:$port" -keepalive none -log-level warn -pprof "$admin" \
		-memprofilerate "$rate" 2>>"$tmp/$name.log" & ;;
	bare) "${pin_server[@]}" "$bin/bareopts" -addr "127.0.0.1:$port" -pprof "$admin" -memprofilerate "$rate" 2>>"$tmp/$name.log" & ;;
	esac
	SPID=$!
	pids+=("$SPID")
	for _ in $(seq 100); do
		if curl -fsS -o /dev/null "http://$admin/debug/pprof/" 2>/dev/null; then return 0; fi
		kill -0 "$SPID" 2>/dev/null || die "$name exited at start"
		sleep 0.1
	done
	die "$name: no pprof on $admin after 10 s"
}

for s in sipws bare; do
	log "$s: CPU profile, rps with 100 connections, ${SECS}s"
	start_server "$s"
	"${pin_client[@]}" "$bin/loadgen" -mode rps -addr "127.0.0.1:${PORT[$s]}" -conns 100 -sources 16 \
		-warmup 2s -duration "${SECS}s" -server-pid "$SPID" -tag "server=$s" >"$tmp/rps.out" 2>>"$tmp/loadgen.log" &
	lg=$!
	pids+=("$lg")
	sleep 2
	curl -fsS -o "$OUT/cpu-$s.pb.gz" "http://${ADMIN[$s]}/debug/pprof/profile?seconds=$SECS"
	wait "$lg" || log "WARNING: loadgen failed: $(tail -1 "$tmp/loadgen.log")"
	tail -1 "$tmp/rps.out" | tee "$OUT/rps-$s.json"
	stop_pid "$SPID"

	log "$s: CPU profile, handshakes with 50 loops, ${SECS}s"
	start_server "$s"
	"${pin_client[@]}" "$bin/loadgen" -mode handshake -addr "127.0.0.1:${PORT[$s]}" -loops 50 -sources 16 \
		-warmup 2s -duration "${SECS}s" -server-pid "$SPID" -tag "server=$s" >"$tmp/hs.out" 2>>"$tmp/loadgen.log" &
	lg=$!
	pids+=("$lg")
	sleep 2
	curl -fsS -o "$OUT/cpu-handshake-$s.pb.gz" "http://${ADMIN[$s]}/debug/pprof/profile?seconds=$SECS"
	wait "$lg" || log "WARNING: loadgen failed: $(tail -1 "$tmp/loadgen.log")"
	tail -1 "$tmp/hs.out" | tee "$OUT/handshake-$s.json"
	stop_pid "$SPID"

	log "$s: heap profile, $N idle connections"
	start_server "$s" 64 # sample every 64 bytes allocated: exact enough per connection
	"${pin_client[@]}" "$bin/loadgen" -mode idle -addr "127.0.0.1:${PORT[$s]}" -conns "$N" -sources 16 -hold 10m \
		>"$tmp/idle.out" 2>>"$tmp/loadgen.log" &
	lg=$!
	pids+=("$lg")
	for _ in $(seq 1200); do
		grep -q '^READY' "$tmp/idle.out" && break
		kill -0 "$lg" 2>/dev/null || die "idle load generator exited"
		sleep 0.1
	done
	grep -q "^READY $N\$" "$tmp/idle.out" || die "$s: not all $N idle connections opened"
	sleep 5
	curl -fsS -o "$OUT/heap-$s.pb.gz" "http://${ADMIN[$s]}/debug/pprof/heap?gc=1"
	{
		curl -fsS "http://${ADMIN[$s]}/debug/pprof/heap?debug=1" | sed -n '/^# runtime.MemStats/,$p'
		awk '/^Pss:/{print "PSS_kib " $2}' "/proc/$SPID/smaps_rollup"
		echo "connections $N"
		curl -fsS "http://${ADMIN[$s]}/debug/pprof/goroutine?debug=1" | awk 'NR==1{print "goroutines " $NF}'
	} >"$OUT/memstats-$s.txt"
	stop_pid "$lg"
	stop_pid "$SPID"
done

# Tables: CPU by function, heap by allocation site.
for s in sipws bare; do
	go tool pprof -top -nodecount=45 "$OUT/cpu-$s.pb.gz" >"$OUT/cpu-$s-top.txt" 2>/dev/null || true
	go tool pprof -top -cum -nodecount=45 "$OUT/cpu-$s.pb.gz" >"$OUT/cpu-$s-cum.txt" 2>/dev/null || true
	go tool pprof -top -cum -nodecount=60 "$OUT/cpu-handshake-$s.pb.gz" >"$OUT/cpu-handshake-$s-cum.txt" 2>/dev/null || true
	go tool pprof -top -sample_index=inuse_space -nodecount=30 "$OUT/heap-$s.pb.gz" >"$OUT/heap-$s-top.txt" 2>/dev/null || true
done

per_conn() { awk -v n="$N" -v k="$2" '$2 == k || $1 == k {v=$NF} END{printf "%.0f", v / n}' "$OUT/memstats-$1.txt"; }
{
	echo "# Profiles: sipws (bench/optionsd) against bare gobwas/ws (bench/bareopts)"
	echo
	echo "$(date -u +%FT%TZ), $(nproc) cores, $(go env GOVERSION), sipws at $commit"
	echo
	echo "## Per request, rps with 100 connections"
	echo
	for s in sipws bare; do
		echo "- $s: $(grep -o '"rps":[0-9.]*\|"server_cpu_us_per_req":[0-9.]*\|"server_reads_per_req":[0-9.]*\|"server_writes_per_req":[0-9.]*' "$OUT/rps-$s.json" | tr '\n' ' ')"
	done
	echo
	echo "## Per handshake, 50 loops"
	echo
	for s in sipws bare; do
		echo "- $s: $(grep -o '"hps":[0-9.]*\|"server_cpu_us_per_hs":[0-9.]*\|"server_reads_per_hs":[0-9.]*\|"server_writes_per_hs":[0-9.]*' "$OUT/handshake-$s.json" | tr '\n' ' ')"
	done
	echo
	echo "## Per idle connection, $N connections (runtime.MemStats after a GC)"
	echo
	echo "| | HeapAlloc/conn (B) | HeapInuse/conn (B) | Stack/conn (B) | goroutines | PSS (KiB) |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: |"
	for s in sipws bare; do
		echo "| $s | $(per_conn "$s" HeapAlloc) | $(per_conn "$s" HeapInuse) | $(per_conn "$s" Stack) | $(awk '/^goroutines/{print $2}' "$OUT/memstats-$s.txt") | $(awk '/^PSS_kib/{print $2}' "$OUT/memstats-$s.txt") |"
	done
	echo
	echo "Tables: cpu-*-top.txt (flat), cpu-*-cum.txt (cumulative), cpu-handshake-*-cum.txt, heap-*-top.txt (in-use bytes by site)."
} >"$OUT/README.md"
cat "$OUT/README.md"
log "profiles in $OUT"
