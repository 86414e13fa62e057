package main

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sipws/sipws"
)

// Registration limits (seconds). A client that asks for more gets maxExpires;
// one that sends neither an expires parameter nor an Expires header gets
// defaultExpires (RFC 3261 §10.3 step 7).
const (
	defaultExpires = 3600
	maxExpires     = 3600
)

// binding is one registered contact of a user: where requests for the user
// go. In this demo every binding is tied to the WebSocket connection its
// REGISTER came on — a browser cannot be reached any other way — and it
// ends when that connection does.
type binding struct {
	user     string            // the AOR's user part (the AOR is sip:user@domain)
	key      string            // the binding's identity (see bindingKey)
	contact  sip.ContactHeader // as registered, without its expires parameter
	conn     sipws.ConnID      // the flow requests for this contact take
	instance string            // +sip.instance, "" when none
	regID    int               // reg-id (RFC 5626), 0 when none
	outbound bool              // registered with RFC 5626 Outbound
	callID   string
	cseq     uint32
	agent    string // User-Agent of the REGISTER
	expires  time.Time
	updated  time.Time
}

// bindingKey names a binding within its AOR: the instance and reg-id when
// the UA sent them (RFC 5626 §6: a reconnect replaces the old binding), the
// instance alone without reg-id (RFC 5627), else the contact URI (RFC 3261
// §10.3).
func bindingKey(instance string, regID int, contactURI string) string {
	switch {
	case instance != "" && regID > 0:
		return "instance:" + strings.ToLower(instance) + ";reg-id=" + itoa(regID)
	case instance != "":
		return "instance:" + strings.ToLower(instance)
	}
	return "uri:" + contactURI
}

// registrar is the location service: users to bindings. It is safe for
// concurrent use.
type registrar struct {
	mu    sync.Mutex
	users map[string]map[string]*binding // user (lower-case) -> key -> binding
}

func newRegistrar() *registrar {
	return &registrar{users: make(map[string]map[string]*binding)}
}

func userKey(user string) string { return strings.ToLower(user) }

// stale reports an existing binding of user with the same Call-ID and a
// CSeq that is not lower: a REGISTER out of order, to be refused without
// changing anything (RFC 3261 §10.3 step 7).
func (r *registrar) stale(user, key, callID string, cseq uint32) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.users[userKey(user)][key]
	return old != nil && old.callID == callID && cseq <= old.cseq
}

// put adds or refreshes a binding.
func (r *registrar) put(b *binding) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := userKey(b.user)
	m := r.users[k]
	if m == nil {
		m = make(map[string]*binding)
		r.users[k] = m
	}
	m[b.key] = b
}

// remove deletes one binding of user.
func (r *registrar) remove(user, key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := userKey(user)
	if m := r.users[k]; m != nil {
		delete(m, key)
		if len(m) == 0 {
			delete(r.users, k)
		}
	}
}

// removeAll deletes every binding of user (Contact: *).
func (r *registrar) removeAll(user string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.users, userKey(user))
}

// dropConn deletes every binding whose flow is connection id and returns
// how many it deleted.
func (r *registrar) dropConn(id sipws.ConnID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, m := range r.users {
		for key, b := range m {
			if b.conn == id {
				delete(m, key)
				n++
			}
		}
		if len(m) == 0 {
			delete(r.users, k)
		}
	}
	return n
}

// expire deletes the bindings that expired before now.
func (r *registrar) expire(now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, m := range r.users {
		for key, b := range m {
			if !b.expires.After(now) {
				delete(m, key)
				n++
			}
		}
		if len(m) == 0 {
			delete(r.users, k)
		}
	}
	return n
}

// lookup returns copies of the live bindings of user, most recently
// registered first.
func (r *registrar) lookup(user string, now time.Time) []binding {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []binding
	for _, b := range r.users[userKey(user)] {
		if b.expires.After(now) {
			out = append(out, *b)
		}
	}
	slices.SortFunc(out, func(a, b binding) int {
		return cmp.Or(b.updated.Compare(a.updated), cmp.Compare(a.key, b.key))
	})
	return out
}

// byContactHost returns the live binding whose contact URI has host (the
// random "xxxx.invalid" host browser phones put in their Contact).
func (r *registrar) byContactHost(host string, now time.Time) (binding, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.users {
		for _, b := range m {
			if b.expires.After(now) && strings.EqualFold(b.contact.Address.Host, host) {
				return *b, true
			}
		}
	}
	return binding{}, false
}

// snapshot returns copies of every live binding, by user then key.
func (r *registrar) snapshot(now time.Time) []binding {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []binding
	for _, m := range r.users {
		for _, b := range m {
			if b.expires.After(now) {
				out = append(out, *b)
			}
		}
	}
	slices.SortFunc(out, func(a, b binding) int {
		return cmp.Or(cmp.Compare(userKey(a.user), userKey(b.user)), cmp.Compare(a.key, b.key))
	})
	return out
}
