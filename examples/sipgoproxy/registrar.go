package main

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sipws/sipws"
)

// binding is one registered Contact of a user, reachable on conn.
type binding struct {
	user     string
	key      string // +sip.instance and reg-id, or the Contact URI
	contact  sip.Uri
	conn     *sipws.Conn
	expires  time.Time
	instance string
	regID    int
	agent    string
}

// registrar holds the bindings, by user (case-insensitive) and key.
type registrar struct {
	mu    sync.Mutex
	users map[string]map[string]*binding
}

func newRegistrar() *registrar { return &registrar{users: make(map[string]map[string]*binding)} }

// put adds or replaces a binding: a reconnect of the same instance and reg-id
// (RFC 5626) replaces the old connection's binding.
func (r *registrar) put(b *binding) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u := strings.ToLower(b.user)
	if r.users[u] == nil {
		r.users[u] = make(map[string]*binding)
	}
	r.users[u][b.key] = b
}

func (r *registrar) remove(user, key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u := strings.ToLower(user)
	delete(r.users[u], key)
	if len(r.users[u]) == 0 {
		delete(r.users, u)
	}
}

func (r *registrar) removeAll(user string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.users, strings.ToLower(user))
}

// dropConn removes every binding on connection id (it closed).
func (r *registrar) dropConn(id sipws.ConnID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for u, bs := range r.users {
		for k, b := range bs {
			if b.conn.ID() == id {
				delete(bs, k)
				n++
			}
		}
		if len(bs) == 0 {
			delete(r.users, u)
		}
	}
	return n
}

// lookup returns the live bindings of user, newest first.
func (r *registrar) lookup(user string, now time.Time) []binding {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []binding
	for k, b := range r.users[strings.ToLower(user)] {
		if !b.expires.After(now) {
			delete(r.users[strings.ToLower(user)], k)
			continue
		}
		out = append(out, *b)
	}
	slices.SortFunc(out, func(a, b binding) int { return b.expires.Compare(a.expires) })
	return out
}

// snapshot returns every live binding, by user.
func (r *registrar) snapshot(now time.Time) []binding {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []binding
	for _, bs := range r.users {
		for _, b := range bs {
			if b.expires.After(now) {
				out = append(out, *b)
			}
		}
	}
	slices.SortFunc(out, func(a, b binding) int {
		if c := strings.Compare(strings.ToLower(a.user), strings.ToLower(b.user)); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	return out
}
