package sipws

import (
	"net"
	"sync"
	"testing"
	"time"
)

// benchClock is a manual clock for benchmarks; its tickers never tick.
type benchClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *benchClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *benchClock) add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

func (c *benchClock) NewTicker(time.Duration) ticker { return benchTicker{} }

type benchTicker struct{}

func (benchTicker) C() <-chan time.Time { return nil }
func (benchTicker) Stop()               {}

// discardConn is a net.Conn that swallows writes.
type discardConn struct{ net.Conn }

func (discardConn) Write(b []byte) (int, error)      { return len(b), nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }
func (discardConn) SetReadDeadline(time.Time) error  { return nil }
func (discardConn) Close() error                     { return nil }
func (discardConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (discardConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (discardConn) Read([]byte) (int, error)         { select {} }
func (discardConn) SetDeadline(t time.Time) error    { return nil }

// benchKeepalive files n fake connections in one worker's wheel.
func benchKeepalive(b *testing.B, n int, timeout time.Duration) (*Server, *benchClock, *kaWorker, []*Conn) {
	b.Helper()
	clk := &benchClock{now: time.Unix(1_700_000_000, 0)}
	s, err := New(Config{KeepaliveTimeout: timeout, PongWait: min(timeout, 5*time.Second), clock: clk})
	if err != nil {
		b.Fatal(err)
	}
	w := s.ka.workers[0]
	conns := make([]*Conn, n)
	for i := range conns {
		c := &Conn{srv: s, id: ConnID(i + 1), nc: discardConn{}, done: make(chan struct{})}
		// Spread the last activity over one timeout, as real traffic does.
		c.lastRecv.Store(clk.now.Add(-time.Duration(i) * timeout / time.Duration(n)).UnixNano())
		w.mu.Lock()
		c.ka.w = w
		w.file(c, s.ka.nextDue(c, clk.now.UnixNano()))
		w.n++
		w.mu.Unlock()
		conns[i] = c
	}
	return s, clk, w, conns
}

// BenchmarkKeepalivePassIdle15k is one keepalive pass (one interval of 1 s)
// over 15,000 idle connections with the default 180 s timeout: each pass
// touches only the ~83 that are due, pings them, and every peer answers.
func BenchmarkKeepalivePassIdle15k(b *testing.B) {
	_, clk, w, conns := benchKeepalive(b, 15000, 180*time.Second)
	var due int
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		now := clk.add(time.Second)
		st := w.pass(now.UnixNano())
		due += st.visited
		// Every pinged peer answers at once (not timed: it is the peers' work).
		b.StopTimer()
		for _, c := range conns {
			if c.ka.awaiting.Load() {
				c.lastRecv.Store(now.UnixNano())
				c.ka.awaiting.Store(false)
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	for _, c := range conns {
		c.wwg.Wait()
	}
	b.ReportMetric(float64(due)/float64(b.N), "due/pass")
}

// BenchmarkKeepaliveDueConn is the cost per connection that is due: a pass
// in which every one of 1,000 connections gets a Ping, divided by 1,000.
func BenchmarkKeepaliveDueConn(b *testing.B) {
	const n = 1000
	_, clk, w, conns := benchKeepalive(b, n, time.Second)
	b.ReportAllocs()
	b.ResetTimer()
	var visited int
	for b.Loop() {
		now := clk.add(time.Second)
		b.StopTimer()
		for _, c := range conns {
			c.lastRecv.Store(now.Add(-time.Second).UnixNano())
			c.ka.kaPing = 0
			c.ka.kaSent = 0
		}
		b.StartTimer()
		visited += w.pass(now.UnixNano()).visited
		for _, c := range conns {
			c.wwg.Wait()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(max(visited, 1)), "ns/due-conn")
}
