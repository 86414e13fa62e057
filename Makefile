# sipws: make demo runs the echo server, make test runs what CI runs.

.PHONY: demo test

# The echo example on 127.0.0.1:8080 (Ctrl-C stops it; -h lists its flags).
demo:
	go run ./examples/echo -addr 127.0.0.1:8080

# Everything CI checks: gofmt, go vet, go test -race. The logic, and any
# installs it needs, live in scripts/test.sh.
test:
	bash scripts/test.sh
