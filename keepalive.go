package sipws

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// KeepaliveMechanism is how idle connections are kept alive
// (keepalive_mechanism). The zero value is KeepalivePing, Kamailio's default.
type KeepaliveMechanism uint8

const (
	// KeepalivePing sends a Ping to a connection that has received nothing
	// for KeepaliveTimeout, and closes it when nothing at all comes back
	// within PongWait (keepalive_mechanism 1, the default).
	KeepalivePing KeepaliveMechanism = iota
	// KeepalivePong sends an unsolicited Pong, a one-way heartbeat (RFC 6455
	// §5.5.3), to a connection idle for KeepaliveTimeout
	// (keepalive_mechanism 2).
	KeepalivePong
	// KeepaliveNone sends no keepalive (keepalive_mechanism 0).
	KeepaliveNone
)

// String returns "ping", "pong" or "none".
func (m KeepaliveMechanism) String() string {
	switch m {
	case KeepalivePing:
		return "ping"
	case KeepalivePong:
		return "pong"
	case KeepaliveNone:
		return "none"
	}
	return fmt.Sprintf("KeepaliveMechanism(%d)", uint8(m))
}

// parseKeepaliveMechanism parses "none", "ping" and "pong", or Kamailio's
// numbers "0", "1" and "2".
func parseKeepaliveMechanism(s string) (KeepaliveMechanism, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "ping", "1":
		return KeepalivePing, nil
	case "pong", "2":
		return KeepalivePong, nil
	case "none", "0":
		return KeepaliveNone, nil
	}
	return 0, fmt.Errorf("sipws: unknown keepalive mechanism %s (want none, ping or pong)", quote(s))
}

// kaState is a connection's keepalive bookkeeping. The atomics are shared
// with the connection's goroutine and Registry.Ping; the rest belongs to the
// connection's keepalive worker and is guarded by its mutex.
type kaState struct {
	awaiting atomic.Bool  // a Ping was sent and no Pong came back
	pingSent atomic.Int64 // Clock time (UnixNano) of the last Ping sent
	rtt      atomic.Int64 // nanoseconds from the last answered Ping to its Pong

	w          *kaWorker // nil when not scheduled
	tick       int64     // the wheel tick it is filed under
	prev, next *Conn     // the tick's slot list
	kaPing     int64     // UnixNano of the keepalive Ping awaiting an answer, 0 if none
	kaSent     int64     // UnixNano of the last keepalive frame sent
}

// keepalive finds idle and dead connections without scanning them all: each
// worker keeps its connections in a timing wheel by the time they are next
// due, so that a pass touches only the connections that are due.
type keepalive struct {
	srv     *Server
	mech    KeepaliveMechanism
	workers []*kaWorker
	start   sync.Once
	stopped atomic.Bool
	wg      sync.WaitGroup
}

// kaWorker is one keepalive goroutine and its wheel.
type kaWorker struct {
	ka      *keepalive
	mu      sync.Mutex
	slots   []*Conn // heads of the slot lists
	cursor  int64   // last tick processed
	n       int     // connections filed
	stop    chan struct{}
	verbose bool
}

func newKeepalive(s *Server) *keepalive {
	ka := &keepalive{srv: s, mech: s.cfg.Keepalive}
	if !ka.active() {
		return ka
	}
	span := max(s.cfg.KeepaliveTimeout, s.cfg.PongWait, s.cfg.IdleTimeout)
	nslots := int(min(int64(span/s.cfg.KeepaliveInterval)+2, 1<<16))
	now := ka.tickOf(s.clock.Now().UnixNano())
	for range s.cfg.KeepaliveWorkers {
		ka.workers = append(ka.workers, &kaWorker{
			ka:      ka,
			slots:   make([]*Conn, nslots),
			cursor:  now,
			stop:    make(chan struct{}),
			verbose: s.cfg.VerboseList,
		})
	}
	return ka
}

// active reports whether any keepalive work exists.
func (ka *keepalive) active() bool {
	return ka.mech != KeepaliveNone || ka.srv.cfg.IdleTimeout > 0
}

// tickOf returns the wheel tick at or after t.
func (ka *keepalive) tickOf(t int64) int64 {
	iv := int64(ka.srv.cfg.KeepaliveInterval)
	return (t + iv - 1) / iv
}

// add files a new connection and starts the workers with the first one.
func (ka *keepalive) add(c *Conn) {
	if !ka.active() || ka.stopped.Load() {
		return
	}
	ka.start.Do(func() {
		for _, w := range ka.workers {
			ka.wg.Add(1)
			go w.run()
		}
	})
	w := ka.workers[uint64(c.id)%uint64(len(ka.workers))]
	w.mu.Lock()
	c.ka.w = w
	w.file(c, ka.nextDue(c, ka.srv.clock.Now().UnixNano()))
	w.n++
	w.mu.Unlock()
}

// remove takes an ended connection out of its wheel.
func (ka *keepalive) remove(c *Conn) {
	if !ka.active() {
		return
	}
	w := ka.workers[uint64(c.id)%uint64(len(ka.workers))]
	w.mu.Lock()
	if c.ka.w != nil {
		w.unfile(c)
		c.ka.w = nil
		w.n--
	}
	w.mu.Unlock()
}

// stop ends the workers and waits for them.
func (ka *keepalive) stop() {
	if ka.stopped.Swap(true) {
		return
	}
	ka.start.Do(func() {}) // no start after stop
	for _, w := range ka.workers {
		close(w.stop)
	}
	ka.wg.Wait()
}

// pingSent notes a Ping sent on c, whose Pong is awaited.
func (ka *keepalive) pingSent(c *Conn) {
	c.ka.pingSent.Store(ka.srv.clock.Now().UnixNano())
	c.ka.awaiting.Store(true)
}

// pongReceived notes a Pong from c and measures the round trip.
func (ka *keepalive) pongReceived(c *Conn) {
	if c.ka.awaiting.CompareAndSwap(true, false) {
		rtt := ka.srv.clock.Now().UnixNano() - c.ka.pingSent.Load()
		c.ka.rtt.Store(rtt)
		if ka.srv.obs != nil {
			ka.srv.obs.RTT(time.Duration(rtt))
		}
	}
}

// nextDue returns when c must next be looked at, given the time now. The
// worker's mutex is held.
func (ka *keepalive) nextDue(c *Conn, now int64) int64 {
	cfg := &ka.srv.cfg
	last := c.lastRecv.Load()
	if c.ka.kaPing != 0 && last < c.ka.kaPing {
		return c.ka.kaPing + int64(cfg.PongWait)
	}
	due := int64(1<<63 - 1)
	if ka.mech != KeepaliveNone {
		due = max(last, c.ka.kaSent) + int64(cfg.KeepaliveTimeout)
	}
	if cfg.IdleTimeout > 0 {
		due = min(due, last+int64(cfg.IdleTimeout))
	}
	return max(due, now)
}

// file puts c in the slot of the tick at or after due. w.mu is held.
func (w *kaWorker) file(c *Conn, due int64) {
	t := max(w.ka.tickOf(due), w.cursor+1)
	c.ka.tick = t
	i := int(t % int64(len(w.slots)))
	c.ka.prev, c.ka.next = nil, w.slots[i]
	if c.ka.next != nil {
		c.ka.next.ka.prev = c
	}
	w.slots[i] = c
}

// unfile removes c from its slot. w.mu is held.
func (w *kaWorker) unfile(c *Conn) {
	i := int(c.ka.tick % int64(len(w.slots)))
	if c.ka.prev != nil {
		c.ka.prev.ka.next = c.ka.next
	} else {
		w.slots[i] = c.ka.next
	}
	if c.ka.next != nil {
		c.ka.next.ka.prev = c.ka.prev
	}
	c.ka.prev, c.ka.next = nil, nil
}

func (w *kaWorker) run() {
	defer w.ka.wg.Done()
	t := w.ka.srv.clock.NewTicker(w.ka.srv.cfg.KeepaliveInterval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C():
			w.pass(w.ka.srv.clock.Now().UnixNano())
		}
	}
}

// kaAction is what a pass decided for one connection, done after the
// worker's mutex is released.
type kaAction struct {
	c    *Conn
	kind uint8
}

const (
	kaSendPing uint8 = iota
	kaSendPong
	kaDead
	kaIdle
)

// passStats counts what one pass did, for VerboseList.
type passStats struct {
	visited, pings, pongs, dead, idle int
}

// pass processes every slot whose tick has come.
func (w *kaWorker) pass(now int64) passStats {
	var st passStats
	var acts []kaAction
	cfg := &w.ka.srv.cfg
	w.mu.Lock()
	cur := now / int64(cfg.KeepaliveInterval) // the last tick at or before now
	from := max(w.cursor+1, cur-int64(len(w.slots))+1)
	// Connections filed again during the pass go to ticks after it.
	w.cursor = max(w.cursor, cur)
	for t := from; t <= cur; t++ {
		i := int(t % int64(len(w.slots)))
		c := w.slots[i]
		w.slots[i] = nil
		for c != nil {
			next := c.ka.next
			c.ka.prev, c.ka.next = nil, nil
			st.visited++
			last := c.lastRecv.Load()
			switch {
			case c.ka.kaPing != 0 && last < c.ka.kaPing && now >= c.ka.kaPing+int64(cfg.PongWait):
				acts = append(acts, kaAction{c, kaDead})
				c.ka.w = nil
				w.n--
				c = next
				continue
			case cfg.IdleTimeout > 0 && now >= last+int64(cfg.IdleTimeout):
				acts = append(acts, kaAction{c, kaIdle})
				c.ka.w = nil
				w.n--
				c = next
				continue
			}
			if c.ka.kaPing != 0 && last >= c.ka.kaPing {
				c.ka.kaPing = 0 // answered
			}
			if c.ka.kaPing == 0 && w.ka.mech != KeepaliveNone && now >= max(last, c.ka.kaSent)+int64(cfg.KeepaliveTimeout) {
				c.ka.kaSent = now
				if w.ka.mech == KeepalivePing {
					c.ka.kaPing = now
					acts = append(acts, kaAction{c, kaSendPing})
				} else {
					acts = append(acts, kaAction{c, kaSendPong})
				}
			}
			w.file(c, w.ka.nextDue(c, now))
			c = next
		}
	}
	filed := w.n
	w.mu.Unlock()

	for _, a := range acts {
		c := a.c
		switch a.kind {
		case kaSendPing:
			c.dropHistory()
			if c.Ping(cfg.PingData) == nil {
				st.pings++
			}
		case kaSendPong:
			c.dropHistory()
			if c.Pong(cfg.PingData) == nil {
				st.pongs++
			}
		case kaDead:
			st.dead++
			w.ka.srv.log.Info("keepalive timeout", "conn", c.id, "remote", c.remote, "subprotocol", c.sp)
			w.ka.closeDead(c, fmt.Errorf("sipws: no answer to the keepalive ping within %v", cfg.PongWait))
		case kaIdle:
			st.idle++
			w.ka.srv.log.Info("idle timeout", "conn", c.id, "remote", c.remote, "subprotocol", c.sp)
			w.ka.closeDead(c, fmt.Errorf("sipws: nothing received for %v", cfg.IdleTimeout))
		}
	}
	if w.verbose {
		w.ka.srv.log.Debug("keepalive pass", "connections", filed, "visited", st.visited,
			"pings", st.pings, "pongs", st.pongs, "dead", st.dead, "idle", st.idle)
	}
	return st
}

// closeDead closes a connection the keepalive gave up on: a close frame
// (1001 "keepalive timeout"), then the socket after Config.CloseTimeout at
// most — a dead peer does not answer.
func (ka *keepalive) closeDead(c *Conn, err error) {
	_ = c.startClose(CauseKeepaliveTimeout, CloseGoingAway, "keepalive timeout", err) // ErrClosed: already closing
}

// MarshalText implements encoding.TextMarshaler: "ping", "pong" or "none".
func (m KeepaliveMechanism) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler: "none", "ping", "pong",
// or Kamailio's keepalive_mechanism numbers "0", "1", "2".
func (m *KeepaliveMechanism) UnmarshalText(b []byte) error {
	v, err := parseKeepaliveMechanism(string(b))
	if err == nil {
		*m = v
	}
	return err
}
