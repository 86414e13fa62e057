package sipws_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSoak runs many healthy connections exchanging sequence-numbered
// messages with an echo server while other clients connect and close
// cleanly, reset, stop reading, or send garbage. At the end every message of
// every healthy connection has arrived exactly once and in order, both at the
// server and back at the client; the registry and the counters match what
// happened; goroutines and heap are back to their baseline.
//
// The short version runs by default (a few seconds); SIPWS_SOAK=60s (and
// SIPWS_SOAK_CONNS=3000) run the long one: see bench/soak.sh.
func TestSoak(t *testing.T) {
	dur := 4 * time.Second
	healthy := 300
	if v := os.Getenv("SIPWS_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "SIPWS_SOAK")
		dur = d
		healthy = 2000
	}
	if v := os.Getenv("SIPWS_SOAK_CONNS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "SIPWS_SOAK_CONNS")
		healthy = n
	}
	if testing.Short() {
		dur, healthy = time.Second, 50
	}

	baseG := runtime.NumGoroutine()
	var baseMem runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&baseMem)

	// The server side: each healthy connection's messages must come in
	// order, once; everything is echoed.
	var (
		mu        sync.Mutex
		serverSeq = map[sipws.ConnID]int{} // last sequence number seen per connection
		serverBad []string
		opened    atomic.Int64
		closedEvs atomic.Int64
		closedBy  sync.Map // ConnID → sipws.CloseCause
		reasons   sync.Map // protocol error reason → *atomic.Int64
	)
	cfg := sipws.Config{
		MaxMessageSize:   64 << 10,
		SendQueueSize:    256 << 10,
		WriteTimeout:     3 * time.Second,
		CloseTimeout:     500 * time.Millisecond,
		FrameTimeout:     2 * time.Second,
		KeepaliveTimeout: 2 * time.Second,
		PongWait:         2 * time.Second,
		OnOpen:           func(*sipws.Conn) { opened.Add(1) },
		OnMessage: func(c *sipws.Conn, m sipws.Message) {
			if seq, ok := soakSeq(m.Data); ok {
				mu.Lock()
				if last := serverSeq[c.ID()]; seq != last+1 {
					serverBad = append(serverBad, fmt.Sprintf("conn %d: seq %d after %d", c.ID(), seq, last))
				}
				serverSeq[c.ID()] = seq
				mu.Unlock()
			}
			_ = c.SendMessage(m.Type, m.Data)
		},
		OnClosed: func(ev sipws.CloseEvent) {
			closedEvs.Add(1)
			if ev.Cause == sipws.CauseProtocolError {
				n, _ := reasons.LoadOrStore(ev.Reason, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
			if _, dup := closedBy.LoadOrStore(ev.ID, ev.Cause); dup {
				mu.Lock()
				serverBad = append(serverBad, fmt.Sprintf("conn %d: second OnClosed", ev.ID))
				mu.Unlock()
			}
		},
	}
	srv, err := sipws.New(cfg)
	require.NoError(t, err)
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = hs.Serve(ln) }()
	addr := ln.Addr().String()

	ctx, stop := context.WithTimeout(context.Background(), dur)
	defer stop()

	// Healthy connections, each sending a message every gap on average, so
	// that all of them together stay near 8,000 messages a second: a load
	// two cores carry with the clients in the same process.
	gap := max(25*time.Millisecond, time.Duration(healthy)*125*time.Microsecond)
	type result struct {
		sent, echoed int
		err          error
	}
	results := make([]result, healthy)
	var hwg sync.WaitGroup
	for i := range healthy {
		hwg.Go(func() { results[i].sent, results[i].echoed, results[i].err = soakHealthy(ctx, addr, i, gap) })
		if i%50 == 49 {
			time.Sleep(5 * time.Millisecond) // spread the handshakes
		}
	}

	// Faults, until the end.
	var faults [4]atomic.Int64 // clean, reset, non-reader, garbage
	var fwg sync.WaitGroup
	for kind := range 4 {
		for range 3 {
			fwg.Go(func() {
				for ctx.Err() == nil {
					if soakFault(ctx, addr, kind) == nil {
						faults[kind].Add(1)
					}
				}
			})
		}
	}
	fwg.Wait()
	hwg.Wait()

	var sent, echoed int
	for i, r := range results {
		if r.err != nil {
			why := map[string]int{}
			closedBy.Range(func(_, v any) bool { why[v.(sipws.CloseCause).String()]++; return true })
			reasons.Range(func(k, v any) bool { t.Logf("reason %q: %d", k, v.(*atomic.Int64).Load()); return true })
			t.Logf("ends so far by initiator: %v; stats %+v", why, srv.Stats())
		}
		require.NoError(t, r.err, "healthy connection %d", i)
		require.Equal(t, r.sent, r.echoed, "healthy connection %d: echoes", i)
		sent += r.sent
		echoed += r.echoed
	}
	mu.Lock()
	require.Empty(t, serverBad, "order or exactly-once at the server")
	mu.Unlock()

	// Everything ends: the registry empties and the counters agree.
	require.Eventually(t, func() bool { return srv.Registry().Len() == 0 && closedEvs.Load() == opened.Load() },
		30*time.Second, 10*time.Millisecond, "registry %d, closed %d of %d", srv.Registry().Len(), closedEvs.Load(), opened.Load())
	st := srv.Stats()
	assert.Zero(t, st.CurrentConnections)
	assert.Equal(t, uint64(opened.Load()), st.SuccessfulHandshakes)
	assert.Equal(t, st.SuccessfulHandshakes, st.LocalClosedConnections+st.RemoteClosedConnections)
	slow := 0
	closedBy.Range(func(_, v any) bool {
		if v.(sipws.CloseCause) == sipws.CauseSlowConsumer {
			slow++
		}
		return true
	})

	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, hs.Shutdown(sctx))
	require.NoError(t, srv.Shutdown(sctx))

	// Goroutines and heap return to their baseline.
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= baseG+2 }, 10*time.Second, 10*time.Millisecond,
		"goroutines: %d, baseline %d", runtime.NumGoroutine(), baseG)
	var endMem runtime.MemStats
	runtime.GC()
	runtime.GC() // and the sync.Pools' victim caches
	runtime.ReadMemStats(&endMem)
	assert.Less(t, endMem.HeapAlloc, baseMem.HeapAlloc+16<<20, "live heap back near its baseline")
	if p := os.Getenv("SIPWS_SOAK_HEAPPROFILE"); p != "" {
		f, err := os.Create(p)
		require.NoError(t, err)
		require.NoError(t, pprof.WriteHeapProfile(f))
		require.NoError(t, f.Close())
	}
	t.Logf("heap: %d bytes live at the start, %d at the end", baseMem.HeapAlloc, endMem.HeapAlloc)

	t.Logf("soak %v: %d healthy connections, %d messages sent and echoed (%d lost); faults: %d clean closes, %d resets, %d non-readers (%d closed as slow consumers), %d garbage senders; %d connections in all",
		dur, healthy, sent, sent-echoed, faults[0].Load(), faults[1].Load(), faults[2].Load(), slow, faults[3].Load(), opened.Load())
}

// soakSeq reads the sequence number of a healthy client's message: "seq N ...".
func soakSeq(b []byte) (int, bool) {
	s, ok := strings.CutPrefix(string(b[:min(len(b), 24)]), "seq ")
	if !ok {
		return 0, false
	}
	f, _, _ := strings.Cut(s, " ")
	n, err := strconv.Atoi(f)
	return n, err == nil
}

// soakDial opens a WebSocket connection and returns it after the 101.
func soakDial(ctx context.Context, addr string) (net.Conn, *bufio.Reader, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, handshakeRequest(addr, "sip")); err != nil {
		conn.Close()
		return nil, nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, nil, fmt.Errorf("handshake: %s", resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br, nil
}

func soakRand(n int) int {
	v, _ := rand.Int(rand.Reader, big.NewInt(int64(n)))
	return int(v.Int64())
}

// soakHealthy sends sequence-numbered messages of random sizes until ctx
// ends, answers pings, checks every echo is the next one, then closes
// cleanly. It returns how many were sent and echoed in order.
func soakHealthy(ctx context.Context, addr string, i int, gap time.Duration) (sent, echoed int, err error) {
	conn, br, err := soakDial(ctx, addr)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	var wmu sync.Mutex
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err := conn.Write(b)
		return err
	}
	var echoedN atomic.Int64
	readErr := make(chan error, 1)
	echoes := make(chan struct{}, 1)
	go func() {
		next := 1
		for {
			_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
			op, p, err := soakReadFrame(br)
			if err != nil {
				readErr <- err
				return
			}
			switch op {
			case 0x9:
				if err := write(encodeFrame(true, 0, 0xA, p, true)); err != nil {
					readErr <- err
					return
				}
			case 0x8:
				readErr <- nil
				return
			case 0x1, 0x2:
				seq, ok := soakSeq(p)
				if !ok || seq != next {
					readErr <- fmt.Errorf("client %d: echo %q, want seq %d", i, p[:min(len(p), 24)], next)
					return
				}
				next++
				echoedN.Store(int64(seq))
				select {
				case echoes <- struct{}{}:
				default:
				}
			}
		}
	}()
	for ctx.Err() == nil {
		sent++
		msg := fmt.Sprintf("seq %d c%d ", sent, i)
		msg += strings.Repeat("x", soakRand(1500))
		op := byte(0x1)
		if sent%7 == 0 {
			op = 0x2
		}
		var frames []byte
		if sent%11 == 0 && len(msg) > 20 { // fragmented, with a ping in between
			frames = append(encodeFrame(false, 0, op, []byte(msg[:10]), true), encodeFrame(true, 0, 0x9, []byte("p"), true)...)
			frames = append(frames, encodeFrame(true, 0, 0x0, []byte(msg[10:]), true)...)
		} else {
			frames = encodeFrame(true, 0, op, []byte(msg), true)
		}
		if err := write(frames); err != nil {
			return sent, int(echoedN.Load()), err
		}
		time.Sleep(gap/5 + time.Duration(soakRand(int(gap*8/5))))
	}
	// Wait for the last echo, then close cleanly.
	deadline := time.After(20 * time.Second)
	for echoed = int(echoedN.Load()); echoed < sent; echoed = int(echoedN.Load()) {
		select {
		case err := <-readErr:
			return sent, int(echoedN.Load()), fmt.Errorf("client %d before the last echo (%d of %d): %v", i, echoedN.Load(), sent, err)
		case <-echoes:
		case <-deadline:
			return sent, echoed, fmt.Errorf("client %d: %d of %d echoes", i, echoed, sent)
		}
	}
	var cp [2]byte
	binary.BigEndian.PutUint16(cp[:], 1000)
	if err := write(encodeFrame(true, 0, 0x8, cp[:], true)); err != nil {
		return sent, echoed, err
	}
	select {
	case err := <-readErr:
		return sent, echoed, err
	case <-time.After(10 * time.Second):
		return sent, echoed, fmt.Errorf("client %d: no close reply", i)
	}
}

// soakFault runs one faulty client of the given kind: 0 closes cleanly after
// a few messages, 1 resets the connection in the middle of a frame, 2 sends
// large messages and never reads its echoes (a slow consumer), 3 sends
// garbage.
func soakFault(ctx context.Context, addr string, kind int) error {
	conn, br, err := soakDial(ctx, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	switch kind {
	case 0:
		for range 3 {
			if _, err := conn.Write(encodeFrame(true, 0, 0x1, []byte("hello"), true)); err != nil {
				return err
			}
		}
		var cp [2]byte
		binary.BigEndian.PutUint16(cp[:], 1000)
		if _, err := conn.Write(encodeFrame(true, 0, 0x8, cp[:], true)); err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, br)
	case 1:
		f := encodeFrame(true, 0, 0x1, []byte(strings.Repeat("y", 1000)), true)
		_, _ = conn.Write(f[:len(f)/2])
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	case 2:
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4096)
		}
		big := encodeFrame(true, 0, 0x2, make([]byte, 60<<10), true)
		for i := 0; i < 2000 && ctx.Err() == nil; i++ {
			if _, err := conn.Write(big); err != nil {
				return nil // closed by the server: the point
			}
		}
	case 3:
		junk := make([]byte, 1+soakRand(300))
		_, _ = rand.Read(junk)
		_, _ = conn.Write(junk)
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, _ = io.Copy(io.Discard, br)
	}
	return nil
}

// soakReadFrame reads one server frame.
func soakReadFrame(br *bufio.Reader) (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var x [2]byte
		if _, err := io.ReadFull(br, x[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(x[:]))
	case 127:
		var x [8]byte
		if _, err := io.ReadFull(br, x[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(x[:])
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	p := make([]byte, n)
	_, err := io.ReadFull(br, p)
	return h[0] & 0x0f, p, err
}
