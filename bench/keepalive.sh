#!/usr/bin/env bash
# Idle CPU of a sipws server holding N idle WebSocket connections with
# keepalive Ping on, for each keepalive timeout in TIMEOUTS: the server is the
# echo example on one CPU, the clients (bench/idleclients, which answer every
# Ping) on the other. The server's CPU time is read from /proc/PID/stat over
# SECS seconds. Loopback only; every wait is bounded.
#
#   N=15000 SECS=60 TIMEOUTS="180s 5s" bench/keepalive.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-15000}
SECS=${SECS:-60}
TIMEOUTS=${TIMEOUTS:-"180s 5s"}
PORT=${PORT:-18080}
OUT=${OUT:-bench/results/keepalive-$(date -u +%Y%m%d).txt}

tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/echo" ./examples/echo
go build -o "$tmp/idle" ./bench/idleclients
ulimit -n 20000
tck=$(getconf CLK_TCK)
pin_server=() pin_client=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
	pin_server=(taskset -c 0) pin_client=(taskset -c 1)
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

mkdir -p "$(dirname "$OUT")"
{
	echo "# sipws keepalive idle CPU — $(date -u +%FT%TZ)"
	echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB, Go $(go env GOVERSION)"
	echo "# connections=$N window=${SECS}s; server pinned to CPU 0, clients to CPU 1"
	printf '%-10s %-12s %-14s %-16s %s\n' timeout connections server_cpu_% pings_expected/s cpu_us_per_ping
} | tee "$OUT"

for to in $TIMEOUTS; do
	"${pin_server[@]}" "$tmp/echo" -addr "127.0.0.1:$PORT" -keepalive ping -keepalive-timeout "$to" \
		-log-level warn 2>"$tmp/server.log" &
	spid=$!
	pids+=("$spid")
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
		sleep 0.1
	done
	"${pin_client[@]}" "$tmp/idle" -url "ws://127.0.0.1:$PORT/" -n "$N" -sources 8 -rate 3000 \
		>"$tmp/idle.out" 2>"$tmp/idle.log" &
	cpid=$!
	pids+=("$cpid")
	for _ in $(seq 600); do
		grep -q READY "$tmp/idle.out" && break
		kill -0 "$cpid" 2>/dev/null || { cat "$tmp/idle.log" >&2; exit 1; }
		sleep 0.1
	done
	grep -q READY "$tmp/idle.out" || { echo "clients not ready" >&2; exit 1; }
	sleep 5 # let the handshakes' garbage be collected
	t0=$(cpu_ticks "$spid")
	sleep "$SECS"
	t1=$(cpu_ticks "$spid")
	pct=$(awk -v d=$((t1 - t0)) -v tck="$tck" -v s="$SECS" 'BEGIN{printf "%.3f", d / tck / s * 100}')
	secs=$(awk -v t="$to" 'BEGIN{sub(/s$/, "", t); print t}')
	per=$(awk -v n="$N" -v s="$secs" 'BEGIN{printf "%.1f", n / s}')
	us=$(awk -v d=$((t1 - t0)) -v tck="$tck" -v s="$SECS" -v p="$per" 'BEGIN{printf "%.1f", d / tck / s / p * 1e6}')
	printf '%-10s %-12s %-14s %-16s %s\n' "$to" "$N" "$pct" "$per" "$us" | tee -a "$OUT"
	kill "$cpid" "$spid" 2>/dev/null || true
	wait "$cpid" "$spid" 2>/dev/null || true
	pids=()
done
