package apicheck

import (
	"fmt"
	"go/scanner"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/tools/go/packages"
)

// readmeImports are the packages a README snippet may use, by the name it
// uses them under: a snippet is a fragment, so the test writes its imports.
var readmeImports = map[string]string{
	"context":    "context",
	"errors":     "errors",
	"fmt":        "fmt",
	"http":       "net/http",
	"log":        "log",
	"net":        "net",
	"slog":       "log/slog",
	"time":       "time",
	"sipws":      "github.com/sipws/sipws",
	"sipwsprom":  "github.com/sipws/sipws/sipwsprom",
	"sipgo":      "github.com/emiago/sipgo",
	"sip":        "github.com/emiago/sipgo/sip",
	"sipwssipgo": "github.com/sipws/sipws/sipwssipgo",
	"prometheus": "github.com/prometheus/client_golang/prometheus",
	"promhttp":   "github.com/prometheus/client_golang/prometheus/promhttp",
}

// TestREADMECompiles type-checks every ```go block of the README against the
// module's code as it is, so that an example in the README cannot drift
// from the API. Each block is the body of a function that has ctx (a
// context.Context) in scope; the packages it uses are imported by name (see
// readmeImports). The blocks are given to the type checker as an overlay
// file of this package: nothing is written to the tree.
func TestREADMECompiles(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	touchTree(t, root)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	blocks := goBlocks(string(readme))
	require.NotEmpty(t, blocks, "README.md has no ```go block: the test would check nothing")

	here, err := filepath.Abs(".")
	require.NoError(t, err)
	overlay := make(map[string][]byte)
	for i, b := range blocks {
		name := filepath.Join(here, fmt.Sprintf("zz_readme_block%d_test.go", i+1))
		overlay[name] = []byte(readmeFile(i+1, b.code))
	}
	if problems := typeCheck(t, here, overlay); len(problems) > 0 {
		var where strings.Builder
		for i, b := range blocks {
			fmt.Fprintf(&where, "  zz_readme_block%d_test.go = README.md line %d\n", i+1, b.line)
		}
		t.Errorf("README.md's Go blocks do not compile against the code:\n  %s\n(the blocks are the bodies of functions with ctx in scope; their line numbers are off by the %d lines of the wrapper)\n%s",
			strings.Join(dedupe(problems), "\n  "), wrapperLines, where.String())
	}
}

// TestREADMECompilesCatchesDrift checks that the check can fail: a block that
// calls a method the API does not have is reported.
func TestREADMECompilesCatchesDrift(t *testing.T) {
	here, err := filepath.Abs(".")
	require.NoError(t, err)
	name := filepath.Join(here, "zz_readme_drift_test.go")
	problems := typeCheck(t, here, map[string][]byte{name: []byte(readmeFile(1, "srv, _ := sipws.New(sipws.Config{})\nsrv.NoSuchMethod()\n"))})
	require.NotEmpty(t, problems, "a call of a missing method compiled")
	require.Contains(t, strings.Join(problems, "\n"), "NoSuchMethod")
}

// typeCheck loads the package in dir, with its tests and the overlay files,
// and returns the errors of the load and the type check.
func typeCheck(t *testing.T, dir string, overlay map[string][]byte) []string {
	t.Helper()
	cfg := &packages.Config{
		Mode:    packages.NeedName | packages.NeedTypes | packages.NeedSyntax | packages.NeedTypesInfo | packages.NeedFiles,
		Dir:     dir,
		Tests:   true,
		Overlay: overlay,
	}
	pkgs, err := packages.Load(cfg, ".")
	require.NoError(t, err)
	var problems []string
	packages.Visit(pkgs, nil, func(p *packages.Package) {
		for _, e := range p.Errors {
			problems = append(problems, e.Error())
		}
	})
	return problems
}

type goBlock struct {
	line int // of the block's first code line in README.md
	code string
}

// goBlocks returns the ```go fenced blocks of a Markdown text.
func goBlocks(md string) []goBlock {
	var out []goBlock
	lines := strings.Split(md, "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```go" {
			continue
		}
		start := i + 1
		j := start
		for j < len(lines) && strings.TrimSpace(lines[j]) != "```" {
			j++
		}
		out = append(out, goBlock{line: start + 1, code: strings.Join(lines[start:j], "\n")})
		i = j
	}
	return out
}

// wrapperLines is how many lines readmeFile writes before a block's code.
const wrapperLines = 4

// readmeFile wraps a README block as a function of the apicheck test package,
// importing the packages the block names.
func readmeFile(n int, code string) string {
	var imports []string
	seen := map[string]bool{}
	// The identifiers followed by a period, comments left out: the
	// packages the block uses (a local variable of the same name would
	// make the import unused, and the check fail: rename it).
	var sc scanner.Scanner
	src := []byte(code)
	sc.Init(token.NewFileSet().AddFile("", -1, len(src)), src, nil, 0)
	prev := ""
	for {
		_, tok, lit := sc.Scan()
		if tok == token.EOF {
			break
		}
		if tok == token.PERIOD && prev != "" {
			if path, ok := readmeImports[prev]; ok && !seen[prev] {
				seen[prev] = true
				imports = append(imports, fmt.Sprintf("%s %q", prev, path))
			}
		}
		prev = ""
		if tok == token.IDENT {
			prev = lit
		}
	}
	if !seen["context"] {
		imports = append(imports, `"context"`)
	}
	return fmt.Sprintf("package apicheck\nimport (%s)\nfunc readmeBlock%d(ctx context.Context) {\n_ = ctx\n%s\n}\n",
		strings.Join(imports, "; "), n, code)
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
