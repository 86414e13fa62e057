package main

import (
	"cmp"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sipws/sipws"
	"github.com/sipws/sipws/examples/internal/webpage"
)

// The JSON API, in the shapes of examples/webphone's: the page reads the
// public /api/config and /api/online; the operator's views,
// /api/connections and /api/bindings, are on the -admin listener only.

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// serveConfig is /api/config. Auth is false: anyone may register as any
// name (a demo for a trusted network).
func (a *app) serveConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, struct {
		Domain  string `json:"domain"`
		WSPath  string `json:"ws_path"`
		Version string `json:"version"`
		Auth    bool   `json:"auth"`
	}{a.proxy.domain, "/ws", sipws.Version, false})
}

// Page sizes of the JSON lists.
const (
	onlinePageDefault = 100
	onlinePageMax     = 200
	adminPageDefault  = 100
	adminPageMax      = 1000
)

// pageLimit reads the limit query parameter: def when absent, at most
// maxLimit; ok is false for a malformed one.
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

// serveOnline is the public /api/online: the names of the registered users,
// a page at a time (?after=NAME&limit=N; next is the after of the next
// page, "" at the end).
func (a *app) serveOnline(w http.ResponseWriter, r *http.Request) {
	limit, ok := pageLimit(r, onlinePageDefault, onlinePageMax)
	if !ok {
		http.Error(w, "limit: want a positive number", http.StatusBadRequest)
		return
	}
	var names []string
	for _, b := range a.proxy.reg.snapshot(time.Now()) {
		if n := strings.ToLower(b.user); len(names) == 0 || names[len(names)-1] != n {
			names = append(names, n)
		}
	}
	after := strings.ToLower(r.URL.Query().Get("after"))
	i, _ := slices.BinarySearch(names, after)
	if i < len(names) && names[i] == after {
		i++
	}
	page := names[i:min(len(names), i+limit)]
	out := struct {
		Domain string   `json:"domain"`
		Users  []string `json:"users"`
		Total  int      `json:"total"`
		Next   string   `json:"next"`
	}{Domain: a.proxy.domain, Users: append([]string{}, page...), Total: len(names)}
	if len(page) == limit && i+limit < len(names) {
		out.Next = page[len(page)-1]
	}
	writeJSON(w, out)
}

// adminRoutes adds the operator's views to the -admin listener's mux. As
// for /RPC, a request must name a loopback address, localhost or one of
// hosts in its Host header (421 otherwise: DNS rebinding).
func (a *app) adminRoutes(mux *http.ServeMux, hosts ...string) {
	mux.HandleFunc("GET /api/connections", webpage.AdminOnly(a.serveConnections, hosts...))
	mux.HandleFunc("GET /api/bindings", webpage.AdminOnly(a.serveBindings, hosts...))
}

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
	Users        []string     `json:"users"`
}

// serveConnections lists the live connections, by ID, a page at a time
// (?offset=N&limit=N), with the users registered through each.
func (a *app) serveConnections(w http.ResponseWriter, r *http.Request) {
	limit, ok := pageLimit(r, adminPageDefault, adminPageMax)
	offset, err := strconv.Atoi(cmp.Or(r.URL.Query().Get("offset"), "0"))
	if !ok || err != nil || offset < 0 {
		http.Error(w, "limit, offset: want numbers", http.StatusBadRequest)
		return
	}
	now := time.Now()
	users := make(map[sipws.ConnID][]string)
	for _, b := range a.proxy.reg.snapshot(now) {
		if id := b.conn.ID(); !slices.Contains(users[id], b.user) {
			users[id] = append(users[id], b.user)
		}
	}
	d := a.ws.Registry().Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: limit, Offset: offset})
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
			Users: users[ci.ID],
		}
		if ci.HTTP2 {
			cj.HTTP = "HTTP/2"
		}
		if cj.Users == nil {
			cj.Users = []string{}
		}
		if c, ok := a.ws.Registry().Get(ci.ID); ok {
			cj.Origin = c.Header().Get("Origin")
		}
		out.Connections = append(out.Connections, cj)
	}
	writeJSON(w, out)
}

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

// serveBindings lists the bindings by user then key, a page at a time
// (?after_user=U&after_key=K&limit=N).
func (a *app) serveBindings(w http.ResponseWriter, r *http.Request) {
	limit, ok := pageLimit(r, adminPageDefault, adminPageMax)
	if !ok {
		http.Error(w, "limit: want a positive number", http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	afterUser, afterKey := strings.ToLower(q.Get("after_user")), q.Get("after_key")
	now := time.Now()
	all := a.proxy.reg.snapshot(now)
	out := struct {
		Total    int           `json:"total"`
		Bindings []bindingJSON `json:"bindings"`
	}{Total: len(all), Bindings: []bindingJSON{}}
	for _, b := range all {
		u := strings.ToLower(b.user)
		if afterUser != "" && (u < afterUser || (u == afterUser && b.key <= afterKey)) {
			continue
		}
		if len(out.Bindings) == limit {
			break
		}
		out.Bindings = append(out.Bindings, bindingJSON{
			User: b.user, Key: b.key, Conn: b.conn.ID(), Contact: b.contact.String(),
			ExpiresIn: int((b.expires.Sub(now) + time.Second/2) / time.Second),
			Instance:  b.instance, RegID: b.regID, Outbound: b.instance != "" && b.regID > 0, UserAgent: b.agent,
		})
	}
	writeJSON(w, out)
}
