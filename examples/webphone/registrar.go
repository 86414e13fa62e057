package main

import (
	"cmp"
	"errors"
	"slices"
	"sort"
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

// Caps of the location service. A browser phone registers one binding per
// connection (JsSIP, SIP.js); a few more are allowed for other clients.
// Beyond them a REGISTER is refused with 403 and changes nothing.
const (
	maxBindingsPerConn = 10
	maxBindingsPerUser = 32
)

// errTooManyBindings is put's refusal of a binding beyond the caps.
var errTooManyBindings = errors.New("too many bindings")

// binding is one registered contact of a user: where requests for the user
// go. In this demo every binding is tied to the WebSocket connection its
// REGISTER came on — a browser cannot be reached any other way — and it
// ends when that connection does. Requests reach it by that connection
// (its flow), never by the host of its Contact.
type binding struct {
	user     string            // the AOR's user part (the AOR is sip:user@domain)
	key      string            // the binding's identity within the AOR (see bindingKey)
	contact  sip.ContactHeader // as registered, without its expires parameter
	conn     sipws.ConnID      // the flow requests for this contact take
	instance string            // +sip.instance, "" when none
	regID    int               // reg-id (RFC 5626), 0 when none
	outbound bool              // registered with RFC 5626 Outbound
	callID   string
	cseq     uint32
	agent    string // User-Agent of the REGISTER
	node     string // in a cluster: the node that holds conn, and its run
	run      string
	path     string // in a cluster: the Path, a flow-token URI of node's -sip-addr
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

// connScopedKey is the key of a binding that may not replace the binding
// of the same key held by another connection (in open mode, where nothing
// proves that both connections are the same user): the connection's id
// joins the key, so both bindings live side by side.
func connScopedKey(key string, id sipws.ConnID) string {
	return key + "#conn=" + itoa(int(id))
}

// contactKey is the index key of a contact URI: its user and host, in
// lower case (the parameters and port are not compared).
func contactKey(u *sip.Uri) string {
	return strings.ToLower(u.User) + "@" + strings.ToLower(strings.TrimSuffix(u.Host, "."))
}

// locationStore is the location service: users to bindings. The proxy
// uses it only through these methods, so that a shared store (Redis, for
// several proxy nodes) can replace the in-memory one; a binding then also
// needs the node its connection is on. Every method is safe for concurrent
// use and returns copies.
type locationStore interface {
	// get returns the binding of user with key.
	get(user, key string) (binding, bool)
	// put adds or replaces the binding (user, b.key). A new binding beyond
	// maxBindingsPerConn on its connection or maxBindingsPerUser for its
	// user fails with errTooManyBindings.
	put(b binding) error
	// remove deletes the binding (user, key) and reports whether there was
	// one.
	remove(user, key string) (binding, bool)
	// removeUser deletes the bindings of user made on connection conn, or
	// every binding of user when conn is 0 (Contact: *).
	removeUser(user string, conn sipws.ConnID) []binding
	// dropConn deletes every binding made on connection id.
	dropConn(id sipws.ConnID) []binding
	// expire deletes the bindings that expired before now.
	expire(now time.Time) []binding
	// lookup returns the live bindings of user, most recent first.
	lookup(user string, now time.Time) []binding
	// byContact returns the live bindings whose Contact has the user and
	// host of u.
	byContact(u *sip.Uri, now time.Time) []binding
	// users returns up to limit user names (lower-case) after the name
	// after, in order, and the number of users.
	users(after string, limit int) ([]string, int)
	// bindings returns up to limit bindings after (user, key) in order of
	// user then key, and the number of bindings.
	bindings(afterUser, afterKey string, limit int, now time.Time) ([]binding, int)
}

// memStore is the in-memory locationStore, indexed by user, by connection
// and by contact (user@host), so that no lookup scans every binding.
type memStore struct {
	mu      sync.Mutex
	byUser  map[string]map[string]*binding // user (lower-case) -> key -> binding
	byConn  map[sipws.ConnID]map[*binding]struct{}
	byURI   map[string]map[*binding]struct{}
	n       int
	names   []string // the users, sorted; rebuilt by users after a change
	namesOK bool
}

func newMemStore() *memStore {
	return &memStore{
		byUser: make(map[string]map[string]*binding),
		byConn: make(map[sipws.ConnID]map[*binding]struct{}),
		byURI:  make(map[string]map[*binding]struct{}),
	}
}

func userKey(user string) string { return strings.ToLower(user) }

func (s *memStore) get(user, key string) (binding, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.byUser[userKey(user)][key]; b != nil {
		return *b, true
	}
	return binding{}, false
}

func (s *memStore) put(nb binding) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := userKey(nb.user)
	m := s.byUser[u]
	old := m[nb.key]
	newOnConn := old == nil || old.conn != nb.conn
	if newOnConn && len(s.byConn[nb.conn]) >= maxBindingsPerConn {
		return errTooManyBindings
	}
	if old == nil && len(m) >= maxBindingsPerUser {
		return errTooManyBindings
	}
	if old != nil {
		s.unlinkLocked(old)
		m = s.byUser[u] // gone when old was the user's only binding
	}
	b := &nb
	if m == nil {
		m = make(map[string]*binding)
		s.byUser[u] = m
		s.namesOK = false
	}
	m[b.key] = b
	link(s.byConn, b.conn, b)
	link(s.byURI, contactKey(&b.contact.Address), b)
	s.n++
	return nil
}

func link[K comparable](idx map[K]map[*binding]struct{}, k K, b *binding) {
	set := idx[k]
	if set == nil {
		set = make(map[*binding]struct{})
		idx[k] = set
	}
	set[b] = struct{}{}
}

func unlink[K comparable](idx map[K]map[*binding]struct{}, k K, b *binding) {
	if set := idx[k]; set != nil {
		delete(set, b)
		if len(set) == 0 {
			delete(idx, k)
		}
	}
}

// unlinkLocked removes b from every index.
func (s *memStore) unlinkLocked(b *binding) {
	u := userKey(b.user)
	if m := s.byUser[u]; m != nil && m[b.key] == b {
		delete(m, b.key)
		if len(m) == 0 {
			delete(s.byUser, u)
			s.namesOK = false
		}
	}
	unlink(s.byConn, b.conn, b)
	unlink(s.byURI, contactKey(&b.contact.Address), b)
	s.n--
}

func (s *memStore) remove(user, key string) (binding, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.byUser[userKey(user)][key]
	if b == nil {
		return binding{}, false
	}
	s.unlinkLocked(b)
	return *b, true
}

func (s *memStore) removeUser(user string, conn sipws.ConnID) []binding {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []binding
	for _, b := range s.byUser[userKey(user)] {
		if conn == 0 || b.conn == conn {
			out = append(out, *b)
			s.unlinkLocked(b)
		}
	}
	return out
}

func (s *memStore) dropConn(id sipws.ConnID) []binding {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []binding
	for b := range s.byConn[id] {
		out = append(out, *b)
		s.unlinkLocked(b)
	}
	return out
}

func (s *memStore) expire(now time.Time) []binding {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []binding
	for _, m := range s.byUser {
		for _, b := range m {
			if !b.expires.After(now) {
				out = append(out, *b)
				s.unlinkLocked(b)
			}
		}
	}
	return out
}

// byRecency orders bindings most recently registered first.
func byRecency(a, b binding) int {
	return cmp.Or(b.updated.Compare(a.updated), cmp.Compare(a.key, b.key))
}

func (s *memStore) lookup(user string, now time.Time) []binding {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []binding
	for _, b := range s.byUser[userKey(user)] {
		if b.expires.After(now) {
			out = append(out, *b)
		}
	}
	slices.SortFunc(out, byRecency)
	return out
}

func (s *memStore) byContact(u *sip.Uri, now time.Time) []binding {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []binding
	for b := range s.byURI[contactKey(u)] {
		if b.expires.After(now) {
			out = append(out, *b)
		}
	}
	slices.SortFunc(out, byRecency)
	return out
}

func (s *memStore) users(after string, limit int) ([]string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.namesOK {
		// Sorted once per change of the set of users, not per request.
		s.names = s.names[:0]
		for u := range s.byUser {
			s.names = append(s.names, u)
		}
		slices.Sort(s.names)
		s.namesOK = true
	}
	names := s.names
	i := sort.SearchStrings(names, after)
	if i < len(names) && names[i] == after {
		i++
	}
	page := names[i:]
	if len(page) > limit {
		page = page[:limit]
	}
	return slices.Clone(page), len(names)
}

func (s *memStore) bindings(afterUser, afterKey string, limit int, now time.Time) ([]binding, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.byUser))
	for u := range s.byUser {
		if u >= afterUser {
			names = append(names, u)
		}
	}
	slices.Sort(names)
	var out []binding
	for _, u := range names {
		m := s.byUser[u]
		keys := make([]string, 0, len(m))
		for k := range m {
			if u != afterUser || k > afterKey {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			if len(out) == limit {
				return out, s.n
			}
			if b := m[k]; b.expires.After(now) {
				out = append(out, *b)
			}
		}
	}
	return out, s.n
}
