package main

import (
	"cmp"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sipws/sipws"
	"github.com/sipws/sipws/examples/internal/webpage"
)

// site serves the page, the JsSIP bundle and the JSON API, and mounts the
// sipws Server at /ws.
type site struct {
	page  *webpage.Page
	ws    *sipws.Server
	proxy *proxy
	log   *slog.Logger
}

func (s *site) handler() http.Handler {
	mux := http.NewServeMux()
	s.page.Register(mux)
	mux.HandleFunc("GET /api/config", s.serveConfig)
	mux.HandleFunc("GET /api/online", s.serveOnline)
	mux.Handle("/ws", s.ws)
	return mux
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
	// Auth is true when users must prove who they are (a users file,
	// digest authentication); false in open mode, where anyone may
	// register as any name.
	Auth bool `json:"auth"`
}

func (s *site) serveConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, configJSON{Domain: s.proxy.domain, WSPath: "/ws", Version: sipws.Version, Auth: s.proxy.auth != nil})
}

// Page sizes of the JSON lists.
const (
	onlinePageDefault = 100
	onlinePageMax     = 200
	adminPageDefault  = 100
	adminPageMax      = 1000
)

// pageLimit reads the limit query parameter: def when absent, at most max;
// ok is false for a malformed one.
func pageLimit(r *http.Request, def, maxLimit int) (int, bool) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, false
	}
	return min(n, maxLimit), true
}

// serveOnline is the public /api/online: the names of the registered
// users, what the page needs to offer a call or a chat, a page at a time
// (?after=NAME&limit=N; next is the after of the next page, "" at the end).
// Contacts, instances, user agents and connections are on the -admin
// listener only.
func (s *site) serveOnline(w http.ResponseWriter, r *http.Request) {
	limit, ok := pageLimit(r, onlinePageDefault, onlinePageMax)
	if !ok {
		http.Error(w, "limit: want a positive number", http.StatusBadRequest)
		return
	}
	users, total := s.proxy.reg.users(strings.ToLower(r.URL.Query().Get("after")), limit)
	out := struct {
		Domain string   `json:"domain"`
		Users  []string `json:"users"`
		Total  int      `json:"total"`
		Next   string   `json:"next"`
	}{Domain: s.proxy.domain, Users: users, Total: total}
	if out.Users == nil {
		out.Users = []string{}
	}
	if len(users) == limit {
		out.Next = users[len(users)-1]
	}
	writeJSON(w, out)
}

// adminRoutes adds the operator's views to the -admin listener's mux:
// /api/connections (Registry.Dump, paged: ?offset=N&limit=N) and
// /api/bindings (every binding with contact, instance, user agent and
// connection, paged: ?after_user=U&after_key=K&limit=N). As for /RPC, a
// request must name a loopback address, localhost or one of hosts in its
// Host header (421 otherwise: DNS rebinding).
func (s *site) adminRoutes(mux *http.ServeMux, hosts ...string) {
	mux.HandleFunc("GET /api/connections", webpage.AdminOnly(s.serveConnections, hosts...))
	mux.HandleFunc("GET /api/bindings", webpage.AdminOnly(s.serveBindings, hosts...))
}

// connJSON is one connection of /api/connections.
type connJSON struct {
	ID           sipws.ConnID `json:"id"`
	Remote       string       `json:"remote"`
	Local        string       `json:"local"`
	Transport    string       `json:"transport"`
	HTTP         string       `json:"http"` // what carried the WebSocket: "HTTP/1.1", or "HTTP/2" (RFC 8441)
	Subprotocol  string       `json:"subprotocol"`
	State        string       `json:"state"`
	Opened       time.Time    `json:"opened"`
	LastUsed     time.Time    `json:"last_used"`
	IdleMS       int64        `json:"idle_ms"`
	AwaitingPong bool         `json:"awaiting_pong"`
	RTTMS        float64      `json:"rtt_ms"`
	Origin       string       `json:"origin,omitempty"`
}

// serveConnections lists the live connections, by ID, a page at a time.
func (s *site) serveConnections(w http.ResponseWriter, r *http.Request) {
	limit, ok := pageLimit(r, adminPageDefault, adminPageMax)
	offset, err := strconv.Atoi(cmp.Or(r.URL.Query().Get("offset"), "0"))
	if !ok || err != nil || offset < 0 {
		http.Error(w, "limit, offset: want numbers", http.StatusBadRequest)
		return
	}
	now := time.Now()
	d := s.ws.Registry().Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: limit, Offset: offset})
	out := struct {
		Total       int        `json:"total"`
		Connections []connJSON `json:"connections"`
	}{Total: d.Total, Connections: []connJSON{}}
	for _, ci := range d.Conns {
		tr := "ws"
		if ci.Secure {
			tr = "wss"
		}
		cj := connJSON{
			ID: ci.ID, Remote: ci.RemoteAddr.String(), Local: ci.LocalAddr.String(),
			Transport: tr, HTTP: "HTTP/1.1", Subprotocol: ci.Subprotocol.String(), State: ci.State,
			Opened: ci.Opened, LastUsed: ci.LastUsed, IdleMS: now.Sub(ci.LastUsed).Milliseconds(),
			AwaitingPong: ci.AwaitingPong, RTTMS: float64(ci.RTT.Microseconds()) / 1000,
		}
		if ci.HTTP2 {
			cj.HTTP = "HTTP/2"
		}
		if c, ok := s.ws.Registry().Get(ci.ID); ok {
			cj.Origin = c.Header().Get("Origin")
		}
		out.Connections = append(out.Connections, cj)
	}
	writeJSON(w, out)
}

// bindingJSON is one binding of /api/bindings.
type bindingJSON struct {
	User      string       `json:"user"`
	Key       string       `json:"key"`
	Conn      sipws.ConnID `json:"conn"`
	Contact   string       `json:"contact"`
	ExpiresIn int          `json:"expires_in"`
	Instance  string       `json:"instance,omitempty"`
	RegID     int          `json:"reg_id,omitempty"`
	Outbound  bool         `json:"outbound"`
	UserAgent string       `json:"user_agent,omitempty"`
}

// serveBindings lists the bindings by user then key, a page at a time.
func (s *site) serveBindings(w http.ResponseWriter, r *http.Request) {
	limit, ok := pageLimit(r, adminPageDefault, adminPageMax)
	if !ok {
		http.Error(w, "limit: want a positive number", http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	now := time.Now()
	bs, total := s.proxy.reg.bindings(strings.ToLower(q.Get("after_user")), q.Get("after_key"), limit, now)
	out := struct {
		Total    int           `json:"total"`
		Bindings []bindingJSON `json:"bindings"`
	}{Total: total, Bindings: []bindingJSON{}}
	for _, b := range bs {
		out.Bindings = append(out.Bindings, bindingJSON{
			User: b.user, Key: b.key, Conn: b.conn, Contact: b.contact.Address.String(),
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
