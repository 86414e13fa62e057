#!/usr/bin/env bash
# scripts/test.sh: everything CI checks, in order. `make test` and .ci/run
# call it; it must pass on a fresh machine that has only Go, Node, npm, git,
# make (and Debian's apt, as root, for what is missing). Each step says what
# it runs before running it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }
run() {
	printf '+ %s\n' "$*"
	"$@"
}

step "toolchain"
run go version
go_files() {
	# Every Go file of the repository, but none that npm installed.
	find . \( -name .git -o -name node_modules \) -prune -o -type f -name '*.go' -print0
}

# -race needs cgo, hence a C compiler. Install one when it is missing and
# this machine can (Debian, root); otherwise say so and stop.
if ! command -v "$(go env CC)" >/dev/null 2>&1; then
	step "installing a C compiler for -race ($(go env CC) not found)"
	if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
		run apt-get update -qq
		run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev
	else
		echo "go test -race needs a C compiler: install gcc" >&2
		exit 1
	fi
fi
export CGO_ENABLED=1

step "go mod download"
run go mod download

# --- Browser tests: setup goes here --------------------------------------
# The interop tests (interop/, run last) drive examples/webphone with real
# SIP clients: JsSIP and SIP.js in Node, and the web page in Debian's
# headless Chromium through playwright-core (which downloads no browser).
# Everything they need is installed here, so that a fresh machine needs
# nothing by hand: Chromium from apt, and the locked npm packages of the
# tests and of the page (JsSIP; examples/webphone's Go tests use it too).
# The cluster tests (Go and interop) start their own redis-server on a
# loopback port: Debian's, installed here when missing (never a system
# service: the tests start and stop it themselves).
if ! command -v redis-server >/dev/null 2>&1; then
	step "installing Debian's redis-server for the cluster tests"
	if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
		run apt-get update -qq
		run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
		# apt may start the service it installed: the tests need none.
		if command -v systemctl >/dev/null 2>&1; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
	else
		echo "the cluster tests need redis-server: install Debian's redis-server" >&2
		exit 1
	fi
fi
if [ ! -x /usr/bin/chromium ]; then
	step "installing Debian's chromium for the browser tests"
	if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
		run apt-get update -qq
		run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
	else
		echo "the browser tests need /usr/bin/chromium: install Debian's chromium" >&2
		exit 1
	fi
fi
step "npm ci (interop/, examples/webphone/web/)"
run npm ci --prefix interop --no-audit --no-fund
run npm ci --prefix examples/webphone/web --no-audit --no-fund
# --------------------------------------------------------------------------

step "gofmt -l"
unformatted=$(go_files | xargs -0 -r gofmt -l)
if [ -n "$unformatted" ]; then
	echo "these files are not gofmt-ed (run gofmt -w on them):" >&2
	printf '%s\n' "$unformatted" | sed 's/^/  /' >&2
	exit 1
fi
echo "all Go files are gofmt-ed"

step "go vet"
run go vet ./...

step "go test"
# The output is kept, so that a failure ends with a digest of it: CI shows
# the tail of a long log, and the end of a timeout's goroutine dump is the
# least useful part of it.
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT
# GOTRACEBACK=all: a test that panics (an example's bounded wait, say)
# prints every goroutine, as a timeout does.
if ! GOTRACEBACK=all run go test -race -count=1 -timeout 12m ./... 2>&1 | tee "$test_log"; then
	bash scripts/test-digest.sh "$test_log"
	exit 1
fi

# Every fuzz target for a bounded time (FUZZTIME, 15s by default); a crash
# fails the run and leaves its input in testdata/fuzz/.
step "fuzzing (scripts/fuzz.sh, ${FUZZTIME:-15s} per target)"
run bash scripts/fuzz.sh

# Interop: the webphone and sipgoproxy binaries, each against JsSIP and
# SIP.js (Node) and headless Chromium, with node's own test runner. The
# tests start and stop the binaries themselves, on 127.0.0.1. Where this machine allows it they run in
# a network namespace of their own that has nothing but loopback, so that
# even WebRTC's ICE between the two browser pages stays on 127.0.0.1.
step "interop tests (node --test interop/)"
interop_tmp=$(mktemp -d)
trap 'rm -rf "$interop_tmp" "$test_log"' EXIT
run go build -o "$interop_tmp/webphone" ./examples/webphone
run go build -o "$interop_tmp/sipgoproxy" ./examples/sipgoproxy
export WEBPHONE_BIN="$interop_tmp/webphone" SIPGOPROXY_BIN="$interop_tmp/sipgoproxy"
if command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 &&
	unshare -n true 2>/dev/null; then
	run unshare -n sh -c 'ip link set lo up && exec node --test interop/'
else
	echo "(no network namespace here: running on the host's loopback)"
	run node --test interop/
fi
