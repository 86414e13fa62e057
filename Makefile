# sipws: make demo runs the web phone demo, make test runs what CI runs.

.PHONY: demo test

WEB := examples/webphone/web

# The web phone on http://127.0.0.1:8080/ (Ctrl-C stops it; -h lists its
# flags): open it in two tabs and call yourself. Its page needs JsSIP from
# npm, installed first when node_modules is missing or older than the lock.
demo: $(WEB)/node_modules/.installed
	go run ./examples/webphone -addr 127.0.0.1:8080

$(WEB)/node_modules/.installed: $(WEB)/package.json $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --no-audit --no-fund
	touch $@

# Everything CI checks: gofmt, go vet, go test -race, the interop tests with
# real SIP clients and headless Chromium. The logic, and any
# installs it needs, live in scripts/test.sh.
test:
	bash scripts/test.sh
