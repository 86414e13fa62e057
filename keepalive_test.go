package sipws_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// kaClock is a manual sipws.Clock. Its tickers are unbuffered: advance blocks
// until every worker has taken the tick, and sync sends one more tick at the
// same time, which returns only once the previous pass has finished.
type kaClock struct {
	mu      sync.Mutex
	now     time.Time
	tickers []chan time.Time
}

func newKaClock() *kaClock { return &kaClock{now: time.Unix(1_700_000_000, 0)} }

func (c *kaClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *kaClock) NewTicker(time.Duration) sipws.Ticker {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &kaTicker{c: make(chan time.Time)}
	c.tickers = append(c.tickers, t.c)
	return t
}

type kaTicker struct{ c chan time.Time }

func (t *kaTicker) C() <-chan time.Time { return t.c }
func (t *kaTicker) Stop()               {}

// waitTickers waits until n keepalive workers run.
func (c *kaClock) waitTickers(t testing.TB, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.tickers) >= n
	}, ioTimeout, time.Millisecond, "keepalive workers did not start")
}

// advance moves the clock by d, ticks every worker, and waits for the passes.
func (c *kaClock) advance(t testing.TB, d time.Duration) {
	t.Helper()
	c.mu.Lock()
	c.now = c.now.Add(d)
	now, ts := c.now, append([]chan time.Time(nil), c.tickers...)
	c.mu.Unlock()
	for range 2 { // the second tick proves the first pass is over
		for _, tc := range ts {
			select {
			case tc <- now:
			case <-time.After(ioTimeout):
				t.Fatal("keepalive worker did not take the tick")
			}
		}
	}
}

// step advances the clock by d in steps of at most s.
func (c *kaClock) step(t testing.TB, d, s time.Duration) {
	t.Helper()
	for d > 0 {
		x := min(d, s)
		c.advance(t, x)
		d -= x
	}
}

// kaServer starts a server with a manual clock and one open client.
func kaServer(t *testing.T, cfg sipws.Config) (*testServer, *kaClock, *rawClient, *sipws.Conn) {
	t.Helper()
	clk := newKaClock()
	cfg = sipws.WithClock(cfg, clk)
	ts := startServer(t, cfg)
	c := dialWS(t, ts.Addr, "sip")
	conn := ts.nextOpened(t)
	workers := max(cfg.KeepaliveWorkers, 1)
	clk.waitTickers(t, workers)
	return ts, clk, c, conn
}

// noFrame checks that the server sends nothing within d.
func (c *rawClient) noFrame(d time.Duration) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	b, err := c.br.ReadByte()
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		c.t.Fatalf("expected no frame, got byte %#x err %v", b, err)
	}
}

// quiet is how long a test watches for a frame that must not come. The
// passes are synchronous (advance waits for them), so a frame they queued is
// on the wire well within it.
const quiet = 150 * time.Millisecond

func TestKeepalivePingAfterTimeout(t *testing.T) {
	ts, clk, c, conn := kaServer(t, sipws.Config{
		KeepaliveTimeout: 30 * time.Second,
		PingData:         []byte("kp-data"),
	})
	clk.step(t, 29*time.Second, time.Second)
	c.noFrame(quiet)

	clk.advance(t, time.Second)
	f := c.mustReadFrame()
	assert.Equal(t, byte(0x9), f.Op, "a Ping")
	assert.Equal(t, "kp-data", string(f.Payload))
	info := ts.Registry().Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: 0}).Conns
	require.Len(t, info, 1)
	assert.True(t, info[0].AwaitingPong)

	// Answer 150 ms (clock time) later: the round-trip time is exactly that.
	clk.mu.Lock()
	clk.now = clk.now.Add(150 * time.Millisecond)
	clk.mu.Unlock()
	c.writeFrame(true, 0, 0xA, f.Payload, true)
	require.Eventually(t, func() bool {
		d := ts.Registry().Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: 0}).Conns
		return len(d) == 1 && !d[0].AwaitingPong
	}, ioTimeout, time.Millisecond)
	assert.Equal(t, 150*time.Millisecond, ts.Registry().Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: 0}).Conns[0].RTT)

	// It answered: it stays past the pong wait, and is pinged again after
	// another idle timeout.
	clk.step(t, 29*time.Second, time.Second)
	c.noFrame(quiet)
	_, open := ts.Registry().Get(conn.ID())
	assert.True(t, open)
	clk.step(t, 2*time.Second, time.Second)
	assert.Equal(t, byte(0x9), c.mustReadFrame().Op)
}

func TestKeepaliveDefaultPayloadNamesLibrary(t *testing.T) {
	_, clk, c, _ := kaServer(t, sipws.Config{KeepaliveTimeout: 5 * time.Second})
	clk.step(t, 5*time.Second, time.Second)
	f := c.mustReadFrame()
	require.Equal(t, byte(0x9), f.Op)
	assert.Equal(t, "sipws/"+sipws.Version, string(f.Payload))
}

func TestKeepaliveBusyConnectionNotPinged(t *testing.T) {
	ts, clk, c, _ := kaServer(t, sipws.Config{KeepaliveTimeout: 30 * time.Second})
	for i := range 12 { // 120 s of clock time, a message every 10 s
		clk.step(t, 10*time.Second, time.Second)
		c.sendText(fmt.Sprintf("msg %d", i))
		ts.nextMsg(t)
	}
	c.noFrame(quiet)
}

func TestKeepaliveSilentPeerClosed(t *testing.T) {
	ts, clk, c, conn := kaServer(t, sipws.Config{
		KeepaliveTimeout: 30 * time.Second,
		PongWait:         5 * time.Second,
		CloseTimeout:     200 * time.Millisecond,
	})
	serverPort := conn.LocalAddr().Port()
	clientPort := conn.RemoteAddr().Port()
	clk.step(t, 30*time.Second, time.Second)
	require.Equal(t, byte(0x9), c.mustReadFrame().Op)

	clk.step(t, 4*time.Second, time.Second)
	c.noFrame(quiet)
	clk.advance(t, time.Second)

	f := c.mustReadFrame()
	require.Equal(t, byte(0x8), f.Op)
	code, reason := f.closeCode()
	assert.Equal(t, uint16(1001), code)
	assert.Equal(t, "keepalive timeout", reason)

	// The client stays silent (a dead peer): the server drops TCP anyway.
	ev := ts.nextClosed(t)
	assert.Equal(t, sipws.CauseKeepaliveTimeout, ev.Cause)
	assert.Equal(t, sipws.CloseGoingAway, ev.Code)
	assert.Error(t, ev.Err)
	assert.Equal(t, conn.ID(), ev.ID)
	c.expectEOF(2 * time.Second)
	// And on the server's side the socket is really gone: no socket of the
	// server's port paired with the client's port is still established.
	assert.False(t, tcpEstablished(t, serverPort, clientPort), "server socket still ESTABLISHED")
	assert.Equal(t, 0, ts.Registry().Len())
	ts.noMoreClosed(t, quiet)
}

func TestKeepaliveAnyFrameCountsAsAnswer(t *testing.T) {
	ts, clk, c, conn := kaServer(t, sipws.Config{
		KeepaliveTimeout: 30 * time.Second,
		PongWait:         5 * time.Second,
	})
	clk.step(t, 30*time.Second, time.Second)
	require.Equal(t, byte(0x9), c.mustReadFrame().Op)
	c.sendText("REGISTER instead of a pong")
	ts.nextMsg(t)
	clk.step(t, 10*time.Second, time.Second)
	c.noFrame(quiet)
	_, open := ts.Registry().Get(conn.ID())
	assert.True(t, open, "a data frame is proof of life")
}

func TestKeepalivePongMechanism(t *testing.T) {
	ts, clk, c, _ := kaServer(t, sipws.Config{
		Keepalive:        sipws.KeepalivePong,
		KeepaliveTimeout: 20 * time.Second,
		PingData:         []byte("heartbeat"),
	})
	// Heartbeats go out every timeout while the peer stays silent, and no
	// answer is expected.
	for range 3 {
		clk.step(t, 19*time.Second, time.Second)
		c.noFrame(quiet)
		clk.advance(t, time.Second)
		f := c.mustReadFrame()
		assert.Equal(t, byte(0xA), f.Op, "an unsolicited Pong")
		assert.Equal(t, "heartbeat", string(f.Payload))
	}
	assert.Equal(t, 1, ts.Registry().Len())
	assert.False(t, ts.Registry().Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: 0}).Conns[0].AwaitingPong)
}

func TestKeepaliveIdleTimeout(t *testing.T) {
	for _, mech := range []sipws.KeepaliveMechanism{sipws.KeepalivePong, sipws.KeepaliveNone} {
		t.Run(mech.String(), func(t *testing.T) {
			ts, clk, c, _ := kaServer(t, sipws.Config{
				Keepalive:        mech,
				KeepaliveTimeout: 20 * time.Second,
				IdleTimeout:      60 * time.Second,
				CloseTimeout:     200 * time.Millisecond,
			})
			clk.step(t, 30*time.Second, time.Second)
			c.sendText("alive") // resets the idle clock
			ts.nextMsg(t)
			clk.step(t, 59*time.Second, time.Second)
			assert.Equal(t, 1, ts.Registry().Len())
			clk.step(t, time.Second, time.Second)
			ev := ts.nextClosed(t)
			assert.Equal(t, sipws.CauseKeepaliveTimeout, ev.Cause)
			for {
				f := c.mustReadFrame()
				if f.Op == 0x8 {
					code, _ := f.closeCode()
					assert.Equal(t, uint16(1001), code)
					break
				}
				require.Equal(t, byte(0xA), f.Op, "only heartbeats before the close")
			}
			c.expectEOF(2 * time.Second)
		})
	}
}

func TestKeepaliveNoneSendsNothing(t *testing.T) {
	clk := newKaClock()
	ts := startServer(t, sipws.WithClock(sipws.Config{Keepalive: sipws.KeepaliveNone}, clk))
	c := dialWS(t, ts.Addr, "sip")
	ts.nextOpened(t)
	clk.mu.Lock()
	clk.now = clk.now.Add(time.Hour)
	n := len(clk.tickers)
	clk.mu.Unlock()
	assert.Zero(t, n, "no keepalive worker runs with nothing to do")
	c.noFrame(quiet)
}

func TestKeepaliveWorkersShareConnections(t *testing.T) {
	clk := newKaClock()
	ts := startServer(t, sipws.WithClock(sipws.Config{
		KeepaliveTimeout: 10 * time.Second,
		KeepaliveWorkers: 4,
	}, clk))
	const n = 20
	clients := make([]*rawClient, n)
	for i := range clients {
		clients[i] = dialWS(t, ts.Addr, "sip")
		ts.nextOpened(t)
	}
	clk.waitTickers(t, 4)
	clk.step(t, 10*time.Second, time.Second)
	for i, c := range clients {
		f := c.mustReadFrame()
		assert.Equal(t, byte(0x9), f.Op, "client %d", i)
	}
}

func TestKeepaliveVerboseListLogsCounts(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	clk := newKaClock()
	ts := startServer(t, sipws.WithClock(sipws.Config{
		KeepaliveTimeout: 10 * time.Second,
		VerboseList:      true,
		Logger:           logger,
	}, clk))
	for range 3 {
		dialWS(t, ts.Addr, "sip")
		ts.nextOpened(t)
	}
	clk.waitTickers(t, 1)
	clk.step(t, 10*time.Second, time.Second)
	var pass string
	for line := range strings.SplitSeq(buf.String(), "\n") {
		if strings.Contains(line, "keepalive pass") && strings.Contains(line, "pings=3") {
			pass = line
		}
	}
	require.NotEmpty(t, pass, "a pass line with the count of pings:\n%s", buf.String())
	assert.Contains(t, pass, "connections=3")
	assert.NotContains(t, pass, "conn=", "counts, not one line per connection")
}

func TestKeepaliveVerboseListOffLogsNoPass(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, clk, _, _ := kaServer(t, sipws.Config{KeepaliveTimeout: 10 * time.Second, Logger: logger})
	clk.step(t, 10*time.Second, time.Second)
	assert.NotContains(t, buf.String(), "keepalive pass")
}

func TestRegistryPingReturnsAtOnce(t *testing.T) {
	// The client never reads; Registry.Ping and Pong must not wait for it.
	ts := startServer(t, sipws.Config{PingData: []byte("manual")})
	c := dialWS(t, ts.Addr, "sip")
	conn := ts.nextOpened(t)
	done := make(chan error, 2)
	go func() { done <- ts.Registry().Ping(conn.ID()) }()
	go func() { done <- ts.Registry().Pong(conn.ID()) }()
	for range 2 {
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(ioTimeout):
			t.Fatal("Registry.Ping/Pong blocked")
		}
	}
	got := map[byte]string{}
	for range 2 {
		f := c.mustReadFrame()
		got[f.Op] = string(f.Payload)
	}
	assert.Equal(t, map[byte]string{0x9: "manual", 0xA: "manual"}, got)
}

func TestKeepaliveConfigErrors(t *testing.T) {
	cases := []struct {
		name  string
		cfg   sipws.Config
		field string
	}{
		{name: "ping data too long", cfg: sipws.Config{PingData: bytes.Repeat([]byte("x"), 126)}, field: "PingData"},
		{name: "negative timeout", cfg: sipws.Config{KeepaliveTimeout: -time.Second}, field: "KeepaliveTimeout"},
		{name: "negative interval", cfg: sipws.Config{KeepaliveInterval: -time.Second}, field: "KeepaliveInterval"},
		{name: "interval over timeout", cfg: sipws.Config{KeepaliveTimeout: time.Second, KeepaliveInterval: 2 * time.Second}, field: "KeepaliveInterval"},
		{name: "pong wait over timeout", cfg: sipws.Config{KeepaliveTimeout: 10 * time.Second, PongWait: 11 * time.Second}, field: "PongWait"},
		{name: "negative pong wait", cfg: sipws.Config{PongWait: -1}, field: "PongWait"},
		{name: "negative idle timeout", cfg: sipws.Config{Keepalive: sipws.KeepalivePong, IdleTimeout: -1}, field: "IdleTimeout"},
		{name: "negative workers", cfg: sipws.Config{KeepaliveWorkers: -1}, field: "KeepaliveWorkers"},
		{name: "too many workers", cfg: sipws.Config{KeepaliveWorkers: 1000}, field: "KeepaliveWorkers"},
		{name: "unknown mechanism", cfg: sipws.Config{Keepalive: 7}, field: "Keepalive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sipws.New(tc.cfg)
			var ce *sipws.ConfigError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, tc.field, ce.Field, "error: %v", err)
		})
	}
	// The limits themselves are accepted.
	_, err := sipws.New(sipws.Config{PingData: bytes.Repeat([]byte("x"), 125), KeepaliveTimeout: 10 * time.Second, PongWait: 10 * time.Second, KeepaliveWorkers: 256})
	require.NoError(t, err)
}

func TestParseKeepaliveMechanism(t *testing.T) {
	for in, want := range map[string]sipws.KeepaliveMechanism{
		"ping": sipws.KeepalivePing, "1": sipws.KeepalivePing, "PONG": sipws.KeepalivePong,
		"2": sipws.KeepalivePong, "none": sipws.KeepaliveNone, "0": sipws.KeepaliveNone,
	} {
		got, err := sipws.ParseKeepaliveMechanism(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	_, err := sipws.ParseKeepaliveMechanism("sometimes")
	assert.Error(t, err)
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tcpEstablished reports whether /proc/net/tcp lists an ESTABLISHED socket
// from local port lport to remote port rport on loopback.
func tcpEstablished(t testing.TB, lport, rport uint16) bool {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		lp, rp := procPort(fields[1]), procPort(fields[2])
		if lp == lport && rp == rport && fields[3] == "01" {
			return true
		}
	}
	return false
}

func procPort(addr string) uint16 {
	_, p, ok := strings.Cut(addr, ":")
	if !ok {
		return 0
	}
	b, err := hex.DecodeString(p)
	if err != nil || len(b) != 2 {
		return 0
	}
	n, _ := strconv.ParseUint(p, 16, 16)
	return uint16(n)
}
