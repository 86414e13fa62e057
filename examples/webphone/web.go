package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sipws/sipws"
)

// jssipEntry is JsSIP's CommonJS entry module, relative to the web dir.
const jssipEntry = "node_modules/jssip/lib/JsSIP.js"

// npmHint tells how to install the page's packages.
const npmHint = "run: npm ci --prefix examples/webphone/web (make demo does it)"

// site serves the page, the JsSIP bundle and the JSON API, and mounts the
// sipws Server at /ws.
type site struct {
	dir   string
	ws    *sipws.Server
	proxy *proxy
	log   *slog.Logger

	mu     sync.Mutex
	bundle []byte // JsSIP for the page, once built
	gz     []byte // the same, gzip-compressed
}

// pageFiles are the files of the web dir that are served, by URL path.
// Nothing else of the directory (node_modules, package.json) is.
var pageFiles = map[string]string{
	"/":          "index.html",
	"/app.js":    "app.js",
	"/style.css": "style.css",
}

func (s *site) handler() http.Handler {
	mux := http.NewServeMux()
	for p, name := range pageFiles {
		pattern := "GET " + p
		if p == "/" {
			pattern = "GET /{$}"
		}
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			pageHeaders(w)
			http.ServeFile(w, r, filepath.Join(s.dir, name))
		})
	}
	mux.HandleFunc("GET /jssip.js", s.serveJsSIP)
	mux.HandleFunc("GET /api/config", s.serveConfig)
	mux.HandleFunc("GET /api/connections", s.serveConnections)
	mux.HandleFunc("GET /api/online", s.serveOnline)
	mux.Handle("/ws", s.ws)
	return mux
}

func pageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
}

// buildJsSIP builds the JsSIP bundle once it can: at start, and again on a
// request while node_modules is missing.
func (s *site) buildJsSIP() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bundle != nil {
		return s.bundle, nil
	}
	start := time.Now()
	b, err := bundleCommonJS(s.dir, jssipEntry, "JsSIP")
	if err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	_, _ = zw.Write(b)
	_ = zw.Close()
	s.bundle, s.gz = b, gz.Bytes()
	s.log.Info("JsSIP bundled for the page", "bytes", len(b), "gzip", gz.Len(), "took", time.Since(start).Round(time.Millisecond))
	return b, nil
}

func (s *site) serveJsSIP(w http.ResponseWriter, r *http.Request) {
	b, err := s.buildJsSIP()
	if err != nil {
		s.log.Warn("JsSIP bundle unavailable", "err", err)
		http.Error(w, "JsSIP is not installed: "+npmHint+"\n("+err.Error()+")", http.StatusServiceUnavailable)
		return
	}
	pageHeaders(w)
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("Vary", "Accept-Encoding")
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Encoding", "gzip")
		b = s.gz
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// configJSON is /api/config: what the page needs to know.
type configJSON struct {
	Domain  string `json:"domain"`
	WSPath  string `json:"ws_path"`
	Version string `json:"version"`
}

func (s *site) serveConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, configJSON{Domain: s.proxy.domain, WSPath: "/ws", Version: sipws.Version})
}

// connJSON is one connection of /api/connections.
type connJSON struct {
	ID           sipws.ConnID `json:"id"`
	Remote       string       `json:"remote"`
	Local        string       `json:"local"`
	Transport    string       `json:"transport"`
	Subprotocol  string       `json:"subprotocol"`
	State        string       `json:"state"`
	Opened       time.Time    `json:"opened"`
	LastUsed     time.Time    `json:"last_used"`
	IdleMS       int64        `json:"idle_ms"`
	AwaitingPong bool         `json:"awaiting_pong"`
	RTTMS        float64      `json:"rtt_ms"`
	Users        []string     `json:"users"`
}

// serveConnections lists every live connection (Registry.Dump, all of
// them) with the users registered through it.
func (s *site) serveConnections(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	users := make(map[sipws.ConnID][]string)
	for _, b := range s.proxy.reg.snapshot(now) {
		if !slices.Contains(users[b.conn], b.user) {
			users[b.conn] = append(users[b.conn], b.user)
		}
	}
	d := s.ws.Registry().Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: -1})
	out := struct {
		Total       int        `json:"total"`
		Connections []connJSON `json:"connections"`
	}{Total: d.Total, Connections: []connJSON{}}
	for _, ci := range d.Conns {
		tr := "ws"
		if ci.Secure {
			tr = "wss"
		}
		u := users[ci.ID]
		if u == nil {
			u = []string{}
		}
		out.Connections = append(out.Connections, connJSON{
			ID: ci.ID, Remote: ci.RemoteAddr.String(), Local: ci.LocalAddr.String(),
			Transport: tr, Subprotocol: ci.Subprotocol.String(), State: ci.State,
			Opened: ci.Opened, LastUsed: ci.LastUsed, IdleMS: now.Sub(ci.LastUsed).Milliseconds(),
			AwaitingPong: ci.AwaitingPong, RTTMS: float64(ci.RTT.Microseconds()) / 1000,
			Users: u,
		})
	}
	writeJSON(w, out)
}

// bindingJSON is one binding of /api/online.
type bindingJSON struct {
	Conn      sipws.ConnID `json:"conn"`
	Contact   string       `json:"contact"`
	ExpiresIn int          `json:"expires_in"`
	Instance  string       `json:"instance,omitempty"`
	RegID     int          `json:"reg_id,omitempty"`
	Outbound  bool         `json:"outbound"`
	UserAgent string       `json:"user_agent,omitempty"`
}

// serveOnline lists the registered users and their bindings.
func (s *site) serveOnline(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	type userJSON struct {
		User     string        `json:"user"`
		Bindings []bindingJSON `json:"bindings"`
	}
	out := struct {
		Domain string     `json:"domain"`
		Users  []userJSON `json:"users"`
	}{Domain: s.proxy.domain, Users: []userJSON{}}
	for _, b := range s.proxy.reg.snapshot(now) {
		if n := len(out.Users); n == 0 || !strings.EqualFold(out.Users[n-1].User, b.user) {
			out.Users = append(out.Users, userJSON{User: b.user})
		}
		u := &out.Users[len(out.Users)-1]
		u.Bindings = append(u.Bindings, bindingJSON{
			Conn: b.conn, Contact: b.contact.Address.String(),
			ExpiresIn: int((b.expires.Sub(now) + time.Second/2) / time.Second),
			Instance:  b.instance, RegID: b.regID, Outbound: b.outbound, UserAgent: b.agent,
		})
	}
	writeJSON(w, out)
}

// sameOrigin is Config.CheckOrigin: a browser's handshake must come from a
// page of this server (Origin's host:port equal to Host); a client that
// sends no Origin (not a browser: Node, a SIP server) is let through.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// webDirOK reports whether dir looks like the page's directory.
func webDirOK(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "index.html"))
	return err == nil
}
