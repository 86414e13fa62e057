package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sipws/sipws"
)

// The JSON API the web phone page reads (the same shapes as
// examples/webphone's).

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (a *app) serveConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, struct {
		Domain  string `json:"domain"`
		WSPath  string `json:"ws_path"`
		Version string `json:"version"`
	}{a.proxy.domain, "/ws", sipws.Version})
}

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

func (a *app) serveConnections(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	users := make(map[sipws.ConnID][]string)
	for _, b := range a.proxy.reg.snapshot(now) {
		if id := b.conn.ID(); !slices.Contains(users[id], b.user) {
			users[id] = append(users[id], b.user)
		}
	}
	d := a.ws.Registry().Dump(sipws.DumpByID, -1)
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
			AwaitingPong: ci.AwaitingPong, RTTMS: float64(ci.RTT.Microseconds()) / 1000, Users: u,
		})
	}
	writeJSON(w, out)
}

type bindingJSON struct {
	Conn      sipws.ConnID `json:"conn"`
	Contact   string       `json:"contact"`
	ExpiresIn int          `json:"expires_in"`
	Instance  string       `json:"instance,omitempty"`
	RegID     int          `json:"reg_id,omitempty"`
	Outbound  bool         `json:"outbound"`
	UserAgent string       `json:"user_agent,omitempty"`
}

func (a *app) serveOnline(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	type userJSON struct {
		User     string        `json:"user"`
		Bindings []bindingJSON `json:"bindings"`
	}
	out := struct {
		Domain string     `json:"domain"`
		Users  []userJSON `json:"users"`
	}{Domain: a.proxy.domain, Users: []userJSON{}}
	for _, b := range a.proxy.reg.snapshot(now) {
		if n := len(out.Users); n == 0 || !strings.EqualFold(out.Users[n-1].User, b.user) {
			out.Users = append(out.Users, userJSON{User: b.user})
		}
		u := &out.Users[len(out.Users)-1]
		u.Bindings = append(u.Bindings, bindingJSON{
			Conn: b.conn.ID(), Contact: b.contact.String(),
			ExpiresIn: int((b.expires.Sub(now) + time.Second/2) / time.Second),
			Instance:  b.instance, RegID: b.regID, Outbound: b.instance != "" && b.regID > 0, UserAgent: b.agent,
		})
	}
	writeJSON(w, out)
}
