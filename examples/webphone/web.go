package main

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
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
	mux.HandleFunc("GET /api/connections", s.serveConnections)
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
	d := s.ws.Registry().Dump(sipws.DumpByID, -1)
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
