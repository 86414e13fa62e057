#!/usr/bin/env bash
# bench/run.sh: the sipws benchmark suite in one command (issue 8).
#
# Runs the same loads against three servers that answer SIP OPTIONS over
# WebSocket (sub-protocol sip) with 200 OK:
#   sipws     bench/optionsd  (this library)
#   bare      bench/bareopts  (bare gobwas/ws behind net/http: the floor)
#   kamailio  Kamailio 5.6 from Debian, bench/kamailio/kamailio.cfg
# with the load generator bench/loadgen, the server pinned to CPU 0 and the
# load generator to CPU 1 (taskset), in interleaved rounds (sipws, bare,
# kamailio, sipws, …) of:
#   rps        requests/s and latency p50/p99/p99.9 with 1, 100 and 1,000
#              connections, one OPTIONS outstanding on each; server CPU time
#              per request (/proc/PID/stat utime+stime, every process)
#   handshake  WebSocket handshakes/s (open, negotiate sip, close cleanly)
#              with 50 concurrent loops
#   mem        memory per idle connection: PSS (/proc/PID/smaps_rollup, every
#              process of the server) with 10,000 and 15,000 connections,
#              less the PSS of the fresh server, divided by N; keepalive off
#   idle_cpu   server CPU with 15,000 idle connections, keepalive on
#              (timeout 180 s), over CPU_WINDOW seconds
# plus the Go benchmark of allocations per received message. It writes the
# raw numbers (results.jsonl, one JSON object per measurement), the machine
# (machine.json) and summary.md (medians, medians of per-round ratios,
# targets of the issue, PASS/MISS) to bench/results/<UTC date-time>/ and
# prints the table.
#
#   bench/run.sh                       # ROUNDS=3 DURATION=10s: ~20 min
#   QUICK=1 bench/run.sh               # a short smoke run (~2 min)
#   ROUNDS=5 DURATION=20s CPU_WINDOW=60 bench/run.sh
#
# Knobs (environment): ROUNDS (3), DURATION (10s) and WARMUP (2s) of rps and
# handshake runs, CPU_WINDOW (30 s), SETTLE (5 s, after idle connections are
# open), IDLE_N1/IDLE_N2 (10000/15000), SERVERS ("sipws bare kamailio"),
# OUT (the results directory), QUICK=1, SRC (worktree: the sipws of this
# work tree, the default; HEAD or another revision: that commit, exported
# clean, measured with this work tree's bench/). Kamailio is installed with apt-get
# when missing (root, Debian). Traffic stays on 127.0.0.0/8; every wait is
# bounded; every process started is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
	ROUNDS=${ROUNDS:-1} DURATION=${DURATION:-2s} WARMUP=${WARMUP:-1s}
	CPU_WINDOW=${CPU_WINDOW:-5} SETTLE=${SETTLE:-2} IDLE_N1=${IDLE_N1:-1000} IDLE_N2=${IDLE_N2:-1500}
fi
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CPU_WINDOW=${CPU_WINDOW:-30}
SETTLE=${SETTLE:-5}
IDLE_N1=${IDLE_N1:-10000}
IDLE_N2=${IDLE_N2:-15000}
SERVERS=${SERVERS:-"sipws bare kamailio"}
SRC=${SRC:-worktree}
RPS_CONNS=${RPS_CONNS:-"1 100 1000"}
HS_LOOPS=${HS_LOOPS:-50}
KEEPALIVE_TIMEOUT=180s
SOURCES=16 # client source addresses 127.0.0.2 … 127.0.0.17
OUT=${OUT:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}

declare -A PORT=([sipws]=18081 [bare]=18082 [kamailio]=18083)

log() { printf '%s %s\n' "$(date -u +%T)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

[ "$ROUNDS" -ge 1 ] || die "ROUNDS=$ROUNDS: want at least 1"
for s in $SERVERS; do [ -n "${PORT[$s]:-}" ] || die "SERVERS: unknown server $s (want sipws, bare, kamailio)"; done

tmp=$(mktemp -d)
pids=() # every process started in the background, by PID

# stop_pid PID: SIGTERM, up to 10 s, then SIGKILL; also the children it
# forked (Kamailio), by PID.
stop_pid() {
	local pid=$1 kids
	kill -0 "$pid" 2>/dev/null || return 0
	kids=$(pgrep -P "$pid" || true)
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
}

cleanup() {
	local p
	for p in "${pids[@]}"; do stop_pid "$p"; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Prerequisites ----------------------------------------------------------

if ! command -v kamailio >/dev/null || [ ! -e /usr/lib/x86_64-linux-gnu/kamailio/modules/websocket.so ]; then
	case " $SERVERS " in *" kamailio "*)
		log "installing Kamailio (kamailio, kamailio-websocket-modules)"
		[ "$(id -u)" = 0 ] || die "Kamailio is missing and installing it needs root"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kamailio kamailio-websocket-modules >/dev/null
		;;
	esac
fi
# The Debian package may start a system Kamailio: it must not compete.
if command -v systemctl >/dev/null && systemctl is-active --quiet kamailio 2>/dev/null; then
	log "stopping the system kamailio service"
	systemctl stop kamailio || true
fi

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
ulimit -c 0 # Kamailio may crash when stopped with 15,000 connections: no core files
[ "$(ulimit -n)" -ge $((IDLE_N2 + 1000)) ] || die "open files limit $(ulimit -n) is too low for $IDLE_N2 connections"

pin_server=() pin_client=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
	pin_server=(taskset -c 0) pin_client=(taskset -c 1)
else
	log "WARNING: no taskset or fewer than 2 CPUs: server and load generator are not pinned"
fi

# The sipws to measure: the work tree (SRC=worktree, the default) or a
# commit (SRC=HEAD, SRC=<rev>) exported clean, with this work tree's bench/.
srcdir=.
if [ "$SRC" != worktree ]; then
	srcdir=$tmp/src
	mkdir -p "$srcdir"
	git archive "$SRC" | tar -x -C "$srcdir"
	rm -rf "$srcdir/bench"
	tar -c --exclude=bench/results bench | tar -x -C "$srcdir"
fi

log "building (sipws from $SRC)"
bin=$tmp/bin
mkdir -p "$bin"
(cd "$srcdir" && go build -o "$bin/" ./bench/optionsd ./bench/bareopts ./bench/loadgen ./bench/summarize)

mkdir -p "$OUT"
results=$OUT/results.jsonl
: >"$results"
log "results in $OUT"

# --- Measuring helpers ------------------------------------------------------

# tree PID: the PID and all its descendants.
tree() {
	local all=("$1") i=0 c
	while [ "$i" -lt "${#all[@]}" ] && [ "$i" -lt 10000 ]; do
		for c in $(pgrep -P "${all[$i]}" || true); do all+=("$c"); done
		i=$((i + 1))
	done
	echo "${all[@]}"
}

# pss_kib PID: summed PSS of the process tree, KiB.
pss_kib() {
	local t=0 p v
	for p in $(tree "$1"); do
		v=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
		t=$((t + ${v:-0}))
	done
	echo "$t"
}

# cpu_ticks PID: summed utime+stime of the process tree, clock ticks.
cpu_ticks() {
	local t=0 p v
	for p in $(tree "$1"); do
		v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}')
		t=$((t + ${v:-0}))
	done
	echo "$t"
}
TCK=$(getconf CLK_TCK)

# --- Servers ----------------------------------------------------------------

SPID=
# start_server NAME KEEPALIVE(on|off): a fresh server on its port, pinned.
start_server() {
	local name=$1 ka=$2 port=${PORT[$1]} logf=$tmp/$1.log
	case $name in
	sipws)
		local mech=none
		[ "$ka" = on ] && mech=ping
		"${pin_server[@]}" "$bin/optionsd" -addr "127.0.0.1:$port" -keepalive "$mech" \
			-keepalive-timeout "$KEEPALIVE_TIMEOUT" -log-level warn 2>>"$logf" &
		;;
	bare)
		"${pin_server[@]}" "$bin/bareopts" -addr "127.0.0.1:$port" 2>>"$logf" &
		;;
	kamailio)
		local rundir=$tmp/kamailio-run defs=()
		mkdir -p "$rundir"
		[ "$ka" = on ] && defs=(-A WITH_KEEPALIVE)
		"${pin_server[@]}" kamailio -f bench/kamailio/kamailio.cfg -DD -E \
			-l "tcp:127.0.0.1:$port" -m 2048 -M 32 -Y "$rundir" -P "$rundir/kamailio.pid" \
			"${defs[@]}" >>"$logf" 2>&1 &
		;;
	esac
	SPID=$!
	pids+=("$SPID")
	for _ in $(seq 100); do
		kill -0 "$SPID" 2>/dev/null || { tail -20 "$logf" >&2; die "$name exited at start"; }
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			sleep 1 # let Kamailio's children come up, and the probe's connection go
			return 0
		fi
		sleep 0.1
	done
	tail -20 "$logf" >&2
	die "$name not listening on 127.0.0.1:$port after 10 s"
}

stop_server() {
	[ -n "$SPID" ] || return 0
	stop_pid "$SPID"
	SPID=
}

# loadgen ARGS…: the load generator, pinned; its JSON line goes to results.
loadgen() {
	local out=$tmp/loadgen.out
	if ! "${pin_client[@]}" "$bin/loadgen" -sources "$SOURCES" "$@" >"$out" 2>>"$tmp/loadgen.log"; then
		log "WARNING: loadgen $* failed: $(tail -1 "$tmp/loadgen.log")"
	fi
	if [ -s "$out" ]; then
		tail -1 "$out" >>"$results"
		tail -1 "$out"
	fi
}

# idle_clients PORT N TAG: starts a load generator holding N idle connections and
# waits (at most 120 s) for READY. Sets IPID.
IPID=
idle_clients() {
	local port=$1 n=$2 out=$tmp/idle-$3.out
	: >"$out"
	"${pin_client[@]}" "$bin/loadgen" -mode idle -addr "127.0.0.1:$port" -conns "$n" -sources "$SOURCES" \
		-hold 15m -rate 5000 >"$out" 2>>"$tmp/loadgen.log" &
	IPID=$!
	pids+=("$IPID")
	for _ in $(seq 1200); do
		grep -q '^READY' "$out" && break
		kill -0 "$IPID" 2>/dev/null || break
		sleep 0.1
	done
	local got
	got=$(awk '/^READY/{print $2}' "$out")
	[ "${got:-0}" = "$n" ] || {
		tail -3 "$tmp/loadgen.log" >&2
		log "WARNING: $3: ${got:-0} of $n idle connections opened"
		return 1
	}
}

# --- The measurements -------------------------------------------------------

run_rps_handshake() { # SERVER ROUND
	local s=$1 r=$2 port=${PORT[$1]} n line
	start_server "$s" off
	for n in $RPS_CONNS; do
		log "round $r $s: rps, $n connections"
		line=$(loadgen -mode rps -addr "127.0.0.1:$port" -conns "$n" -duration "$DURATION" -warmup "$WARMUP" \
			-server-pid "$SPID" -tag "test=rps_$n" -tag "server=$s" -tag "round=$r")
		log "  $(grep -o '"rps":[0-9.]*\|"p99_us":[0-9.]*\|"server_cpu_us_per_req":[0-9.]*\|"errors":[0-9]*' <<<"$line" | tr '\n' ' ')"
	done
	log "round $r $s: handshakes, $HS_LOOPS loops"
	line=$(loadgen -mode handshake -addr "127.0.0.1:$port" -loops "$HS_LOOPS" -duration "$DURATION" -warmup "$WARMUP" \
		-server-pid "$SPID" -tag test=handshake -tag "server=$s" -tag "round=$r")
	log "  $(grep -o '"hps":[0-9.]*\|"server_cpu_us_per_hs":[0-9.]*\|"errors":[0-9]*' <<<"$line" | tr '\n' ' ')"
	stop_server
}

run_mem() { # SERVER ROUND
	local s=$1 r=$2 port=${PORT[$1]} base pss procs n held=0 a b
	start_server "$s" off
	sleep 1
	base=$(pss_kib "$SPID")
	a='' b=''
	for n in "$IDLE_N1" "$((IDLE_N2 - IDLE_N1))"; do
		log "round $r $s: memory, +$n idle connections"
		if ! idle_clients "$port" "$n" "mem$n"; then
			break
		fi
		[ -z "$a" ] && a=$IPID || b=$IPID
		held=$((held + n))
		sleep "$SETTLE"
		pss=$(pss_kib "$SPID")
		procs=$(tree "$SPID" | wc -w)
		printf '{"test":"mem_%d","server":"%s","round":%d,"conns":%d,"baseline_kib":%d,"pss_kib":%d,"per_conn_kib":%s,"server_procs":%d}\n' \
			"$held" "$s" "$r" "$held" "$base" "$pss" "$(awk -v a="$pss" -v b="$base" -v n="$held" 'BEGIN{printf "%.3f", (a-b)/n}')" "$procs" >>"$results"
		log "  $held connections: PSS $base -> $pss KiB, $(tail -1 "$results" | grep -o '"per_conn_kib":[0-9.-]*')"
	done
	for p in $a $b; do stop_pid "$p"; done
	stop_server
}

run_idle_cpu() { # SERVER ROUND
	local s=$1 r=$2 port=${PORT[$1]} t0 t1 pct
	start_server "$s" on
	log "round $r $s: idle CPU, $IDLE_N2 connections, keepalive on, ${CPU_WINDOW}s"
	if idle_clients "$port" "$IDLE_N2" cpu; then
		sleep "$SETTLE"
		t0=$(cpu_ticks "$SPID")
		sleep "$CPU_WINDOW"
		t1=$(cpu_ticks "$SPID")
		pct=$(awk -v d=$((t1 - t0)) -v tck="$TCK" -v w="$CPU_WINDOW" 'BEGIN{printf "%.3f", d / tck / w * 100}')
		printf '{"test":"idle_cpu","server":"%s","round":%d,"conns":%d,"window_s":%d,"cpu_ticks":%d,"cpu_pct":%s,"keepalive_timeout":"%s"}\n' \
			"$s" "$r" "$IDLE_N2" "$CPU_WINDOW" "$((t1 - t0))" "$pct" "$KEEPALIVE_TIMEOUT" >>"$results"
		log "  server CPU $pct% of a core"
	fi
	stop_pid "$IPID"
	stop_server
}

# --- Machine ----------------------------------------------------------------

# psi: the share of time some runnable task waited for a CPU over the last
# 60 and 300 s (/proc/pressure/cpu): other work competing with the run.
psi() { awk '/^some/{sub("avg60=", "", $3); sub("avg300=", "", $4); print $3 "% " $4 "%"}' /proc/pressure/cpu 2>/dev/null || echo n/a; }

kam_version=$(kamailio -v 2>/dev/null | awk '/^version:/{print $3; exit}' || true)
commit=$(git rev-parse --short "$([ "$SRC" = worktree ] && echo HEAD || echo "$SRC")" 2>/dev/null || echo unknown)
dirty=
if [ "$SRC" = worktree ]; then
	# What the build had beyond the commit (other than bench/), kept as a diff.
	dirty=$(git status --porcelain --untracked-files=no -- ':!bench' 2>/dev/null | awk '{print $2}' | tr '\n' ' ')
	[ -z "$dirty" ] || git diff HEAD -- . ':!bench' >"$OUT/uncommitted.diff"
fi
cat >"$OUT/machine.json" <<EOF
{"date":"$(date -u +%FT%TZ)","cores":$(nproc),"cpu":"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)","mem_gib":$(free -g | awk '/Mem:/{print $2}'),"kernel":"$(uname -r)","go":"$(go env GOVERSION)","kamailio":"${kam_version:-none}","commit":"$commit","modified":"${dirty% }","rounds":$ROUNDS,"duration":"$DURATION","warmup":"$WARMUP","cpu_window_s":$CPU_WINDOW,"settle_s":$SETTLE,"idle_n1":$IDLE_N1,"idle_n2":$IDLE_N2,"pinned":$([ ${#pin_server[@]} -gt 0 ] && echo true || echo false),"loadavg_start":"$(cut -d' ' -f1-3 /proc/loadavg)","cpu_pressure_start":"$(psi)","quick":$QUICK}
EOF

# --- Go benchmark: allocations per received message -------------------------

log "go benchmark: allocations per received message"
if (cd "$srcdir" && go test -run '^$' -bench '^BenchmarkReceiveSIP$' -benchmem -benchtime 200000x -count 3 .) >"$tmp/gobench.txt" 2>&1; then
	awk '/^BenchmarkReceiveSIP/{for(i=1;i<=NF;i++) if($(i)=="allocs/op") a=$(i-1); for(i=1;i<=NF;i++) if($(i)=="B/op") b=$(i-1); for(i=1;i<=NF;i++) if($(i)=="ns/op") ns=$(i-1);
		printf "{\"test\":\"go_receive\",\"server\":\"sipws\",\"round\":%d,\"allocs_per_msg\":%s,\"bytes_per_msg\":%s,\"ns_per_msg\":%s}\n", ++r, a, b, ns}' \
		"$tmp/gobench.txt" >>"$results"
	grep '^BenchmarkReceiveSIP' "$tmp/gobench.txt" >&2 || true
else
	log "WARNING: go test -bench BenchmarkReceiveSIP failed: $(tail -3 "$tmp/gobench.txt")"
fi

# --- Rounds, interleaved ----------------------------------------------------

for r in $(seq "$ROUNDS"); do
	for s in $SERVERS; do run_rps_handshake "$s" "$r"; done
	for s in $SERVERS; do run_mem "$s" "$r"; done
	for s in $SERVERS; do run_idle_cpu "$s" "$r"; done
done

sed -i "s/}\$/,\"loadavg_end\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"cpu_pressure_end\":\"$(psi)\"}/" "$OUT/machine.json"
"$bin/summarize" -dir "$OUT"
log "results: $OUT/results.jsonl, $OUT/summary.md"
