package apicheck

import (
	"flag"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/tools/go/packages"
)

var update = flag.Bool("update", false, "rewrite api/*.txt from the code")

// apiDir is where the API files live, relative to the module root.
const apiDir = "api"

// TestAPI fails when the exported API of a package of the module differs
// from its file under api/, and prints the difference; with -update it
// rewrites the files instead.
func TestAPI(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "the module root should be two levels above internal/apicheck")
	touchTree(t, root)

	got := moduleAPI(t, root)
	dir := filepath.Join(root, apiDir)
	want := readAPIFiles(t, dir)

	if *update {
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for name, lines := range got {
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(lines, "\n")+"\n"), 0o644))
		}
		for name := range want {
			if _, ok := got[name]; !ok {
				require.NoError(t, os.Remove(filepath.Join(dir, name)))
			}
		}
		return
	}

	var report strings.Builder
	for _, name := range sortedKeys(got, want) {
		g, inCode := got[name]
		w, inFile := want[name]
		switch {
		case !inFile:
			fmt.Fprintf(&report, "\n%s/%s is missing; the code has:\n", apiDir, name)
		case !inCode:
			fmt.Fprintf(&report, "\n%s/%s names no package of the module any more:\n", apiDir, name)
		}
		if d := diffLines(w, g); d != "" {
			if inFile && inCode {
				fmt.Fprintf(&report, "\n%s/%s differs from the code (-file +code):\n", apiDir, name)
			}
			report.WriteString(d)
		}
	}
	if report.Len() > 0 {
		t.Errorf("the exported API differs from %s/:\n%s\n"+
			"If the change is intended, run `make api` (go test ./internal/apicheck -run TestAPI -update)\n"+
			"and commit the files with it. A removed or changed line can break callers: say so under\n"+
			"\"Changed\" in CHANGELOG.md.", apiDir, report.String())
	}
}

// touchTree opens every directory of the module, so that go test's cache
// (which keys a cached result on the files and directories a test opened)
// runs this test again after any change to a package: the packages
// themselves are read by the go command that packages.Load starts, which
// the cache does not see.
func touchTree(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "node_modules") {
			return filepath.SkipDir
		}
		return nil
	})
	require.NoError(t, err)
	for _, f := range []string{"go.mod", "go.sum"} {
		_, err := os.ReadFile(filepath.Join(root, f))
		require.NoError(t, err)
	}
}

// moduleAPI loads every package of the module at root and returns the API
// lines of each one that has an API, keyed by its file name under api/.
func moduleAPI(t *testing.T, root string) map[string][]string {
	t.Helper()
	cfg := &packages.Config{
		Mode: packages.NeedName | packages.NeedTypes | packages.NeedModule,
		Dir:  root,
	}
	pkgs, err := packages.Load(cfg, "./...")
	require.NoError(t, err)
	var errs []string
	packages.Visit(pkgs, nil, func(p *packages.Package) {
		for _, e := range p.Errors {
			errs = append(errs, e.Error())
		}
	})
	require.Empty(t, errs, "the module's packages should load without errors")

	api := make(map[string][]string)
	for _, p := range pkgs {
		if p.Name == "main" || p.Module == nil || isInternal(p.PkgPath) {
			continue
		}
		name := fileName(p.Module.Path, p.PkgPath)
		require.NotContains(t, api, name, "two packages map to %s/%s", apiDir, name)
		api[name] = packageAPI(p.Types)
	}
	require.NotEmpty(t, api, "no package with an API found under %s", root)
	return api
}

func isInternal(path string) bool {
	return slices.Contains(strings.Split(path, "/"), "internal")
}

// fileName names the API file of the package at pkgPath in module modPath.
func fileName(modPath, pkgPath string) string {
	if pkgPath == modPath {
		return filepath.Base(modPath) + ".txt"
	}
	rel := strings.TrimPrefix(pkgPath, modPath+"/")
	return strings.ReplaceAll(rel, "/", "_") + ".txt"
}

// readAPIFiles reads every api/*.txt, keyed by file name, its lines as they
// are (blank lines dropped).
func readAPIFiles(t *testing.T, dir string) map[string][]string {
	t.Helper()
	files := make(map[string][]string)
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return files
	}
	require.NoError(t, err)
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".txt") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		var lines []string
		for l := range strings.Lines(string(data)) {
			if l = strings.TrimRight(l, "\r\n"); l != "" {
				lines = append(lines, l)
			}
		}
		files[e.Name()] = lines
	}
	return files
}

// packageAPI returns one line per exported name of pkg (and per exported
// field, method and interface method of its exported types), sorted.
func packageAPI(pkg *types.Package) []string {
	w := apiWriter{pkg: pkg, prefix: "pkg " + pkg.Path() + ", "}
	scope := pkg.Scope()
	for _, name := range scope.Names() {
		obj := scope.Lookup(name)
		if !obj.Exported() {
			continue
		}
		switch obj := obj.(type) {
		case *types.Const:
			w.constLine(obj)
		case *types.Var:
			w.add("var %s %s", name, w.typ(obj.Type()))
		case *types.Func:
			sig := obj.Type().(*types.Signature)
			w.add("func %s%s%s", name, w.typeParams(sig.TypeParams()), w.signature(sig))
		case *types.TypeName:
			w.typeLines(obj)
		}
	}
	sort.Strings(w.lines)
	return slices.Compact(w.lines)
}

// apiWriter collects the API lines of one package.
type apiWriter struct {
	pkg    *types.Package
	prefix string
	lines  []string
}

func (w *apiWriter) add(format string, args ...any) {
	w.lines = append(w.lines, w.prefix+fmt.Sprintf(format, args...))
}

// qualify names other packages by their name, as Go's api files do, and
// this package's own types not at all.
func (w *apiWriter) qualify(p *types.Package) string {
	if p == w.pkg {
		return ""
	}
	return p.Name()
}

// typ prints t without parameter names, which are not part of the API.
func (w *apiWriter) typ(t types.Type) string {
	return types.TypeString(withoutParamNames(t), w.qualify)
}

// signature prints a function's parameters and results: "(int, string) error".
func (w *apiWriter) signature(sig *types.Signature) string {
	plain := types.NewSignatureType(nil, nil, nil, sig.Params(), sig.Results(), sig.Variadic())
	return strings.TrimPrefix(w.typ(plain), "func")
}

func (w *apiWriter) typeParams(tps *types.TypeParamList) string {
	if tps.Len() == 0 {
		return ""
	}
	parts := make([]string, tps.Len())
	for i := range tps.Len() {
		tp := tps.At(i)
		parts[i] = tp.Obj().Name() + " " + w.typ(tp.Constraint())
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func (w *apiWriter) constLine(c *types.Const) {
	if b, ok := c.Type().(*types.Basic); ok && b.Info()&types.IsUntyped != 0 {
		w.add("const %s = %s", c.Name(), c.Val().ExactString())
		return
	}
	w.add("const %s %s = %s", c.Name(), w.typ(c.Type()), c.Val().ExactString())
}

func (w *apiWriter) typeLines(tn *types.TypeName) {
	name := tn.Name()
	if tn.IsAlias() {
		rhs := tn.Type()
		if a, ok := rhs.(*types.Alias); ok {
			rhs = a.Rhs()
		}
		w.add("type %s = %s", name, w.typ(rhs))
		return
	}
	named, ok := tn.Type().(*types.Named)
	if !ok {
		return
	}
	head := name + w.typeParams(named.TypeParams())
	switch u := named.Underlying().(type) {
	case *types.Struct:
		w.add("type %s struct", head)
		for i := range u.NumFields() {
			f := u.Field(i)
			switch {
			case !f.Exported():
			case f.Embedded():
				w.add("type %s struct, embedded %s", head, w.typ(f.Type()))
			default:
				w.add("type %s struct, %s %s", head, f.Name(), w.typ(f.Type()))
			}
		}
	case *types.Interface:
		var names []string
		unexported := false
		for i := range u.NumMethods() {
			m := u.Method(i)
			if !m.Exported() {
				unexported = true
				continue
			}
			names = append(names, m.Name())
			w.add("type %s interface, %s%s", head, m.Name(), w.signature(m.Type().(*types.Signature)))
		}
		sort.Strings(names)
		if unexported {
			names = append(names, "unexported methods")
		}
		w.add("type %s interface { %s }", head, strings.Join(names, ", "))
		return // an interface's methods are listed above
	default:
		w.add("type %s %s", head, w.typ(u))
	}
	w.methodLines(named, head)
}

// methodLines lists the exported methods of T and *T, promoted ones
// included (they are part of what a caller can call), each with the
// receiver that has it: (T) when a value has it, (*T) when only a pointer.
func (w *apiWriter) methodLines(named *types.Named, head string) {
	values := types.NewMethodSet(named)
	pointers := types.NewMethodSet(types.NewPointer(named))
	for sel := range pointers.Methods() {
		m := sel.Obj()
		if !m.Exported() {
			continue
		}
		recv := "*" + head
		if values.Lookup(m.Pkg(), m.Name()) != nil {
			recv = head
		}
		w.add("method (%s) %s%s", recv, m.Name(), w.signature(m.Type().(*types.Signature)))
	}
}

// withoutParamNames returns t with the parameter and result names of every
// function type in it removed; other types are returned as they are.
func withoutParamNames(t types.Type) types.Type {
	switch t := t.(type) {
	case *types.Signature:
		return types.NewSignatureType(nil, nil, nil, unnamed(t.Params()), unnamed(t.Results()), t.Variadic())
	case *types.Pointer:
		return types.NewPointer(withoutParamNames(t.Elem()))
	case *types.Slice:
		return types.NewSlice(withoutParamNames(t.Elem()))
	case *types.Array:
		return types.NewArray(withoutParamNames(t.Elem()), t.Len())
	case *types.Map:
		return types.NewMap(withoutParamNames(t.Key()), withoutParamNames(t.Elem()))
	case *types.Chan:
		return types.NewChan(t.Dir(), withoutParamNames(t.Elem()))
	}
	return t
}

func unnamed(tuple *types.Tuple) *types.Tuple {
	if tuple == nil {
		return nil
	}
	vars := make([]*types.Var, tuple.Len())
	for i := range tuple.Len() {
		v := tuple.At(i)
		vars[i] = types.NewParam(token.NoPos, v.Pkg(), "", withoutParamNames(v.Type()))
	}
	return types.NewTuple(vars...)
}

// diffLines returns the lines only in want ("-") and only in got ("+"),
// in sorted order, or "" when the two sets are equal.
func diffLines(want, got []string) string {
	inWant := make(map[string]bool, len(want))
	for _, l := range want {
		inWant[l] = true
	}
	inGot := make(map[string]bool, len(got))
	for _, l := range got {
		inGot[l] = true
	}
	all := slices.Concat(want, got)
	sort.Strings(all)
	var b strings.Builder
	for _, l := range slices.Compact(all) {
		switch {
		case inWant[l] && !inGot[l]:
			b.WriteString("-" + l + "\n")
		case inGot[l] && !inWant[l]:
			b.WriteString("+" + l + "\n")
		}
	}
	return b.String()
}

func sortedKeys(maps ...map[string][]string) []string {
	var keys []string
	for _, m := range maps {
		for k := range m {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return slices.Compact(keys)
}

// TestPackageAPIFormat pins the line format on a package that has every
// kind of declaration, including those the module does not use yet.
func TestPackageAPIFormat(t *testing.T) {
	const src = `package p

import "io"

type Kind uint8

const (
	Untyped     = 1 << 3
	Typed  Kind = 2
	Name        = "p/" + "1"
	hidden      = 0
)

var V []func(x int) (err error)

type Alias = io.Reader

type Base struct{ X int }

func (Base) M()                         {}
func (*Base) PM(s ...string) error     { return nil }
func (b *Base) hidden()                {}

type Outer struct {
	Base
	y int
	F func(a int) (b string)
}

type I interface {
	io.Reader
	Do(n int)
}

type Sealed interface {
	Do()
	seal()
}

type Handler func(w io.Writer, data []byte)

func (h Handler) Serve() {}

func G[T any, S ~[]T](s S, t T) T { return t }

func New(k Kind, r io.Reader) (*Outer, error) { return nil, nil }
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, 0)
	require.NoError(t, err)
	pkg, err := (&types.Config{Importer: importer.Default()}).Check("example.com/p", fset, []*ast.File{f}, nil)
	require.NoError(t, err)

	want := []string{
		"const Name = \"p/1\"",
		"const Typed Kind = 2",
		"const Untyped = 8",
		"func G[T any, S ~[]T](S, T) T",
		"func New(Kind, io.Reader) (*Outer, error)",
		"method (*Base) PM(...string) error",
		"method (*Outer) PM(...string) error",
		"method (Base) M()",
		"method (Handler) Serve()",
		"method (Outer) M()",
		"type Alias = io.Reader",
		"type Base struct",
		"type Base struct, X int",
		"type Handler func(io.Writer, []byte)",
		"type I interface { Do, Read }",
		"type I interface, Do(int)",
		"type I interface, Read([]byte) (int, error)",
		"type Kind uint8",
		"type Outer struct",
		"type Outer struct, F func(int) string",
		"type Outer struct, embedded Base",
		"type Sealed interface { Do, unexported methods }",
		"type Sealed interface, Do()",
		"var V []func(int) error",
	}
	for i, l := range want {
		want[i] = "pkg example.com/p, " + l
	}
	require.Equal(t, want, packageAPI(pkg))
}
