package webpage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// JsSIP is published on npm as CommonJS modules only (lib/, no browser
// build since 3.10.x), so the page cannot load it as it is. Bundle
// is the smallest build step that fixes that, done by the server itself
// when it starts: it follows the require() calls from an entry module
// through node_modules — relative paths, package "browser"/"main" fields,
// index.js and .json files — and wraps every module it reaches in a
// function of one script, which assigns the entry's exports to a global.
// It understands only literal require('...') calls, which is all that JsSIP
// and its dependencies (debug, events, ms, sdp-transform) use.

// requireCall matches require('x') and require("x").
var requireCall = regexp.MustCompile(`\brequire\(\s*(?:'([^'\n]+)'|"([^"\n]+)")\s*\)`)

// bundleModule is one module of a bundle.
type bundleModule struct {
	file string         // path relative to the root
	src  []byte         // its source
	deps map[string]int // require argument -> module index
}

// Bundle returns a browser script that defines the global name with
// the exports of the module entry. root is the directory holding
// node_modules; entry is a path relative to it. A require that cannot be
// resolved fails the build.
func Bundle(root, entry, global string) ([]byte, error) {
	fsys := os.DirFS(root)
	var mods []*bundleModule
	index := make(map[string]int)
	var load func(file string) (int, error)
	load = func(file string) (int, error) {
		if i, ok := index[file]; ok {
			return i, nil
		}
		src, err := fs.ReadFile(fsys, file)
		if err != nil {
			return 0, err
		}
		m := &bundleModule{file: file, src: src, deps: make(map[string]int)}
		i := len(mods)
		mods = append(mods, m)
		index[file] = i
		if strings.HasSuffix(file, ".json") {
			return i, nil
		}
		for _, sm := range requireCall.FindAllSubmatch(stripComments(src), -1) {
			spec := string(sm[1]) + string(sm[2])
			if _, done := m.deps[spec]; done {
				continue
			}
			dep, err := resolveRequire(fsys, path.Dir(file), spec)
			if err != nil {
				return 0, fmt.Errorf("%s: require(%q): %w", file, spec, err)
			}
			j, err := load(dep)
			if err != nil {
				return 0, err
			}
			m.deps[spec] = j
		}
		return i, nil
	}
	if _, err := load(filepath.ToSlash(entry)); err != nil {
		return nil, err
	}

	var b bytes.Buffer
	fmt.Fprintf(&b, "/* %s: CommonJS bundle of %s and its dependencies, made by examples/webphone. */\n", global, entry)
	b.WriteString("(function () {\n\"use strict\";\nvar defs = [\n")
	for i, m := range mods {
		deps, _ := json.Marshal(m.deps)
		fmt.Fprintf(&b, "/* %d: %s */ [%s, function (require, module, exports) {\n", i, m.file, deps)
		if strings.HasSuffix(m.file, ".json") {
			b.WriteString("module.exports = ")
			b.Write(bytes.TrimSpace(m.src))
			b.WriteString(";\n")
		} else {
			b.Write(m.src)
			b.WriteString("\n")
		}
		b.WriteString("}],\n")
	}
	b.WriteString(`];
var cache = [];
function load(i) {
	if (cache[i]) return cache[i].exports;
	var module = { exports: {} };
	cache[i] = module;
	var deps = defs[i][0];
	defs[i][1].call(module.exports, function (name) {
		if (!(name in deps)) throw new Error("require(" + JSON.stringify(name) + "): not in the bundle");
		return load(deps[name]);
	}, module, module.exports);
	return module.exports;
}
`)
	fmt.Fprintf(&b, "globalThis[%s] = load(0);\n})();\n", strconv.Quote(global))
	return b.Bytes(), nil
}

// resolveRequire resolves a require argument from the directory dir, both
// relative to the fs root, as Node does for the cases JsSIP needs.
func resolveRequire(fsys fs.FS, dir, spec string) (string, error) {
	if strings.HasPrefix(spec, "./") || strings.HasPrefix(spec, "../") || spec == "." || spec == ".." {
		p := path.Join(dir, spec)
		if strings.HasPrefix(p, "../") || p == ".." {
			return "", errors.New("outside the bundle root")
		}
		return resolvePath(fsys, p)
	}
	// A package: look in node_modules of dir and of each parent.
	for d := dir; ; d = path.Dir(d) {
		pkg := path.Join(d, "node_modules", spec)
		if d == "." {
			pkg = path.Join("node_modules", spec)
		}
		if st, err := fs.Stat(fsys, pkg); err == nil && st.IsDir() {
			return resolvePackage(fsys, pkg)
		}
		if d == "." || d == "/" {
			break
		}
	}
	return "", errors.New("package not found in node_modules")
}

// resolvePackage resolves a package directory by its package.json: a string
// "browser" field first, then "main", then index.js.
func resolvePackage(fsys fs.FS, pkg string) (string, error) {
	var meta struct {
		Main    string          `json:"main"`
		Browser json.RawMessage `json:"browser"`
	}
	if data, err := fs.ReadFile(fsys, path.Join(pkg, "package.json")); err == nil {
		_ = json.Unmarshal(data, &meta)
	}
	var browser string
	_ = json.Unmarshal(meta.Browser, &browser) // an object form is ignored
	for _, main := range []string{browser, meta.Main} {
		if main != "" {
			if f, err := resolvePath(fsys, path.Join(pkg, main)); err == nil {
				return f, nil
			}
		}
	}
	return resolvePath(fsys, pkg)
}

// resolvePath resolves a module path as a file (as is, .js, .json) or a
// directory (its index.js or package.json).
func resolvePath(fsys fs.FS, p string) (string, error) {
	for _, f := range []string{p, p + ".js", p + ".json"} {
		if st, err := fs.Stat(fsys, f); err == nil && !st.IsDir() {
			return f, nil
		}
	}
	if st, err := fs.Stat(fsys, p); err == nil && st.IsDir() {
		if _, err := fs.Stat(fsys, path.Join(p, "package.json")); err == nil {
			var meta struct {
				Main string `json:"main"`
			}
			data, _ := fs.ReadFile(fsys, path.Join(p, "package.json"))
			if json.Unmarshal(data, &meta) == nil && meta.Main != "" {
				if f, err := resolvePath(fsys, path.Join(p, meta.Main)); err == nil {
					return f, nil
				}
			}
		}
		if f := path.Join(p, "index.js"); fileExists(fsys, f) {
			return f, nil
		}
	}
	return "", fs.ErrNotExist
}

func fileExists(fsys fs.FS, f string) bool {
	st, err := fs.Stat(fsys, f)
	return err == nil && !st.IsDir()
}

// stripComments blanks // and /* */ comments outside string literals, so
// that a require() in a comment is not followed. Regular expression
// literals are not recognised; in the code it is used on a / inside one
// at worst hides a require on the same line, which the build then misses
// and the page reports at run time.
func stripComments(src []byte) []byte {
	out := make([]byte, len(src))
	copy(out, src)
	var quote byte
	for i := 0; i < len(out); i++ {
		c := out[i]
		switch {
		case quote != 0:
			if c == '\\' {
				i++
			} else if c == quote || c == '\n' && quote != '`' {
				quote = 0
			}
		case c == '\'' || c == '"' || c == '`':
			quote = c
		case c == '/' && i+1 < len(out) && out[i+1] == '/':
			for ; i < len(out) && out[i] != '\n'; i++ {
				out[i] = ' '
			}
		case c == '/' && i+1 < len(out) && out[i+1] == '*':
			end := bytes.Index(out[i+2:], []byte("*/"))
			stop := len(out)
			if end >= 0 {
				stop = i + 2 + end + 2
			}
			for ; i < stop; i++ {
				if out[i] != '\n' {
					out[i] = ' '
				}
			}
			i--
		}
	}
	return out
}
