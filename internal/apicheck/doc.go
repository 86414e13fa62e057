// Package apicheck holds the test that keeps the exported API of every
// package of this module in the text files under api/, so that every change
// to the API is a visible diff in review. The package has no code of its own:
// everything is in its test, which runs with `go test ./...` (and so with
// `make test`).
//
// Each file api/NAME.txt lists one package (NAME is sipws for the module's
// root package, otherwise the package's path inside the module with "/"
// written as "_"): one line per exported name, with its signature, sorted,
// in the style of Go's own api/*.txt files:
//
//	pkg github.com/sipws/sipws, func New(Config) (*Server, error)
//	pkg github.com/sipws/sipws, method (*Server) Shutdown(context.Context) error
//	pkg github.com/sipws/sipws, type Config struct, MaxConns int
//	pkg github.com/sipws/sipws, const CloseNormal CloseCode = 1000
//
// Commands (package main) and internal packages have no API and no file.
// When the code and a file differ, TestAPI fails and prints the lines that
// the code added (+) and removed (-). An intended change is recorded with
//
//	make api   # or: go test ./internal/apicheck -run TestAPI -update
//
// and the new file is committed with the change. A removed or changed line
// can break callers: such a change is listed under "Changed" in CHANGELOG.md.
//
// # Why this tool
//
// The packages are loaded with golang.org/x/tools/go/packages, the Go team's
// maintained loader (the one gopls and the analysis drivers use), which asks
// the go command itself what the packages and their build constraints are
// and hands back their go/types objects; go/types prints every type
// (types.TypeString). The test only walks each package's scope and method
// sets and writes a line per name: no Go source is parsed by code of ours.
// The tools that were weighed, and why they do not fit this job:
//
//   - golang.org/x/exp/apidiff (and its command) compares two loaded versions
//     of a package and says which changes are compatible. The old version
//     must be a source tree or an export-data file (apidiff -w), which is
//     binary, tied to the Go release that wrote it, and not something a
//     reviewer can read in a diff. It answers "is this change compatible?",
//     not "what is the API?"; it is the right tool for a release check
//     against the last tag, on top of these files, not instead of them.
//   - gorelease (golang.org/x/exp/cmd/gorelease) compares the module with a
//     base version fetched by the go command from a module proxy or version
//     control, and suggests the next version. It needs a published, tagged
//     base and the network, runs per release rather than per change, and
//     keeps no reviewable record either.
//   - Go's own cmd/api writes exactly these files for the standard library,
//     but, in its own words, "It is only a test, not a command, nor a
//     usefully importable package": it lives inside the Go tree and imports
//     its internal packages.
//
// golang.org/x/tools is required by this test only: no package of the module
// that a host links imports it. Its version, v0.49.0, is the newest whose
// own requirements do not raise golang.org/x/sync or golang.org/x/sys, which
// the examples link.
package apicheck
