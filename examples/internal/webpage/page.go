// Package webpage serves the web phone page (examples/webphone/web) for the
// examples that offer it — examples/webphone and examples/sipgoproxy — so
// that they share one page instead of copies: its files, JsSIP bundled from
// the page's node_modules, and the headers they go out with.
package webpage

import (
	"bytes"
	"compress/gzip"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// JsSIPEntry is JsSIP's CommonJS entry module, relative to the web dir.
const JsSIPEntry = "node_modules/jssip/lib/JsSIP.js"

// NPMHint tells how to install the page's packages.
const NPMHint = "run: npm ci --prefix examples/webphone/web (make demo does it)"

// DefaultDir is the page's directory from the repository's root.
const DefaultDir = "examples/webphone/web"

// files are the files of the web dir that are served, by URL path. Nothing
// else of the directory (node_modules, package.json) is.
var files = map[string]string{
	"/":          "index.html",
	"/app.js":    "app.js",
	"/style.css": "style.css",
}

// Page serves the page from Dir: index.html at /, app.js, style.css and
// /jssip.js (JsSIP bundled once, gzip when asked). The page itself asks the
// server for /api/config, /api/online and /api/connections and connects to
// the WebSocket path that /api/config names.
type Page struct {
	Dir string
	Log *slog.Logger

	mu     sync.Mutex
	bundle []byte // JsSIP for the page, once built
	gz     []byte // the same, gzip-compressed
}

// Register adds the page's routes to mux.
func (p *Page) Register(mux *http.ServeMux) {
	for path, name := range files {
		pattern := "GET " + path
		if path == "/" {
			pattern = "GET /{$}"
		}
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			Headers(w)
			http.ServeFile(w, r, filepath.Join(p.Dir, name))
		})
	}
	mux.HandleFunc("GET /jssip.js", p.serveJsSIP)
}

// Headers sets the page's security and cache headers on w.
func Headers(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
}

// BuildJsSIP builds the JsSIP bundle once it can: at start, and again on a
// request while node_modules is missing.
func (p *Page) BuildJsSIP() ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bundle != nil {
		return p.bundle, nil
	}
	start := time.Now()
	b, err := Bundle(p.Dir, JsSIPEntry, "JsSIP")
	if err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	_, _ = zw.Write(b)
	_ = zw.Close()
	p.bundle, p.gz = b, gz.Bytes()
	if p.Log != nil {
		p.Log.Info("JsSIP bundled for the page", "bytes", len(b), "gzip", gz.Len(), "took", time.Since(start).Round(time.Millisecond))
	}
	return b, nil
}

func (p *Page) serveJsSIP(w http.ResponseWriter, r *http.Request) {
	b, err := p.BuildJsSIP()
	if err != nil {
		if p.Log != nil {
			p.Log.Warn("JsSIP bundle unavailable", "err", err)
		}
		http.Error(w, "JsSIP is not installed: "+NPMHint+"\n("+err.Error()+")", http.StatusServiceUnavailable)
		return
	}
	Headers(w)
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("Vary", "Accept-Encoding")
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Encoding", "gzip")
		p.mu.Lock()
		b = p.gz
		p.mu.Unlock()
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

// DirOK reports whether dir looks like the page's directory.
func DirOK(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "index.html"))
	return err == nil
}
