package sipws

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

const registryShards = 64

// Registry holds a Server's live connections: those whose handshake completed
// and that have not ended. It is safe for concurrent use; lookups take one
// shard's read lock and never wait on a socket.
type Registry struct {
	srv    *Server
	shards [registryShards]struct {
		mu sync.RWMutex
		m  map[ConnID]*Conn
	}
	// routeMu guards the routing indexes and every Conn.routes.
	routeMu   sync.RWMutex
	instances map[instanceKey]*Conn
	sessions  map[string]*Conn
	// byAddr indexes the connections by remote address. Connections that
	// share one (NAT'd clients, clients forwarded by several proxies) form a
	// list through Conn.addrOlder, newest first; the map holds the newest.
	byAddr [registryShards]struct {
		mu sync.RWMutex
		m  map[netip.AddrPort]*Conn
	}
}

func (r *Registry) init(s *Server) {
	r.srv = s
	r.instances = make(map[instanceKey]*Conn)
	r.sessions = make(map[string]*Conn)
	for i := range r.shards {
		r.shards[i].m = make(map[ConnID]*Conn)
		r.byAddr[i].m = make(map[netip.AddrPort]*Conn)
	}
}

func addrShard(ap netip.AddrPort) int {
	a := ap.Addr().As16()
	return int((uint(ap.Port()) ^ uint(a[15]) ^ uint(a[14])<<3) % registryShards)
}

func (r *Registry) add(c *Conn) {
	sh := &r.shards[uint64(c.id)%registryShards]
	sh.mu.Lock()
	sh.m[c.id] = c
	sh.mu.Unlock()
	ah := &r.byAddr[addrShard(c.remote)]
	ah.mu.Lock()
	if older := ah.m[c.remote]; older != nil {
		c.addrOlder = older
		older.addrNewer = c
	}
	ah.m[c.remote] = c
	ah.mu.Unlock()
}

func (r *Registry) remove(c *Conn) {
	sh := &r.shards[uint64(c.id)%registryShards]
	sh.mu.Lock()
	delete(sh.m, c.id)
	sh.mu.Unlock()
	ah := &r.byAddr[addrShard(c.remote)]
	ah.mu.Lock()
	switch {
	case c.addrNewer != nil:
		c.addrNewer.addrOlder = c.addrOlder
	case c.addrOlder != nil:
		ah.m[c.remote] = c.addrOlder
	case ah.m[c.remote] == c:
		delete(ah.m, c.remote)
	}
	if c.addrOlder != nil {
		c.addrOlder.addrNewer = c.addrNewer
	}
	c.addrNewer, c.addrOlder = nil, nil
	ah.mu.Unlock()
}

// ByRemoteAddr returns the live connection from the remote address ap
// (IP:port), for hosts that route back by a Via's received/rport or a
// Kamailio-style ";alias=" parameter. An IPv4-mapped IPv6 address matches its
// IPv4 form. Behind a trusted proxy the address is the forwarded client's IP
// with the proxy connection's port. When several live connections share the
// address (clients behind one NAT reaching the server through different
// proxies), it returns the most recently opened of them; when that one ends,
// the next most recent, and so on, as long as one is open.
func (r *Registry) ByRemoteAddr(ap netip.AddrPort) (*Conn, bool) {
	ap = unmap(ap)
	ah := &r.byAddr[addrShard(ap)]
	ah.mu.RLock()
	c, ok := ah.m[ap]
	ah.mu.RUnlock()
	return c, ok
}

// Get returns the live connection with that ID, or nil and false.
func (r *Registry) Get(id ConnID) (*Conn, bool) {
	sh := &r.shards[uint64(id)%registryShards]
	sh.mu.RLock()
	c, ok := sh.m[id]
	sh.mu.RUnlock()
	return c, ok
}

// Len returns the number of live connections.
func (r *Registry) Len() int {
	n := 0
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// each calls f for every live connection, holding no lock during the call.
func (r *Registry) each(f func(*Conn)) {
	var batch []*Conn
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.RLock()
		batch = batch[:0]
		for _, c := range sh.m {
			batch = append(batch, c)
		}
		sh.mu.RUnlock()
		for _, c := range batch {
			f(c)
		}
	}
}

// lookup returns the connection or an error wrapping ErrNotFound.
func (r *Registry) lookup(id ConnID) (*Conn, error) {
	c, ok := r.Get(id)
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	return c, nil
}

// Close starts the close handshake of connection id (the RPC ws.close);
// code 0 and reason "" stand for 1000 "Normal closure". See Conn.Close.
func (r *Registry) Close(id ConnID, code CloseCode, reason string) error {
	c, err := r.lookup(id)
	if err != nil {
		return err
	}
	return c.Close(code, reason)
}

// Ping sends a Ping with Config.PingData on connection id (the RPC ws.ping)
// and returns without waiting for the Pong.
func (r *Registry) Ping(id ConnID) error {
	c, err := r.lookup(id)
	if err != nil {
		return err
	}
	return c.Ping(r.srv.cfg.PingData)
}

// Pong sends an unsolicited Pong with Config.PingData on connection id (the
// RPC ws.pong).
func (r *Registry) Pong(id ConnID) error {
	c, err := r.lookup(id)
	if err != nil {
		return err
	}
	return c.Pong(r.srv.cfg.PingData)
}

// DumpOrder is the order of Registry.Dump, as the order parameter of the RPC
// ws.dump.
type DumpOrder uint8

const (
	// DumpByID lists by connection ID, oldest first (Kamailio's "id_hash",
	// the default).
	DumpByID DumpOrder = iota
	// DumpLeastRecentlyUsed lists the longest idle first (Kamailio's
	// "used_desc": descending idle time).
	DumpLeastRecentlyUsed
	// DumpMostRecentlyUsed lists the most recently active first (Kamailio's
	// "used_asc": ascending idle time).
	DumpMostRecentlyUsed
)

// String returns the Kamailio name of the order.
func (o DumpOrder) String() string {
	switch o {
	case DumpByID:
		return "id_hash"
	case DumpLeastRecentlyUsed:
		return "used_desc"
	case DumpMostRecentlyUsed:
		return "used_asc"
	}
	return fmt.Sprintf("DumpOrder(%d)", uint8(o))
}

// parseDumpOrder parses Kamailio's names "id_hash", "used_desc" and
// "used_asc", in any case ("" is id_hash).
func parseDumpOrder(s string) (DumpOrder, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "id_hash":
		return DumpByID, nil
	case "used_desc":
		return DumpLeastRecentlyUsed, nil
	case "used_asc":
		return DumpMostRecentlyUsed, nil
	}
	return 0, fmt.Errorf("sipws: bad display order parameter %s: want id_hash, used_desc or used_asc", quote(s))
}

// defaultDumpLimit is the number of connections ws.dump lists by default.
const defaultDumpLimit = 50

// ConnInfo is a snapshot of one connection, as listed by Registry.Dump.
type ConnInfo struct {
	ID           ConnID
	RemoteAddr   netip.AddrPort
	LocalAddr    netip.AddrPort
	Subprotocol  Subprotocol
	Secure       bool
	HTTP2        bool   // carried by an HTTP/2 stream (RFC 8441), as Conn.HTTP2
	State        string // "OPEN" or "CLOSING"
	Opened       time.Time
	LastUsed     time.Time     // the last frame received
	AwaitingPong bool          // a Ping was sent and no Pong has come back yet
	RTT          time.Duration // the last Ping's round-trip time; 0 when none was measured
	Identity     any
}

// Dump is the result of Registry.Dump.
type Dump struct {
	Conns     []ConnInfo
	Total     int  // live connections when the dump was taken
	Truncated bool // Total > len(Conns)
}

// DumpQuery selects and pages the connections of Registry.Dump. Its zero
// value is ws.dump's default: the first 50 connections by ID.
type DumpQuery struct {
	Order       DumpOrder
	Limit       int         // 0 means 50; negative means all
	Offset      int         // skip this many (after filtering and ordering)
	Subprotocol Subprotocol // only these sub-protocols; 0 means all
	RemoteIP    netip.Addr  // only connections from this IP; invalid means all
}

// Dump lists the connections q selects, in q's order, so that an operator
// can walk through any number of connections. Total counts the connections
// that pass the filters.
func (r *Registry) Dump(q DumpQuery) Dump {
	return r.snapshot(q).query(q)
}

// connSnapshot is the live connections at one moment, to be listed in any
// order and paged through without taking them again: the RPC handler
// answers every ws.dump of one request from one snapshot.
type connSnapshot struct {
	conns []ConnInfo
	// byOrder[o] indexes conns in DumpOrder o, built when first asked for.
	byOrder [DumpMostRecentlyUsed + 1][]int
}

// snapshot takes the live connections that pass q's filters (q's order and
// paging are for query).
func (r *Registry) snapshot(q DumpQuery) *connSnapshot {
	s := &connSnapshot{}
	r.each(func(c *Conn) {
		if q.matches(c.sp, c.remote) {
			s.conns = append(s.conns, c.info())
		}
	})
	return s
}

// matches reports whether a connection with sub-protocol sp from remote
// passes q's filters.
func (q DumpQuery) matches(sp Subprotocol, remote netip.AddrPort) bool {
	if q.Subprotocol != 0 && q.Subprotocol&sp == 0 {
		return false
	}
	ip := q.RemoteIP.Unmap()
	return !ip.IsValid() || remote.Addr() == ip
}

// sorted returns the indexes of s.conns in order o.
func (s *connSnapshot) sorted(o DumpOrder) []int {
	if o > DumpMostRecentlyUsed {
		o = DumpByID
	}
	if idx := s.byOrder[o]; idx != nil {
		return idx
	}
	idx := make([]int, len(s.conns))
	for i := range idx {
		idx[i] = i
	}
	all := s.conns
	switch o {
	case DumpLeastRecentlyUsed:
		slices.SortFunc(idx, func(a, b int) int {
			return cmp.Or(all[a].LastUsed.Compare(all[b].LastUsed), cmp.Compare(all[a].ID, all[b].ID))
		})
	case DumpMostRecentlyUsed:
		slices.SortFunc(idx, func(a, b int) int {
			return cmp.Or(all[b].LastUsed.Compare(all[a].LastUsed), cmp.Compare(all[a].ID, all[b].ID))
		})
	default:
		slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(all[a].ID, all[b].ID) })
	}
	s.byOrder[o] = idx
	return idx
}

// query filters, orders and pages the snapshot as q says. It copies only
// the page's rows; without filters, it touches nothing else.
func (s *connSnapshot) query(q DumpQuery) Dump {
	idx := s.sorted(q.Order)
	limit := q.Limit
	if limit == 0 {
		limit = defaultDumpLimit
	}
	off := max(q.Offset, 0)
	var d Dump
	if q.Subprotocol == 0 && !q.RemoteIP.IsValid() {
		d.Total = len(idx)
		idx = idx[min(off, len(idx)):]
		if limit > 0 && limit < len(idx) {
			idx = idx[:limit]
		}
		d.Conns = make([]ConnInfo, len(idx))
		for i, j := range idx {
			d.Conns[i] = s.conns[j]
		}
	} else {
		for _, j := range idx {
			ci := &s.conns[j]
			if !q.matches(ci.Subprotocol, ci.RemoteAddr) {
				continue
			}
			if d.Total >= off && (limit < 0 || len(d.Conns) < limit) {
				d.Conns = append(d.Conns, *ci)
			}
			d.Total++
		}
	}
	d.Truncated = min(off, d.Total)+len(d.Conns) < d.Total
	return d
}

func (c *Conn) info() ConnInfo {
	c.wmu.Lock()
	st := "OPEN"
	if c.state != stateOpen {
		st = "CLOSING"
	}
	c.wmu.Unlock()
	return ConnInfo{
		ID:           c.id,
		RemoteAddr:   c.remote,
		LocalAddr:    c.local,
		Subprotocol:  c.sp,
		Secure:       c.secure,
		HTTP2:        c.h2,
		State:        st,
		Opened:       c.opened,
		LastUsed:     c.LastUsed(),
		AwaitingPong: c.ka.awaiting.Load(),
		RTT:          time.Duration(c.ka.rtt.Load()),
		Identity:     c.identity,
	}
}
