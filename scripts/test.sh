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
# The interop tests against real browser phones (JsSIP/SIP.js in headless
# Chromium) will be installed at this point, before the Go tests that use
# them, e.g.:
#   step "npm ci (interop/)";   run npm ci --prefix interop
#   step "chromium";            run apt-get install -y -qq chromium
# Keep every install here, so that a fresh machine needs nothing by hand.
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
run go test -race -count=1 -timeout 15m ./...
