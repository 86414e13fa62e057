# sipws: make demo runs the web phone demo, make test runs what CI runs,
# make api records the exported API in api/.

.PHONY: demo test api

WEB := examples/webphone/web

# The address the demo listens on: make demo ADDR=127.0.0.1:9090.
ADDR ?= 127.0.0.1:8080

# The web phone on http://$(ADDR)/ (Ctrl-C stops it; -h lists its flags):
# open it in two tabs and call yourself. Its page needs JsSIP from npm,
# installed first when node_modules is missing or older than the lock.
demo: $(WEB)/node_modules/.installed
	go run ./examples/webphone -addr '$(ADDR)'

$(WEB)/node_modules/.installed: $(WEB)/package.json $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --no-audit --no-fund
	touch $@

# Everything CI checks: gofmt, go vet, go test -race, the interop tests with
# real SIP clients and headless Chromium. The logic, and any
# installs it needs, live in scripts/test.sh.
test:
	bash scripts/test.sh

# Rewrite api/*.txt from the code after an intended change of the exported
# API (go test ./... fails until they match; see internal/apicheck).
api:
	go test ./internal/apicheck -run TestAPI -count=1 -update
